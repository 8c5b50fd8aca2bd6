"""The deployed topology on one machine, for `function-flow dev` and tests.

    Firestore emulator   Pub/Sub emulator
                           topic SCHEDULE ----------------- push --> scheduler
                           topic SCHEDULE_EXTERNAL_EVENTS - push --> external_event_listener
    HTTP POST ---------------------------------------------------> start
    every 2 s (Cloud Scheduler's part) --------------------------> poller

Each function is its own `functions-framework` process serving the workflow
file, exactly as Cloud Functions would, with FUNCTION_FLOW_BACKEND=gcp and
the emulator hosts in its environment. Messages take the real path: publish
-> Pub/Sub emulator -> push subscription -> functions-framework -> Firestore.

`LocalStack` owns every process it starts (emulators included), each in its
own process group, and `stop()` ends each group by its id (SIGTERM, then
SIGKILL after a timeout), so the Java emulators' children never outlive it.
The functions' output goes to one log file, each line tagged with the
function that wrote it; the log also names every PID started.

The functions serve a small generated module (see `entry_points`) instead of
the workflow file itself, so any workflow file works (it need not define the
entry points) and `--job NAME` picks one of several jobs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import IO, Any, Callable, Iterator

from function_flow.local import emulators
from function_flow.local.emulators import Emulator, EmulatorError

#: Project id of the local topology (any id works on the emulators).
DEV_PROJECT = "function-flow-dev"
#: How scheduler and external_event_listener receive pushes: a 1st gen
#: background function (event, context), a 2nd gen CloudEvent function, or
#: a plain HTTP endpoint reading the push envelope.
SIGNATURE_TYPES = ("event", "cloudevent", "http")
#: The four entry points, as deployed.
FUNCTIONS = ("start", "scheduler", "external_event_listener", "poller")
#: How often the poller runs: Cloud Scheduler's job, made fast for local use
#: (retry backoff and timers resolve to this period).
POLL_INTERVAL_SECONDS = 2.0
#: How long a stopping function may finish a running task before SIGKILL.
FUNCTION_GRACE_SECONDS = 3.0
#: Pub/Sub's maximum ack deadline: a task body may run this long in one push.
ACK_DEADLINE_SECONDS = 600

_ENTRY_MODULE = '''"""Entry points served by `function-flow dev` (generated; deleted when it stops)."""
from function_flow.local import stack

start, scheduler, external_event_listener, poller = stack.entry_points()
'''


class DevError(RuntimeError):
    """The local topology could not start (a process died or did not answer)."""


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C does, through every `finally`."""


# --------------------------------------------------------- child processes


