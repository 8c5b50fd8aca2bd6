"""The HMAC key of `function-flow dev`: made once, kept beside the database.

Deployed, the key comes from Secret Manager through the functions'
environment (signing.py). Locally, `function-flow dev` needs one shared by
every process it starts, and the user needs the same one to sign an
approval or to run `function-flow approve` against the emulators
(`export FUNCTION_FLOW_HMAC_KEY=$(cat .function_flow/hmac.key)`). So the
first `dev` writes 32 random bytes as hex to `hmac.key` in the directory of
FUNCTION_FLOW_DB (`.function_flow/`), readable by its owner only (0600),
and every later one reads it. FUNCTION_FLOW_HMAC_KEY, when set, wins.
"""

from __future__ import annotations

import os
import secrets

from function_flow import signing
from function_flow.config import Settings
from function_flow.errors import ConfigurationError

KEY_FILE = "hmac.key"


def key_path(settings: Settings) -> str:
    """`hmac.key` beside the embedded database (`.function_flow/hmac.key`)."""
    return os.path.join(os.path.dirname(settings.db_path) or ".", KEY_FILE)


def dev_key(settings: Settings) -> tuple[str, str]:
    """(key, where it came from): FUNCTION_FLOW_HMAC_KEY, else the key file (made if missing)."""
    if settings.hmac_key:
        signing.check_key(settings.hmac_key)
        return settings.hmac_key, signing.KEY_VARIABLE
    path = key_path(settings)
    try:
        return _create(path), path
    except FileExistsError:
        pass
    try:
        with open(path, encoding="utf-8") as handle:
            key = handle.read().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the HMAC key file {path}: "
                                 f"{exc.strerror or exc}; delete it to make a new one, or "
                                 f"set {signing.KEY_VARIABLE}") from None
    signing.check_key(key, f"the HMAC key file {path}")
    return key, path


def _create(path: str) -> str:
    """Write a new key to `path`, mode 0600 from the start; FileExistsError if it exists."""
    key = secrets.token_hex(32)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise
    except OSError as exc:
        raise ConfigurationError(f"cannot create the HMAC key file {path}: "
                                 f"{exc.strerror or exc}; set {signing.KEY_VARIABLE} "
                                 "instead") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key
