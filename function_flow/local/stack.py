"""The deployed topology on one machine, for `function-flow dev`.

    Firestore emulator   Pub/Sub emulator   gcp-storage-emulator (large values)
                           topic SCHEDULE ----------------- push --> scheduler
                           topic SCHEDULE_EXTERNAL_EVENTS - push --> external_event_listener
    HTTP POST ---------------------------------------------------> start
    HTTP POST {"action": "pause"|"resume"|"cancel", "run_id"} ----> control
    asynchronous answers (OpenFaaS queue worker) ----------------> callback
    every 2 s (Cloud Scheduler's part) --------------------------> poller

`LocalStack` assembles the building blocks the tests use one by one:
emulators.py (the emulators), dev_functions.py (one functions-framework
server per entry point, framework.py, FUNCTION_FLOW_BACKEND=gcp, the
emulator hosts in its environment), pubsub.py (topics and push
subscriptions), dev_log.py (the one log file) and processes.py
(every child in its own process group, stopped by group id, so the Java
emulators' children never outlive the stack). Messages take the real path:
publish -> Pub/Sub emulator -> push subscription -> functions-framework ->
Firestore. Unlike Pub/Sub, the emulator pushes at most 2 messages of a
subscription at once, so at most 2 task bodies run at a time here.

The local platform's request timeout is `function_timeout` (30 s unless
FUNCTION_FLOW_FUNCTION_TIMEOUT is set): the engine waits that long, not
Cloud Functions' 540 s, before retrying an attempt that overran its task
timeout, and functions-framework interrupts a request running that long
(see framework.platform_timeout_env for what that does and does not stop).

The functions' output goes to one log file, each line tagged with the
function that wrote it; the log also names every PID started. The
functions serve a small generated module (entry.py) instead of the
workflow file itself, so any workflow file works and `--job NAME` picks
one of several jobs; dev_functions.py starts them in the order their
environments need (callback's URL first).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from typing import Any, Callable

from function_flow import signing
from function_flow.local import emulators, framework, processes
from function_flow.local.calls import post_json
from function_flow.local.dev_functions import FUNCTIONS, DevFunctions
from function_flow.local.dev_log import DevLog
from function_flow.local.emulators import Emulator, EmulatorError
from function_flow.local.entry import default_log_path, entry_points
from function_flow.local.framework import FunctionProcess
from function_flow.local.processes import (DevError, Terminated, signals_ignored,
                                           sigterm_unwinds, stop_groups)
from function_flow.local.pubsub import MAX_ACK_DEADLINE_SECONDS, EmulatorPubSub

#: Project id of the local topology (any id works on the emulators).
DEV_PROJECT = "function-flow-dev"
#: How scheduler and external_event_listener receive pushes: a 1st gen
#: background function (event, context), a 2nd gen CloudEvent function, or
#: a plain HTTP endpoint reading the push envelope.
SIGNATURE_TYPES = ("event", "cloudevent", "http")
#: Bucket of large results and arguments on the storage emulator (the
#: collection prefix is its folder, so stacks may share the emulator).
DEV_BUCKET = "function-flow-dev"
#: How often the poller runs: Cloud Scheduler's job, made fast for local use
#: (retry backoff and timers resolve to this period).
POLL_INTERVAL_SECONDS = 2.0

class LocalStack:
    """Emulators, topics, push subscriptions and one process per entry point.

        with LocalStack("samples/main.py", log_path="dev.log") as stack:
            run_id = stack.start_run({"region": "EMEA"})
            run = stack.store.get_run(run_id)

    firestore/pubsub/storage: emulators already running (e.g. a test session's) to
    use instead of starting new ones; they are not stopped by `stop()`, and
    the push subscriptions made on them are deleted. collection_prefix and
    topic names (Pub/Sub ids: 3+ characters, starting with a letter) let
    several stacks share emulators.
    function_timeout: the local platform's request timeout in seconds.
    log_path: where the functions' output goes; by default a temporary
    file, kept after `stop()` so that it can still be read.
    on_event: called with each line the stack itself logs (startup steps).
    remote_functions: {topic: name of a function in `source`}: each is served
    from the workflow file itself, pushed its topic (local/remotes.py); by
    default (None) the file's own @remote.function functions, as `dev` does.
    hmac_key: the key every function signs and checks messages with
    (`function-flow dev` passes the one of .function_flow/hmac.key).
    """

    def __init__(self, source: str, job_name: str | None = None, *,
                 schedule_topic: str = "SCHEDULE",
                 events_topic: str = "SCHEDULE_EXTERNAL_EVENTS",
                 project: str = DEV_PROJECT, signature_type: str = "event",
                 log_path: str | None = None, collection_prefix: str = "",
                 firestore: Emulator | None = None, pubsub: Emulator | None = None,
                 storage: Emulator | None = None,
                 poll_interval: float | None = POLL_INTERVAL_SECONDS,
                 function_timeout: int | None = None,
                 extra_env: dict[str, str] | None = None,
                 remote_functions: dict[str, str] | None = None,
                 startup_timeout: float = 90.0,
                 on_event: Callable[[str], None] | None = None,
                 hmac_key: str | None = None) -> None:
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
        self.function_timeout = function_timeout or framework.local_function_timeout()
        self.extra_env = dict(extra_env or {})
        #: Signs every message between the functions (signing.py): given, or
        #: FUNCTION_FLOW_HMAC_KEY, else a random one for this stack's processes.
        self.hmac_key = signing.check_key(
            hmac_key or os.environ.get(signing.KEY_VARIABLE) or secrets.token_hex(32)
        ).decode("utf-8")
        if remote_functions is None:  # the file's own, as `function-flow dev` serves them
            from function_flow import loader
            from function_flow.local import remotes

            remote_functions = remotes.remote_functions(loader.load_module(self.source),
                                                        self.source)
        #: topic -> function of `source` answering it (local/remotes.py).
        self.remote_functions = dict(remote_functions)
        self.startup_timeout = startup_timeout
        self.on_event = on_event or (lambda line: None)
        self._log = DevLog(log_path, self.on_event)
        self.firestore = firestore
        self.pubsub = pubsub
        #: gcp-storage-emulator, holding the blobs of large values; None when
        #: it is not installed (values then stay in their records, up to 900 KB).
        self.storage = storage
        self._own_emulators: list[Emulator] = []
        self._functions: DevFunctions | None = None  # made by start()
        self._poller_stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._store: Any = None
        self._wiring: EmulatorPubSub | None = None

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
            self._log.open()
            self._start_emulators()
            self._create_bucket()
            assert self.pubsub is not None
            self._wiring = EmulatorPubSub(self.pubsub.host, self.project)
            for topic in (self.schedule_topic, self.events_topic, *self.remote_functions):
                self._wiring.ensure_topic(topic)
            self._log.event(f"topics {self.schedule_topic} and {self.events_topic} "
                            f"in project {self.project}")
            self._functions = DevFunctions(self.source, self.job_name, self.signature_type,
                                           self.remote_functions, self.function_timeout,
                                           self.startup_timeout, self._log)
            self._functions.start(self.env)
            self._log.event("every function answers")
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
        if self._wiring is not None:
            # Subscriptions first: a shared emulator must not keep pushing
            # to ports that are about to close.
            with contextlib.suppress(Exception):
                self._wiring.close()
            self._wiring = None
        if self._functions is not None:
            self._functions.stop(timeout)  # also removes the generated entry module
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None
        owned, self._own_emulators = self._own_emulators, []
        with contextlib.suppress(Exception):
            stop_groups([e.process for e in owned], timeout)  # both at once
        for emulator in owned:
            with contextlib.suppress(Exception):
                emulator.stop(timeout)  # already ended; removes its log file
                self._log.write("dev", f"stopped the {emulator.name} emulator "
                                       f"(pid {emulator.process.pid})")
        self._log.close()

    # ------------------------------------------------------------- facts

    @property
    def log_path(self) -> str | None:
        return self._log.path

    @property
    def functions(self) -> dict[str, FunctionProcess]:
        """The running functions by name (entry points and remote functions)."""
        return self._functions.functions if self._functions is not None else {}

    @property
    def start_url(self) -> str:
        return self.functions["start"].url

    @property
    def poller_url(self) -> str:
        return self.functions["poller"].url

    @property
    def control_url(self) -> str:
        return self.functions["control"].url

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
            signing.KEY_VARIABLE: self.hmac_key,
            **({"FUNCTION_FLOW_BUCKET": f"gs://{DEV_BUCKET}/{self.collection_prefix}",
                **self.storage.env} if self.storage is not None else {}),
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
            with processes.environment({"FIRESTORE_EMULATOR_HOST": self.firestore.host}):
                client = firestore.Client(project=self.project)
            self._store = FirestoreStore(project=self.project, prefix=self.collection_prefix,
                                         client=client)
        return self._store

    # --------------------------------------------------------------- actions

    def start_run(self, args: dict[str, Any], run_id: str | None = None,
                  timeout: float = 60.0, callback_url: str | None = None) -> str:
        """POST `args` to the start function, as a client of the deployed one would
        (with a callback URL: the run POSTs its results there once it ended)."""
        from function_flow.callbacks import CALLBACK_URL_HEADER
        from function_flow.cloud.functions import RUN_ID_HEADER

        headers = {RUN_ID_HEADER: run_id} if run_id else {}
        if callback_url:
            headers[CALLBACK_URL_HEADER] = callback_url
        body = post_json(self.start_url, args, "the start function", timeout=timeout,
                         headers=headers or None)
        if not isinstance(body.get("run_id"), str):
            raise DevError(f"the start function answered without a run id: {body!r}")
        return body["run_id"]

    def poll(self) -> dict[str, Any]:
        """Call the poller once (what Cloud Scheduler does every minute)."""
        return post_json(self.poller_url, {}, "the poller")

    def control(self, action: str, run_id: str) -> dict[str, Any]:
        """Pause, resume or cancel a run through the control function (cloud/control.py)."""
        return post_json(self.control_url, {"action": action, "run_id": run_id},
                         "the control function")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the functions' log."""
        return self._log.tail(lines)

    # ------------------------------------------------------------- internals

    def _start_emulators(self) -> None:
        """Start the missing emulators, all at once (each takes seconds)."""
        wanted = [name for name in ("firestore", "pubsub") if getattr(self, name) is None]
        if self.storage is None:
            if emulators.missing_requirements(("storage",)):
                self._log.event("gcp-storage-emulator is not installed: results and "
                                "arguments over 900,000 bytes will fail "
                                "(pip install gcp-storage-emulator)")
            else:
                wanted.append("storage")
        if not wanted:
            return
        emulators.check_requirements(tuple(wanted))
        self._log.event(f"starting the {' and '.join(wanted)} emulator(s)")

        def own(name: str, emulator: Emulator) -> None:  # stop() must find it
            self._own_emulators.append(emulator)
            setattr(self, name, emulator)
            self._log.event(f"{name} emulator on {emulator.host} (pid {emulator.process.pid})")
        emulators.start_together(wanted, self.project, own)

    def _create_bucket(self) -> None:
        """The bucket FUNCTION_FLOW_BUCKET names, on the storage emulator."""
        if self.storage is not None:
            emulators.create_bucket(self.storage, self.project, DEV_BUCKET)
            self._log.event(f"bucket gs://{DEV_BUCKET} for large values on the storage emulator")

    def _create_push_subscriptions(self) -> None:
        """Push each topic to its function, as a Pub/Sub trigger does when deployed."""
        assert self._wiring is not None
        for topic, target in ((self.schedule_topic, "scheduler"),
                              (self.events_topic, "external_event_listener"),
                              *self.remote_functions.items()):
            name = f"{self.collection_prefix}{topic}-{target}-push"
            self._wiring.push(topic, self.functions[target].url, name,
                              MAX_ACK_DEADLINE_SECONDS)
            self._log.event(f"push subscription {name}: {topic} -> {target}")

    def _poll_forever(self) -> None:
        assert self.poll_interval
        while not self._poller_stop.wait(self.poll_interval):
            try:
                self.poll()
            except DevError as exc:
                if not self._poller_stop.is_set():
                    self._log.write("dev", f"poller call failed: {exc}")


__all__ = ["LocalStack", "FunctionProcess", "DevError", "EmulatorError", "Terminated",
           "DEV_PROJECT", "SIGNATURE_TYPES", "entry_points", "stop_groups",
           "sigterm_unwinds", "signals_ignored", "default_log_path"]
