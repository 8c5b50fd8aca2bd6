"""Start and stop the Firestore and Pub/Sub emulators of the Google Cloud CLI,
and gcp-storage-emulator for Cloud Storage.

Used by the test suite (tests/conftest.py) and by `function-flow dev`, which
runs the deployed topology locally. Each emulator runs in its own process
group on a free port of 127.0.0.1 (processes.py); `Emulator.stop()` ends
that group by its id, so the Java process that `gcloud` spawns never
outlives us.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Callable

from function_flow.config import DEFAULT_PROJECT
from function_flow.local import processes
from function_flow.local.processes import free_port

__all__ = ["Emulator", "EmulatorError", "DEFAULT_PROJECT", "free_port", "start",
           "check_requirements", "missing_requirements", "reset_firestore"]

#: Emulator name -> (gcloud arguments, directory under the SDK's platform/).
_EMULATORS = {
    "firestore": (["emulators", "firestore", "start"], "cloud-firestore-emulator"),
    "pubsub": (["beta", "emulators", "pubsub", "start"], "pubsub-emulator"),
}

#: What an emulator's log says when its port is taken, and how many ports it tries:
#: the first, then up to 3 fresh ones, as a function gets (framework.MAX_RESTARTS).
PORT_TAKEN = "Address already in use"
PORT_TRIES = 4

_INSTALL_HINT = ("install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), "
                 "then `gcloud components install beta cloud-firestore-emulator "
                 "pubsub-emulator` (or the apt packages google-cloud-cli-firestore-emulator "
                 "and google-cloud-cli-pubsub-emulator), and Java 11 or newer")


class EmulatorError(RuntimeError):
    """An emulator is not installed, did not start or did not answer."""


@dataclasses.dataclass
class Emulator:
    """A running emulator: `host` is "127.0.0.1:PORT"."""

    name: str
    host: str
    project: str
    process: subprocess.Popen
    log_path: str

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point Google Cloud clients at this emulator."""
        if self.name == "storage":  # google-cloud-storage wants a URL
            return {"STORAGE_EMULATOR_HOST": f"http://{self.host}"}
        variable = "FIRESTORE_EMULATOR_HOST" if self.name == "firestore" \
            else "PUBSUB_EMULATOR_HOST"
        return {variable: self.host}

    @classmethod
    def running_at(cls, name: str, host: str, project: str) -> "Emulator":
        """One started by someone else (not stopped by `stop()`'s owner)."""
        return cls(name, host, project, None, "")  # type: ignore[arg-type]

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """End the emulator's process group (gcloud and its Java child); idempotent."""
        processes.stop_groups([self.process], timeout)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


def missing_requirements(names: tuple[str, ...] = ("firestore", "pubsub")) -> list[str]:
    """What is missing to run the named emulators (empty when all is there)."""
    missing = []
    if "storage" in names and _storage_command() is None:
        missing.append("gcp-storage-emulator (pip install gcp-storage-emulator)")
    names = tuple(n for n in names if n != "storage")
    if not names:
        return missing
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        missing.append("the `gcloud` command (Google Cloud CLI)")
    else:
        platform = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(gcloud))),
                                "platform")
        # Only judge components when the SDK layout is the usual one.
        if os.path.isdir(platform):
            for name in names:
                directory = _EMULATORS[name][1]
                if not os.path.isdir(os.path.join(platform, directory)):
                    missing.append(f"the gcloud component {directory}")
    if shutil.which("java") is None:
        missing.append("Java (the emulators run on a JVM, version 11 or newer)")
    return missing


def check_requirements(names: tuple[str, ...] = ("firestore", "pubsub")) -> None:
    """Raise EmulatorError naming everything missing and how to install it."""
    missing = missing_requirements(names)
    if missing:
        raise EmulatorError(f"cannot run the {' and '.join(names)} emulator(s): missing "
                            f"{', '.join(missing)}; {_INSTALL_HINT}")


def start(name: str, project: str = DEFAULT_PROJECT, port: int | None = None,
          timeout: float = 90.0) -> Emulator:
    """Start emulator `name` ("firestore", "pubsub" or "storage") and wait until it answers.

    On a free port, or `port`; a free port that another process binds before
    the emulator does is replaced by a fresh one (PORT_TRIES in all).
    """
    if name not in _EMULATORS and name != "storage":
        raise ValueError(f"unknown emulator {name!r}; use one of "
                         f"{sorted([*_EMULATORS, 'storage'])}")
    check_requirements((name,))
    for tries in range(1, PORT_TRIES + 1):
        emulator = _spawn(name, project, port or free_port())
        try:
            _wait_until_ready(emulator, timeout)
        except _PortTaken as exc:
            # free_port found the port free; another process bound it before
            # the emulator could. Again on a fresh one, unless the caller chose it.
            tail = emulator.log_tail()
            emulator.stop()
            if port is not None or tries == PORT_TRIES:
                raise EmulatorError(f"{exc}\n{tail}") from None
            continue
        except EmulatorError as exc:
            tail = emulator.log_tail()
            emulator.stop()
            raise EmulatorError(f"{exc}\n{tail}") from None
        except BaseException:
            emulator.stop()
            raise
        return emulator
    raise AssertionError("unreachable")


