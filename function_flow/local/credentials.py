"""Credentials that let Google's client libraries start with no cloud account.

A remote function written for Function Flow calls `google.auth.default()`
before it publishes its answer. Under `function-flow dev` every client
talks to an emulator, which ignores credentials, but google.auth still
wants some: when the machine has none (no GOOGLE_APPLICATION_CREDENTIALS,
no `gcloud auth application-default login`), the functions get a file of
placeholder user credentials. Nothing can use them against Google: the
refresh token is not one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator

PLACEHOLDER = {"type": "authorized_user", "client_id": "function-flow-dev",
               "client_secret": "function-flow-dev",
               "refresh_token": "function-flow-dev-placeholder"}


def has_default_credentials(env: dict[str, str] | None = None) -> bool:
    """Whether google.auth.default() would find credentials on this machine."""
    env = dict(os.environ) if env is None else env
    if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True
    config = env.get("CLOUDSDK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config",
                                                        "gcloud")
    return os.path.exists(os.path.join(config, "application_default_credentials.json"))


def offline_credentials_env(directory: str) -> dict[str, str]:
    """GOOGLE_APPLICATION_CREDENTIALS for the placeholder file, when none exist."""
    if has_default_credentials():
        return {}
    path = os.path.join(directory, "placeholder_credentials.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(PLACEHOLDER, handle)
    return {"GOOGLE_APPLICATION_CREDENTIALS": path}


@contextlib.contextmanager
def placeholder_credentials() -> Iterator[None]:
    """The placeholder file as GOOGLE_APPLICATION_CREDENTIALS for a while, when
    the machine has no credentials: `dev` imports the workflow file with it,
    as its functions do (a client built at module level wants some). Only
    for the import: this process's own clients must not use it."""
    with tempfile.TemporaryDirectory(prefix="function-flow-dev-") as directory:
        told = offline_credentials_env(directory)
        os.environ.update(told)
        try:
            yield
        finally:
            for name in told:
                os.environ.pop(name, None)
