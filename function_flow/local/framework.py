"""One functions-framework server per entry point, as Cloud Functions runs them.

Deployed, each entry point (start, scheduler, ...) is its own function: a
`functions-framework --source=FILE --target=NAME --signature-type=TYPE`
server. Locally it is the same command line (run through serve.py, which
fixes keep-alive under a request timeout) on a free port of 127.0.0.1, in
its own process group (processes.py), so `function-flow dev` and the tests
run the code as the platform would: same HTTP framework, same request
decoding, same gunicorn worker model.

What the platform adds around the server is its request timeout. Here it
is played by functions-framework itself (see `platform_timeout_env`): its
gunicorn raises RequestTimeoutException inside a request that runs longer
than CLOUD_RUN_TIMEOUT_SECONDS, and FUNCTION_FLOW_FUNCTION_TIMEOUT tells
the engine the same number, so that the retry of an overrunning attempt
waits that long instead of Cloud Functions' default 540 s.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import IO, Any, Callable, Iterable

from function_flow.config import positive_number
from function_flow.errors import ConfigurationError
from function_flow.local import processes
from function_flow.local.processes import Child, DevError

#: The "platform" request timeout of local functions: long enough for a
#: local task, short enough that a timed-out task's retry comes quickly.
LOCAL_FUNCTION_TIMEOUT_SECONDS = 30
#: gunicorn threads per worker. Must be > 1: functions-framework only stops
#: overrunning requests with its threaded worker, and a sync worker closes
#: every connection, which stalls the Pub/Sub emulator's push client.
DEFAULT_THREADS = 8
#: What a server says when its port is taken: gunicorn, then Python's socket.
PORT_TAKEN = ("Connection in use: ('127.0.0.1',", "Address already in use")
#: How many times a function starts again on a fresh port.
MAX_RESTARTS = 3


def platform_timeout_env(seconds: int) -> dict[str, str]:
    """Environment that makes a local function behave as if deployed with `seconds`.

    CLOUD_RUN_TIMEOUT_SECONDS with THREADED_TIMEOUT_ENABLED=true makes
    functions-framework's gunicorn raise RequestTimeoutException in a
    request's thread `seconds` after it began (functions_framework/_http/
    gunicorn.py); FUNCTION_FLOW_FUNCTION_TIMEOUT makes the engine wait that
    long before retrying an attempt that overran its task timeout.

    The exception is delivered only while the thread runs Python code: a
    body blocked in a C call (time.sleep, a socket read) gets it when the
    call returns, and a body that catches Exception can swallow it. So the
    retry of such a body can start while it still runs; see the README.
    """
    seconds = int(seconds)
    if seconds < 1:
        raise ValueError(f"the function timeout must be at least 1 s, got {seconds}")
    return {"FUNCTION_FLOW_FUNCTION_TIMEOUT": str(seconds),
            "CLOUD_RUN_TIMEOUT_SECONDS": str(seconds),
            "THREADED_TIMEOUT_ENABLED": "true"}


def local_function_timeout(env: dict[str, str] | None = None) -> int:
    """FUNCTION_FLOW_FUNCTION_TIMEOUT if the caller set it (by Settings' rule), else 30 s.

    Whole seconds (functions-framework's CLOUD_RUN_TIMEOUT_SECONDS takes no
    fraction), rounded up, so no function is stopped before the time set.
    """
    name = "FUNCTION_FLOW_FUNCTION_TIMEOUT"
    env = os.environ if env is None else env
    try:
        seconds = positive_number(env, name, float(LOCAL_FUNCTION_TIMEOUT_SECONDS), float)
    except ConfigurationError as exc:
        raise DevError(str(exc)) from None
    return math.ceil(seconds)


def functions_framework_command() -> list[str]:
    """How to run functions-framework: its own CLI, through serve.py's keep-alive fix."""
    if importlib.util.find_spec("functions_framework") is None:
        raise DevError("functions-framework is not installed; "
                       "pip install functions-framework")
    return [sys.executable, "-m", "function_flow.local.serve"]


class FunctionProcess:
    """One running functions-framework server: POST to `url`."""

    def __init__(self, target: str, signature_type: str, port: int, child: Child,
                 log_path: str | None = None,
                 respawn: Callable[[int], Child] | None = None,
                 lines: collections.deque[str] | None = None) -> None:
        self.target = target
        self.signature_type = signature_type
        self.port = port
        self.child = child
        #: Its own log file, when it writes one (see start_function).
        self.log_path = log_path
        #: Starts the same server on another port (see restarted_if_port_taken).
        self._respawn = respawn
        self._log_start = 0  # where this child's part of log_path begins
        #: Its last lines, when they go to an on_line callback.
        self._lines: collections.deque[str] = collections.deque() if lines is None else lines
        self.restarts = 0

    def port_taken(self) -> bool:
        """Whether its server said the port was bound meanwhile by another process
        (free_port found it free, then someone else took it before the child bound it)."""
        text = "".join(self._lines) if self.log_path is None else self.log()[self._log_start:]
        return any(sign in text for sign in PORT_TAKEN)

    def restarted_if_port_taken(self) -> bool:
        """Start it again on a fresh port if its port was taken (at most MAX_RESTARTS)."""
        if self._respawn is None or self.restarts >= MAX_RESTARTS or not self.port_taken():
            return False
        stop_functions([self], grace=0.5)
        self.restarts += 1
        self._lines.clear()
        self._log_start = len(self.log())
        self.port = processes.free_port()
        self.child = self._respawn(self.port)
        return True

    @property
    def name(self) -> str:
        return self.target

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def process(self) -> Any:
        return self.child.process

    @property
    def pid(self) -> int:
        return self.child.pid

    def answers(self) -> bool:
        """Whether its HTTP server is up and the function loaded. Any HTTP answer counts.

        /robots.txt is answered by functions-framework itself (404, or 405
        for event functions), so the check never runs the function: a GET
        on `start` would start a run.
        """
        try:
            with urllib.request.urlopen(self.url + "robots.txt", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        """Everything it wrote so far (only when it has its own log file)."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except OSError:
            return ""

    def json_logs(self) -> list[dict[str, Any]]:
        """The JSON lines function_flow logged (cloud/functions.py logs like Cloud Logging)."""
        return json_lines(self.log().splitlines())

    def stop(self, grace: float = 3.0) -> None:
        stop_functions([self], grace)


def json_lines(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The lines of a log that are JSON objects, parsed."""
    entries = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                pass
    return entries


def start_function(source: str | os.PathLike, target: str, signature_type: str,
                   env: dict[str, str], *, workers: int = 1, threads: int = DEFAULT_THREADS,
                   function_timeout: int | None = LOCAL_FUNCTION_TIMEOUT_SECONDS,
                   log: IO | None = None, log_path: str | None = None,
                   on_line: Callable[[str], None] | None = None) -> FunctionProcess:
    """Start `functions-framework` for `target` of `source` on a free port; no wait.

    env: added to this process's environment (backend, emulator hosts...).
    workers: gunicorn worker processes, each a separate Python process with
    its own clients, like separate function instances.
    function_timeout: the local platform's request timeout (see
    platform_timeout_env); None leaves requests unbounded.
    Output: to `log_path` (a file it creates and writes directly), an open
    `log`, or `on_line` (one call per line, from a pump thread).
    Call wait_until_answering before sending requests.
    """
    full_env = dict(os.environ, **env, WORKERS=str(workers), THREADS=str(threads),
                    PYTHONUNBUFFERED="1")
    if function_timeout is not None:
        full_env.update(platform_timeout_env(function_timeout))
    lines: collections.deque[str] = collections.deque(maxlen=50)

    def spawn(port: int) -> Child:
        command = [*functions_framework_command(), f"--source={source}",
                   f"--target={target}", f"--signature-type={signature_type}",
                   "--host=127.0.0.1", f"--port={port}"]
        if log_path is not None:
            with open(log_path, "a", encoding="utf-8") as own_log:
                return processes.spawn(command, full_env, log=own_log, name=target)
        if on_line is None:
            return processes.spawn(command, full_env, log=log, name=target)

        def line(text: str) -> None:
            lines.append(text)
            on_line(text)
        return processes.spawn(command, full_env, on_line=line, name=target)

    port = processes.free_port()
    # With an open `log` (or none) this process cannot read what the server
    # said, so it cannot tell a taken port: no restart then.
    readable = log_path is not None or on_line is not None
    return FunctionProcess(target, signature_type, port, spawn(port), log_path,
                           spawn if readable else None, lines)


def wait_until_answering(functions: Iterable[FunctionProcess], timeout: float = 90.0,
                         describe: Callable[[FunctionProcess], str] = lambda f: f.log()[-3000:]
                         ) -> None:
    """Wait until every function answers HTTP; DevError if one exits or is too slow.

    A function whose port another process took before it could bind it
    starts again on a fresh port (its `url` changes).

    describe(function) says what to show of a failed function (its log).
    """
    deadline = time.monotonic() + timeout
    waiting = list(functions)
    while waiting:
        for function in list(waiting):
            if function.restarted_if_port_taken():
                continue
            if function.child.exited():
                time.sleep(0.2)  # let its last lines reach the log
                raise DevError(f"the {function.target} function exited with code "
                               f"{function.process.returncode} before answering:\n"
                               f"{describe(function)}")
            if function.answers():
                waiting.remove(function)
        if waiting and time.monotonic() > deadline:
            raise DevError(f"{', '.join(f.target for f in waiting)} did not answer "
                           f"within {timeout:.0f} s:\n{describe(waiting[0])}")
        if waiting:
            time.sleep(0.2)


def stop_functions(functions: Iterable[FunctionProcess], grace: float = 3.0) -> None:
    """Stop servers by process group: SIGINT (gunicorn's quick shutdown), then SIGKILL.

    gunicorn's graceful SIGTERM waits up to 30 s for idle keep-alive
    connections of the emulator's push client, and even its quick shutdown
    waits for running task bodies: after `grace` they are killed, as Cloud
    Functions does to an instance it scales down.
    """
    processes.stop_children([f.child for f in functions], grace, first=signal.SIGINT)