def start_together(names: list[str], project: str,
                   started: Callable[[str, Emulator], None]) -> None:
    """Start the `names` emulators at once (each takes seconds) and wait for all.

    started(name, emulator) is called for every one that came up, also when
    another failed or Ctrl-C came, so that the caller owns (and will stop)
    whatever runs; the failure is raised after.
    """
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(start, name, project) for name in names}
        try:
            for future in futures.values():
                future.result()
        finally:
            for name, future in futures.items():
                with contextlib.suppress(BaseException):
                    started(name, future.result())


def _spawn(name: str, project: str, port: int) -> Emulator:
    host = f"127.0.0.1:{port}"
    if name == "storage":
        args = [str(_storage_command()), "start", "--host=127.0.0.1", f"--port={port}",
                "--in-memory", "--quiet"]
    else:
        args = ["gcloud", *_EMULATORS[name][0], f"--host-port={host}", "--quiet"]
    if name == "pubsub":
        args.append(f"--project={project}")
    log = tempfile.NamedTemporaryFile(prefix=f"function-flow-{name}-emulator-",
                                      suffix=".log", delete=False)
    with log:
        process = processes.spawn(args, dict(os.environ), log=log, name=name).process
    return Emulator(name, host, project, process, log.name)


def _storage_command() -> str | None:
    """The gcp-storage-emulator script installed beside this Python, or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    return beside if os.access(beside, os.X_OK) else shutil.which("gcp-storage-emulator")


def start_storage_emulator(project: str = DEFAULT_PROJECT, port: int | None = None) -> Emulator:
    """gcp-storage-emulator (in memory); point clients at it with `Emulator.env`."""
    return start("storage", project, port)


def given_storage(project: str) -> Emulator | None:
    """The storage emulator STORAGE_EMULATOR_HOST names, if set: `dev` uses it
    instead of its own, so that a GCSFuture finds the user's buckets there."""
    url = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if not url:
        return None
    emulator = Emulator.running_at("storage", url.split("://", 1)[-1].rstrip("/"), project)
    try:
        with urllib.request.urlopen(f"http://{emulator.host}/", timeout=5):
            pass
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise EmulatorError(
            f"STORAGE_EMULATOR_HOST={url} does not answer ({exc}): start "
            "gcp-storage-emulator there, or unset it and dev starts one of its own") from None
    return emulator


def create_bucket(emulator: Emulator, project: str, name: str) -> None:
    """Create bucket `name` on a storage emulator, unless it exists."""
    from google.api_core import exceptions as gexc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=project, credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": emulator.env[
                                "STORAGE_EMULATOR_HOST"]})
    with contextlib.suppress(gexc.Conflict):
        client.create_bucket(name)


class _PortTaken(EmulatorError):
    """The emulator could not bind its port: another process has it."""


def _wait_until_ready(emulator: Emulator, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{emulator.host}/"
    while True:
        if PORT_TAKEN in emulator.log_tail(200):  # Java and Python both say so
            raise _PortTaken(f"the {emulator.name} emulator could not bind "
                             f"{emulator.host}: another process has it; its log:")
        if emulator.process.poll() is not None:
            raise EmulatorError(f"the {emulator.name} emulator exited with code "
                                f"{emulator.process.returncode} before answering; its log:")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise EmulatorError(f"the {emulator.name} emulator did not answer on {url} "
                                f"within {timeout:.0f} s; its log:")
        time.sleep(0.25)


def start_firestore_emulator(project: str = DEFAULT_PROJECT, port: int | None = None) -> Emulator:
    """The Firestore emulator, answering on `Emulator.host`."""
    return start("firestore", project, port)


def start_pubsub_emulator(project: str = DEFAULT_PROJECT, port: int | None = None) -> Emulator:
    """The Pub/Sub emulator for `project`, answering on `Emulator.host`."""
    return start("pubsub", project, port)


def reset_firestore(host: str, project: str = DEFAULT_PROJECT,
                    database: str = "(default)") -> None:
    """Delete every document in a Firestore emulator database."""
    url = (f"http://{host}/emulator/v1/projects/{project}/databases/"
           f"{database}/documents")
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=30):
        pass


def main(argv: list[str] | None = None) -> int:
    """`python -m function_flow.local.emulators --check`: can the emulators run here?"""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args != ["--check"]:
        print("usage: python -m function_flow.local.emulators --check", file=sys.stderr)
        return 2
    try:
        check_requirements()
    except EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