def stop_groups(processes: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """End each process and its process group: SIGTERM, then SIGKILL after `timeout`.

    Every group gets SIGTERM at once, so they shut down in parallel. A
    group id is its leader's PID (started with start_new_session), so this
    never touches a process we did not start.
    """
    for process in processes:
        _killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
    while any(_group_alive(p.pid) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in processes:
        if _group_alive(process.pid):
            _killpg(process.pid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FunctionProcess:
    """One functions-framework process serving one entry point."""

    def __init__(self, name: str, signature_type: str, port: int,
                 process: subprocess.Popen) -> None:
        self.name = name
        self.signature_type = signature_type
        self.port = port
        self.process = process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        return self.process.pid

    def answers(self) -> bool:
        """Whether its HTTP server is up. Any HTTP answer counts.

        /robots.txt is answered by functions-framework itself (404 for HTTP
        functions, 405 for event functions), so the check never runs a
        function: a GET on `start` would start a run.
        """
        try:
            with urllib.request.urlopen(self.url + "robots.txt", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False


# ----------------------------------------------------------------- the stack


class LocalStack:
    """Emulators, topics, push subscriptions and one process per entry point.

        with LocalStack("samples/main.py", log_path="dev.log") as stack:
            run_id = stack.start_run({"region": "EMEA"})
            run = stack.store.get_run(run_id)

    firestore/pubsub: emulators already running (e.g. a test session's) to
    use instead of starting new ones; they are not stopped by `stop()`, and
    the push subscriptions made on them are deleted. collection_prefix and
    topic names (Pub/Sub ids: 3+ characters, starting with a letter) let
    several stacks share emulators.
    log_path: where the functions' output goes; by default a temporary
    file, kept after `stop()` so that it can still be read.
    on_event: called with each line the stack itself logs (startup steps).
    """

    def __init__(self, source: str, job_name: str | None = None, *,
                 schedule_topic: str = "SCHEDULE",
                 events_topic: str = "SCHEDULE_EXTERNAL_EVENTS",
                 project: str = DEV_PROJECT, signature_type: str = "event",
                 log_path: str | None = None, collection_prefix: str = "",
                 firestore: Emulator | None = None, pubsub: Emulator | None = None,
                 poll_interval: float | None = POLL_INTERVAL_SECONDS,
                 extra_env: dict[str, str] | None = None,
                 startup_timeout: float = 90.0,
                 on_event: Callable[[str], None] | None = None) -> None:
        if signature_type not in SIGNATURE_TYPES:
            raise ValueError(f"signature_type must be one of {SIGNATURE_TYPES}, "
                             f"got {signature_type!r}")
        self.source = os.path.abspath(source)
        self.job_name = job_name
        self.schedule_topic = schedule_topic
        self.events_topic = events_topic
        self.project = project
        self.signature_type = signature_type
        self.collection_prefix = collection_prefix
        self.poll_interval = poll_interval
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.on_event = on_event or (lambda line: None)
        self.firestore = firestore
        self.pubsub = pubsub
        self._own_emulators: list[Emulator] = []
        self.functions: dict[str, FunctionProcess] = {}
        self._workdir: str | None = None
        self._log_path = log_path
        self._log: IO[str] | None = None
        self._log_lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self._poller_stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._store: Any = None
        self._subscriptions: list[str] = []

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> "LocalStack":
        """Bring everything up and wait until every process answers.

        On any failure (or Ctrl-C) everything started so far is stopped.
        """
        try:
            self._open_log()
            self._start_emulators()
            self._create_topics()
            self._start_functions()
            self._wait_for_functions()
            self._create_push_subscriptions()
            if self.poll_interval:
                self._poller = threading.Thread(target=self._poll_forever,
                                                name="function-flow-dev-poller", daemon=True)
                self._poller.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process this stack started, by process group; idempotent."""
        self._poller_stop.set()
        if self._poller is not None:
            self._poller.join(timeout)
            self._poller = None
        if self.pubsub is not None and all(e is not self.pubsub for e in self._own_emulators):
            # Shared emulators outlive us: leave no subscription pushing to
            # a port that is about to close.
            while self._subscriptions:
                with contextlib.suppress(Exception):
                    self._pubsub_call("DELETE", f"subscriptions/{self._subscriptions.pop()}")
        functions = list(self.functions.values())
        self.functions = {}
        with contextlib.suppress(Exception):
            # On SIGTERM gunicorn waits for running task bodies (up to 30 s,
            # even on its "quick" SIGINT): allow a short grace, then SIGKILL,
            # as Cloud Functions does to an instance it scales down.
            stop_groups([f.process for f in functions], min(timeout, FUNCTION_GRACE_SECONDS))
            if functions:
                self._write("dev", "stopped " + ", ".join(f"{f.name} (pid {f.pid})"
                                                          for f in functions))
        for pump in self._pumps:
            pump.join(timeout)
        self._pumps.clear()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None
        owned, self._own_emulators = self._own_emulators, []
        with contextlib.suppress(Exception):
            stop_groups([e.process for e in owned], timeout)
        for emulator in owned:
            with contextlib.suppress(Exception):
                emulator.stop(timeout)  # already ended; removes its log file
                self._write("dev", f"stopped the {emulator.name} emulator "
                                   f"(pid {emulator.process.pid})")
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    # ------------------------------------------------------------- facts

    @property
    def log_path(self) -> str | None:
        return self._log_path

    @property
    def start_url(self) -> str:
        return self.functions["start"].url

    @property
    def poller_url(self) -> str:
        return self.functions["poller"].url

    @property
    def pids(self) -> list[int]:
        """PIDs (= process group ids) of every process this stack started."""
        return [e.process.pid for e in self._own_emulators] + \
            [f.pid for f in self.functions.values()]

    @property
    def env(self) -> dict[str, str]:
        """What the functions see: the GCP backend, on the emulators."""
        assert self.firestore is not None and self.pubsub is not None
        return {
            "FUNCTION_FLOW_BACKEND": "gcp",
            "FIRESTORE_EMULATOR_HOST": self.firestore.host,
            "PUBSUB_EMULATOR_HOST": self.pubsub.host,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FUNCTION_FLOW_COLLECTION_PREFIX": self.collection_prefix,
            "FUNCTION_FLOW_SCHEDULE_TOPIC": self.schedule_topic,
            "FUNCTION_FLOW_EVENTS_TOPIC": self.events_topic,
            **self.extra_env,
        }

    @property
    def store(self) -> Any:
        """A FirestoreStore on the emulator, to read runs as the functions wrote them.

        Its client is built here with the emulator host, without changing
        this process's environment for anything else.
        """
        if self._store is None:
            from google.cloud import firestore

            from function_flow.store.firestore import FirestoreStore

            assert self.firestore is not None
            with _environment({"FIRESTORE_EMULATOR_HOST": self.firestore.host}):
                client = firestore.Client(project=self.project)
            self._store = FirestoreStore(project=self.project, prefix=self.collection_prefix,
                                         client=client)
        return self._store

    # --------------------------------------------------------------- actions

    def start_run(self, args: dict[str, Any], run_id: str | None = None,
                  timeout: float = 60.0) -> str:
        """POST `args` to the start function, as a client of the deployed one would."""
        from function_flow.cloud.functions import RUN_ID_HEADER

        headers = {"Content-Type": "application/json"}
        if run_id:
            headers[RUN_ID_HEADER] = run_id
        request = urllib.request.Request(self.start_url, data=json.dumps(args).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail)["error"]
            raise DevError(f"the start function answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DevError(f"the start function did not answer: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("run_id"), str):
            raise DevError(f"the start function answered without a run id: {body!r}")
        return body["run_id"]

    def poll(self) -> dict[str, Any]:
        """Call the poller once (what Cloud Scheduler does every minute)."""
        request = urllib.request.Request(self.poller_url, data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"{}")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the functions' log."""
        if not self._log_path:
            return ""
        with self._log_lock:
            if self._log is not None:
                self._log.flush()
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------- internals

    def _open_log(self) -> None:
        if self._log_path is None:
            handle, self._log_path = tempfile.mkstemp(prefix="function-flow-dev-",
                                                      suffix=".log")
            os.close(handle)
        directory = os.path.dirname(os.path.abspath(self._log_path))
        os.makedirs(directory, exist_ok=True)
        self._log = open(self._log_path, "a", encoding="utf-8", buffering=1)

    def _write(self, who: str, line: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        with self._log_lock:
            if self._log is not None:
                self._log.write(f"{stamp} {who:<23} {line.rstrip()}\n")

    def _event(self, line: str) -> None:
        self._write("dev", line)
        self.on_event(line)

    def _start_emulators(self) -> None:
        """Start the missing emulators, both at once (each takes seconds)."""
        wanted = [name for name in ("firestore", "pubsub") if getattr(self, name) is None]
        if not wanted:
            return
        emulators.check_requirements(tuple(wanted))
        self._event(f"starting the {' and '.join(wanted)} emulator(s)")
        with concurrent.futures.ThreadPoolExecutor(len(wanted)) as pool:
            futures = {name: pool.submit(emulators.start, name, self.project)
                       for name in wanted}
            try:
                for name, future in futures.items():
                    setattr(self, name, future.result())
            finally:
                # Own whatever started, also when the other one failed or
                # Ctrl-C came: stop() must find it.
                for name, future in futures.items():
                    with contextlib.suppress(BaseException):
                        emulator = future.result()
                        self._own_emulators.append(emulator)
                        setattr(self, name, emulator)
                        self._event(f"{name} emulator on {emulator.host} "
                                    f"(pid {emulator.process.pid})")

    def _pubsub_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        """One call to the Pub/Sub emulator's REST API; "already exists" is fine."""
        assert self.pubsub is not None
        url = f"http://{self.pubsub.host}/v1/projects/{self.project}/{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 409:
                return
            raise DevError(f"Pub/Sub emulator: {method} {path} answered {exc.code}: "
                           f"{exc.read().decode('utf-8', 'replace')}") from None

    def _create_topics(self) -> None:
        for topic in (self.schedule_topic, self.events_topic):
            self._pubsub_call("PUT", f"topics/{topic}")
        self._event(f"topics {self.schedule_topic} and {self.events_topic} "
                    f"in project {self.project}")

    def _create_push_subscriptions(self) -> None:
        """Push each topic to its function, as a Pub/Sub trigger does when deployed."""
        for topic, target in ((self.schedule_topic, "scheduler"),
                              (self.events_topic, "external_event_listener")):
            name = f"{self.collection_prefix}{topic}-{target}-push"
            self._pubsub_call("PUT", f"subscriptions/{name}", {
                "topic": f"projects/{self.project}/topics/{topic}",
                "pushConfig": {"pushEndpoint": self.functions[target].url},
                "ackDeadlineSeconds": ACK_DEADLINE_SECONDS,
            })
            self._subscriptions.append(name)
            self._event(f"push subscription {name}: {topic} -> {target}")

    def _start_functions(self) -> None:
        self._workdir = tempfile.mkdtemp(prefix="function-flow-dev-")
        entry = os.path.join(self._workdir, "function_flow_dev_entry.py")
        with open(entry, "w", encoding="utf-8") as handle:
            handle.write(_ENTRY_MODULE)
        env = dict(os.environ, **self.env, PYTHONUNBUFFERED="1",
                   FUNCTION_FLOW_DEV_SOURCE=self.source,
                   FUNCTION_FLOW_DEV_JOB=self.job_name or "")
        for name in FUNCTIONS:
            signature = self.signature_type \
                if name in ("scheduler", "external_event_listener") else "http"
            port = emulators.free_port()
            command = [_functions_framework(), f"--source={entry}", f"--target={name}",
                       f"--signature-type={signature}", "--host=127.0.0.1", f"--port={port}"]
            process = subprocess.Popen(command, env=dict(env, FUNCTION_FLOW_DEV_TARGET=name),
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       text=True, encoding="utf-8", errors="replace")
            function = FunctionProcess(name, signature, port, process)
            self.functions[name] = function
            self._event(f"{name} ({signature} function) on {function.url} "
                        f"(pid {process.pid})")
            pump = threading.Thread(target=self._pump, args=(name, process),
                                    name=f"function-flow-dev-log-{name}", daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, name: str, process: subprocess.Popen) -> None:
        """Copy a function's output into the log, each line tagged with its name."""
        assert process.stdout is not None
        for line in process.stdout:
            self._write(name, line)
        process.stdout.close()

    def _wait_for_functions(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        waiting = dict(self.functions)
        while waiting:
            for name, function in list(waiting.items()):
                if function.process.poll() is not None:
                    time.sleep(0.2)  # let the log pump catch the last lines
                    raise DevError(f"the {name} function exited with code "
                                   f"{function.process.returncode} before answering; "
                                   f"last lines of {self._log_path}:\n{self.log_tail(15)}")
                if function.answers():
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                raise DevError(f"{', '.join(waiting)} did not answer within "
                               f"{self.startup_timeout:.0f} s; see {self._log_path}")
            if waiting:
                time.sleep(0.2)
        self._event("every function answers")

    def _poll_forever(self) -> None:
        assert self.poll_interval
        while not self._poller_stop.wait(self.poll_interval):
            try:
                self.poll()
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if not self._poller_stop.is_set():
                    self._write("dev", f"poller call failed: {exc}")


def _functions_framework() -> str:
    """The functions-framework script next to this Python, else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "functions-framework")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("functions-framework")
    if found is None:
        raise DevError("the `functions-framework` command is missing; "
                       "pip install functions-framework")
    return found


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block only."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------- inside each function


def entry_points() -> tuple[Callable[..., Any], ...]:
    """The four entry points of the workflow named by the dev environment.

    Runs inside each functions-framework process (see _ENTRY_MODULE): loads
    FUNCTION_FLOW_DEV_SOURCE the way the CLI does and builds the functions
    from its Job, on the GCP backend that the environment configures.
    """
    import logging

    from function_flow import loader

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    job = loader.load_job(os.environ["FUNCTION_FLOW_DEV_SOURCE"],
                          os.environ.get("FUNCTION_FLOW_DEV_JOB") or None)
    return (job.make_start(), job.make_scheduler(), job.make_external_event_listener(),
            job.make_poller())


# ----------------------------------------------------------------- signals


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated, so `finally` blocks run."""
    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let a shutdown finish: a second Ctrl-C must not leave processes behind."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def default_log_path(run_id: str) -> str:
    """Where `function-flow dev` writes the functions' logs for a run."""
    return os.path.join(".function_flow", f"dev-{run_id}.log")


__all__ = ["LocalStack", "FunctionProcess", "DevError", "EmulatorError", "Terminated",
           "DEV_PROJECT", "SIGNATURE_TYPES", "entry_points", "stop_groups",
           "sigterm_unwinds", "signals_ignored", "default_log_path"]
