"""The functions-framework processes of one `function-flow dev` stack, in the order that matters.

framework.py starts, waits for and stops one server; this module knows
which servers a dev stack runs and in what order. callback starts first,
because every other function is told its URL (FUNCTION_FLOW_CALLBACK_URL)
in its environment and sends asynchronous answers there. Then come the
deployed entry points, serving the generated ENTRY_MODULE (entry.py) so
that any workflow file and any of its jobs work, and the file's remote
functions (remotes.py), each served from the file itself. When callback's
first port was taken and it moved, the others are started again: a running
process's environment cannot be changed, and they would send every answer
to a dead port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from function_flow.local import framework
from function_flow.local.credentials import offline_credentials_env
from function_flow.local.dev_log import DevLog
from function_flow.local.entry import ENTRY_MODULE
from function_flow.local.framework import FunctionProcess

#: The entry points, as deployed. callback comes first: the others are told
#: its URL (FUNCTION_FLOW_CALLBACK_URL), where asynchronous answers arrive.
FUNCTIONS = ("callback", "start", "scheduler", "external_event_listener", "poller",
             "control")
#: How long a stopping function may finish a running task before SIGKILL.
FUNCTION_GRACE_SECONDS = 3.0


class DevFunctions:
    """One process per entry point and per remote function, by name in `functions`.

    source/job_name: the workflow file and job the entry points serve.
    signature_type: how scheduler and external_event_listener receive pushes
    (the others are HTTP functions). remote_functions: {topic: function of
    `source`}. function_timeout: the local platform's request timeout.
    Every process writes to `log`, tagged with its name.
    """

    def __init__(self, source: str, job_name: str | None, signature_type: str,
                 remote_functions: dict[str, str], function_timeout: int,
                 startup_timeout: float, log: DevLog) -> None:
        self.source = source
        self.job_name = job_name
        self.signature_type = signature_type
        self.remote_functions = remote_functions
        self.function_timeout = function_timeout
        self.startup_timeout = startup_timeout
        self.log = log
        self.functions: dict[str, FunctionProcess] = {}
        self._env: dict[str, str] = {}
        self._workdir: str | None = None  # the entry module and offline credentials
        self._entry = ""  # the generated module the functions serve (entry.py)
        self._told_callback_url = ""  # what the other functions were told

    def start(self, env: dict[str, str]) -> None:
        """Start every function with `env` (backend, emulator hosts) and wait until
        each answers; on failure, those started are in `functions` for `stop()`."""
        self._env = dict(env)
        self._workdir = tempfile.mkdtemp(prefix="function-flow-dev-")
        self._entry = os.path.join(self._workdir, "function_flow_dev_entry.py")
        with open(self._entry, "w", encoding="utf-8") as handle:
            handle.write(ENTRY_MODULE)
        self.log.event(f"function timeout {self.function_timeout} s (a request running "
                       "longer is interrupted; an overrun task's retry waits that long)")
        self._start_entry_points(FUNCTIONS[:1], {})
        self._start_callers()
        self._wait_until_answering(list(self.functions.values()))
        if self.functions["callback"].url != self._told_callback_url:
            self._restart_callers()

    def stop(self, timeout: float) -> None:
        """Stop every function by process group (a running task gets at most
        FUNCTION_GRACE_SECONDS) and remove the generated files; idempotent."""
        functions = list(self.functions.values())
        self.functions = {}
        with contextlib.suppress(Exception):
            framework.stop_functions(functions, min(timeout, FUNCTION_GRACE_SECONDS))
            if functions:
                self.log.write("dev", "stopped " + ", ".join(f"{f.name} (pid {f.pid})"
                                                             for f in functions))
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _start_entry_points(self, names: tuple[str, ...], env: dict[str, str]) -> None:
        env = dict(self._env, FUNCTION_FLOW_DEV_SOURCE=self.source,
                   FUNCTION_FLOW_DEV_JOB=self.job_name or "", **env)
        for name in names:
            signature = self.signature_type \
                if name in ("scheduler", "external_event_listener") else "http"
            function = framework.start_function(
                self._entry, name, signature, dict(env, FUNCTION_FLOW_DEV_TARGET=name),
                function_timeout=self.function_timeout,
                on_line=lambda line, name=name: self.log.write(name, line))
            self.functions[name] = function
            self.log.event(f"{name} ({signature} function) on {function.url} "
                           f"(pid {function.pid})")

    def _start_callers(self) -> None:
        """Every function but callback, told its current URL (FUNCTION_FLOW_CALLBACK_URL)."""
        self._told_callback_url = self.functions["callback"].url
        told = {"FUNCTION_FLOW_CALLBACK_URL": self._told_callback_url}
        self._start_entry_points(FUNCTIONS[1:], told)
        assert self._workdir is not None
        remote_env = dict(self._env, **told, **offline_credentials_env(self._workdir))
        # A state machine's remote functions are in the Python file beside it.
        remote_source = self.source if not self.source.endswith(".json") \
            else os.path.splitext(self.source)[0] + ".py"
        for topic, name in self.remote_functions.items():
            function = framework.start_function(
                remote_source, name, "event", remote_env, function_timeout=self.function_timeout,
                on_line=lambda line, name=name: self.log.write(name, line))
            self.functions[name] = function
            self.log.event(f"{name} (remote function for {topic}) on {function.url} "
                           f"(pid {function.pid})")

    def _wait_until_answering(self, functions: list[FunctionProcess]) -> None:
        """Wait until they answer, then log those that moved (their first port
        was taken: framework.restarted_if_port_taken)."""
        framework.wait_until_answering(
            functions, self.startup_timeout,
            lambda f: f"last lines of {self.log.path}:\n{self.log.tail(15)}")
        for function in functions:
            if function.restarts:
                self.log.event(f"{function.name} moved to {function.url} "
                               f"(pid {function.pid})")

    def _restart_callers(self) -> None:
        """The others were told callback's first URL; it answers elsewhere now,
        so they would send every asynchronous answer to a dead port."""
        def callers() -> list[FunctionProcess]:
            return [f for name, f in self.functions.items() if name != "callback"]
        stopped = callers()
        framework.stop_functions(stopped, grace=0.5)  # idle: nothing pushes to them yet
        self.log.event("stopped " + ", ".join(f"{f.name} (pid {f.pid})" for f in stopped)
                       + " to tell them callback's new URL")
        self._start_callers()
        self._wait_until_answering(callers())
