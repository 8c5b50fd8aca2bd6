"""The workflow API, compatible with Google's Function Flow.

    from function_flow import tasks, futures

    job = tasks.Job(name='test_job', schedule_topic='SCHEDULE', max_parallel_tasks=5)

    @job.task(task_id='step2', deps=['step1'], retries=2, timeout=600)
    def step2(task, job):
        return job.get_task_result('step1')

Constructing a Job touches no network and needs no credentials: the backend
(embedded SQLite, or Firestore + Pub/Sub) is chosen on first use.
"""

from __future__ import annotations

import contextvars
import copy
import threading
import time
from typing import Any, Callable, Optional

from function_flow.core import engine as engine_module
from function_flow.core import control, watches
from function_flow.backends import Backend, from_settings
from function_flow.owners import pid_alive
from function_flow.config import Settings
from function_flow import remote
from function_flow.remote import targets as remote_targets
from function_flow.core.definition import Call
from function_flow.core.graph import Backoff, Dag, TaskSpec, make_spec
from function_flow.errors import DefinitionError, FunctionFlowError, RunNotFoundError
from function_flow.core.records import RunRecord, RunStatus, TaskStatus

JobStatus = RunStatus  # Function Flow's name for the status of a run

#: (job name, run id) of the task body running in this thread. Function
#: Flow's scheduler set `id` on the module-level job before calling a task,
#: so bodies may use that global job instead of the one passed to them; this
#: keeps that working when one process runs tasks of several runs at once.
_executing: contextvars.ContextVar[Optional[tuple[str, str]]] = contextvars.ContextVar(
    "function_flow_executing", default=None)

__all__ = ["Job", "Task", "TaskStatus", "JobStatus", "Backoff", "cleanup_expired_jobs"]


class Task:
    """A task as its function sees it: `task.id`, `task.deps`, `task.task_args`,
    `task.remote_topic`.

    Arguments in Function Flow's order, `Task(task_id, deps, remote_topic,
    task_args, func)`; its first releases took `Task(task_id, deps, func)`,
    which still works. During execution a task also carries `run_id` and
    `attempt` (1 for the first try), which Function Flow did not have.
    """

    def __init__(self, task_id: str, deps: list[str] | None = None,
                 remote_topic: str | Callable[..., Any] | None = None,
                 task_args: dict[str, Any] | None = None,
                 func: Callable[..., Any] | None = None) -> None:
        if callable(remote_topic) and func is None:  # Task(task_id, deps, func)
            remote_topic, func = None, remote_topic
        self.id = task_id
        self.deps = list(deps or [])
        self.remote_topic = remote_topic
        self.func = func
        self.task_args = dict(task_args or {})
        self.status = TaskStatus.WAITING
        self.run_id: str | None = None
        self.attempt = 0

    def __repr__(self) -> str:
        return f"Task(id={self.id!r}, deps={self.deps!r})"


class Job:
    """A workflow: a named DAG of tasks, and the handle to start and run it."""

    def __init__(self, name: str, db: Any = None, pubsub: Any = None,
                 schedule_topic: str = "SCHEDULE",
                 external_event_topic: str = "SCHEDULE_EXTERNAL_EVENTS",
                 max_parallel_tasks: int = 5, project: Optional[str] = None,
                 backend: Backend | None = None) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise DefinitionError(f"job name must be a non-empty string without '/', got {name!r}")
        if not isinstance(max_parallel_tasks, int) or max_parallel_tasks < 1:
            raise DefinitionError(
                f"job {name!r}: max_parallel_tasks must be an integer >= 1, "
                f"got {max_parallel_tasks!r}")
        self.name = name
        self._id: str | None = None
        self.db = db
        self.pubsub = pubsub
        self.project = project
        self.schedule_topic = schedule_topic
        self.external_event_topic = external_event_topic
        self.max_parallel_tasks = max_parallel_tasks
        self.tasks: list[Task] = []
        self._specs: list[TaskSpec] = []
        self._dag: Dag | None = None
        self._backend = backend
        self._engine: engine_module.Engine | None = None
        self._lock = threading.Lock()
        self._args_cache: tuple[str, dict[str, Any]] | None = None  # (run id, args)
        self._last_repair = 0.0
        self._resumes_seen: dict[str, float] = {}  # run id -> resumed_at acted on

    @property
    def id(self) -> str | None:
        """The current run: the one a task body of this job is running in,
        else the one `start()` last started."""
        executing = _executing.get()
        if executing is not None and executing[0] == self.name:
            return executing[1]
        return self._id

    @id.setter
    def id(self, run_id: str | None) -> None:
        self._id = run_id

    # ------------------------------------------------------------ definition

    def task(self, task_id: str, deps: Optional[list[str]] = None, *,
             retries: int = 0, retry_backoff: Backoff | float | None = None,
             timeout: float | None = None, task_args: dict[str, Any] | None = None,
             remote_topic: str | None = None,
             call: Call | None = None,
             retry_on: Any = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare a task. Returns the function unchanged, so it stays testable.

        retries: extra attempts after a failure (0: fail at once).
        retry_backoff: seconds before the first retry, or a `Backoff`; later
            retries wait exponentially longer, with jitter, up to its maximum.
        timeout: seconds an attempt may run before it counts as failed.
        task_args: a dict the body sees as `task.task_args` (and a remote
            function as "task_args").
        remote_topic: Function Flow's remote task: the body's return value
            goes to this Pub/Sub topic, and the task ends when the remote
            function answers (same as `call=remote.PubSub(topic)`).
        call: where the body's return value goes, from function_flow.remote:
            `PubSub(topic)`, `OpenFaaS(name)` or `Http(url)`.
        retry_on: retry only failures of these exception types (a type or a
            tuple, as `except` takes); an attempt past its timeout is a
            TimeoutError, a failure a remote function or event reported an
            errors.ReportedFailure. Default: every failure.
        """
        if callable(task_id):  # a bare @job.task: Python passed the function
            name = getattr(task_id, "__name__", "task")
            raise DefinitionError(
                f"task function {name}() in job {self.name!r}: @job.task needs a "
                f"task id; write @job.task(task_id='{name}', deps=[...])", name)
        call = _remote_call(task_id, remote_topic, call)
        if call is not None and call.kind == "pubsub" \
                and call.target in (self.schedule_topic, self.external_event_topic):
            raise DefinitionError(
                f"task {task_id!r}: remote_topic {call.target!r} is this job's own "
                "scheduling or external events topic; a remote function needs a topic of "
                "its own", task_id)

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            spec = make_spec(task_id, deps, func, retries=retries,
                             retry_backoff=retry_backoff, timeout=timeout,
                             task_args=task_args, call=call, retry_on=retry_on)
            if any(s.task_id == task_id for s in self._specs):
                raise DefinitionError(
                    f"task {task_id!r} is defined twice in job {self.name!r}; "
                    "task ids must be unique", task_id)
            self._specs.append(spec)
            self.tasks.append(Task(task_id, list(spec.deps), _topic_of(call),
                                   spec.task_args, func))
            self._dag = None
            self._engine = None
            return func

        return register

    @property
    def dag(self) -> Dag:
        """The validated graph; raises DefinitionError naming the bad task."""
        if self._dag is None:
            self._dag = Dag(self.name, self._specs)
        return self._dag

    def validate(self) -> None:
        """Check the whole definition now (ids, deps, cycles)."""
        _ = self.dag

    # --------------------------------------------------------------- backend

    def use_backend(self, backend: Backend) -> "Job":
        """Run this job on `backend` instead of the one settings choose."""
        self._backend = backend
        self._engine = None
        return self

    @property
    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                self._backend = from_settings(
                    Settings.from_env(cloud_hint=self._asks_for_cloud()), self)
            return self._backend

    def _asks_for_cloud(self) -> bool:
        """Built the Function Flow way, with Google Cloud clients or a project."""
        return names_cloud(self.db, self.pubsub, self.project)

    @property
    def engine(self) -> engine_module.Engine:
        if self._engine is None:
            dag, backend = self.dag, self.backend
            with self._lock:
                if self._engine is None:
                    self._engine = backend.engine(self)
                    assert self._engine.dag is dag
        return self._engine

    # ----------------------------------------------------------------- runs

    def start(self, argv: Optional[dict[str, Any]] = None,
              run_id: Optional[str] = None, source: Optional[str] = None, *,
              job_args: Optional[dict[str, Any]] = None) -> str:
        """Start a run with arguments `argv`; sets and returns `job.id`.

        job_args: the same, under the name later Function Flow releases use
        (`job.start(job_args={...})`); give one or the other.
        source: where the workflow is defined (a file path), stored on the
        run so that `function-flow resume` can find it again.
        """
        if job_args is not None:
            if argv is not None:
                raise FunctionFlowError(
                    f"job {self.name!r}: give the run's arguments as argv or as "
                    "job_args, not both")
            argv = job_args
        if argv is not None and not isinstance(argv, dict):
            raise FunctionFlowError(
                f"job {self.name!r}: arguments must be a dict, got {type(argv).__name__}")
        owner = engine_module.process_owner() if self.backend.kind == "embedded" else None
        run_id, _ = self.engine.start(argv or {}, run_id=run_id, owner=owner,
                                      source=source)
        self.id = run_id
        return run_id

    def resume(self, run_id: str) -> RunRecord:
        """Finish a run whose process died; succeeded tasks do not run again."""
        run = self.engine.resume(run_id, owner=engine_module.process_owner(),
                                 owner_alive=pid_alive)
        self.id = run_id
        return run

    def wait(self, run_id: Optional[str] = None, timeout: Optional[float] = None,
             poll_interval: float = 0.05) -> RunRecord:
        """Block until the run ends; returns its final record."""
        run_id = run_id or self.id
        if run_id is None:
            raise FunctionFlowError("no run to wait for: call job.start() first")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.engine.run_status(run_id)
            if run.status.is_final:
                return run
            self.repair_if_stalled(run_id)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run.status.value} after {timeout} s")
            time.sleep(poll_interval)

    def repair_if_stalled(self, run_id: str, every: float = 2.0) -> None:
        """On the embedded backend, do what the poller does on Google Cloud.

        When the in-process bus has nothing queued, running or delayed but
        the run has not ended, a follow-up step may have been lost to an
        error between a commit and its messages: `recover` redoes it. Rate
        limited; while the bus is busy, it only looks for the Cloud Storage
        objects the run's GCSFutures wait for. A run resumed from another
        process (`function-flow resume`) gets its held tasks sent again here.
        """
        now = time.monotonic()
        if now - self._last_repair < every:
            return
        self._last_repair = now
        if control.resend_if_resumed(self.engine, run_id, self._resumes_seen):
            return
        if self.backend.bus.wait_idle(0):
            self.engine.poll(stale_after=every, run_ids=[run_id])
        else:
            watches.check(self.engine, run_ids=[run_id])

    def run(self, argv: Optional[dict[str, Any]] = None,
            timeout: Optional[float] = None) -> RunRecord:
        """Start a run and wait for it to end."""
        return self.wait(self.start(argv), timeout=timeout)

    # ------------------------------------------------ used inside task bodies

    def get_arguments(self) -> dict[str, Any]:
        """The arguments the current run was started with."""
        run_id = self._current_run()
        if self._args_cache is None or self._args_cache[0] != run_id:
            run = self.engine.store.get_run(run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            self._args_cache = (run_id, dict(self.engine.payloads.with_args(run).args))
        return dict(self._args_cache[1])

    def get_task_result(self, task_id: str) -> Any:
        """The stored result of `task_id` in the current run (None if none yet)."""
        if task_id not in self.dag.tasks:
            raise FunctionFlowError(
                f"job {self.name!r} has no task {task_id!r}; "
                f"its tasks are {', '.join(self.dag.order)}")
        run_id = self._current_run()
        records = self.engine.store.get_tasks(run_id, [task_id])
        if not records:
            return None
        return self.engine.payloads.load(
            records[0].result, f"the result of task {task_id!r} of run {run_id!r}")

    def _current_run(self) -> str:
        if self.id is None:
            raise FunctionFlowError(
                f"job {self.name!r} has no current run: call job.start() first, "
                "or use the job passed to the task function")
        return self.id

    def invoke(self, spec: TaskSpec, run_id: str, attempt: int) -> Any:
        """Call a task's function the way it was declared (engine.Workflow)."""
        bound_job = copy.copy(self)
        bound_job.id = run_id
        bound_job._args_cache = None
        task = Task(spec.task_id, list(spec.deps), _topic_of(spec.call), spec.task_args,
                    spec.func)
        task.status, task.run_id, task.attempt = TaskStatus.RUNNING, run_id, attempt
        if spec.func is None:
            return None
        token = _executing.set((self.name, run_id))
        try:
            if spec.call_style == "positional":
                return spec.func(task, bound_job)
            if spec.call_style == "none":
                return spec.func()
            kwargs: dict[str, Any] = {}
            if spec.pass_task:
                kwargs["task"] = task
            if spec.pass_job:
                kwargs["job"] = bound_job
            return spec.func(**kwargs)
        finally:
            _executing.reset(token)

    # ------------------------------------------------- Cloud Functions hooks
    #
    # Building an entry point reads nothing: a workflow file may build them
    # before it declares its tasks (Function Flow's PyPI example does). The
    # definition is validated when a function first serves a request.

    def make_scheduler(self) -> Callable[..., Any]:
        """The `scheduler` Cloud Function (Pub/Sub trigger on SCHEDULE)."""
        from function_flow.cloud import functions

        return functions.make_scheduler(self)

    def make_external_event_listener(self) -> Callable[..., Any]:
        """The `external_event_listener` Cloud Function (SCHEDULE_EXTERNAL_EVENTS)."""
        from function_flow.cloud import functions

        return functions.make_external_event_listener(self)

    def make_poller(self) -> Callable[..., Any]:
        """The `poller` Cloud Function (Cloud Scheduler or HTTP)."""
        from function_flow.cloud import functions

        return functions.make_poller(self)

    def make_callback(self) -> Callable[..., Any]:
        """The `callback` Cloud Function (HTTP): asynchronous answers, e.g. OpenFaaS's.

        Deploy it where the gateway can reach it and set FUNCTION_FLOW_CALLBACK_URL
        to its URL. The job is validated on the first request.
        """
        from function_flow.cloud import functions

        return functions.make_callback(self)

    def make_start(self) -> Callable[..., Any]:
        """The `start` Cloud Function (HTTP): JSON body = run arguments."""
        from function_flow.cloud import functions

        return functions.make_start(self)

    def make_control(self) -> Callable[..., Any]:
        """The `control` Cloud Function (HTTP): pause, resume or cancel a run.

        Not public: deploy it so that only callers allowed by IAM may invoke it.
        """
        from function_flow.cloud import functions

        return functions.make_control(self)


def _topic_of(call: Call | None) -> str | None:
    return call.target if call is not None and call.kind == "pubsub" else None


def _remote_call(task_id: Any, remote_topic: str | None, call: Call | None) -> Call | None:
    """The task's Call from `remote_topic=` or `call=`; errors name the task."""
    if remote_topic is not None and call is not None:
        raise DefinitionError(f"task {task_id!r}: give remote_topic or call, not both",
                              task_id)
    if call is not None and not isinstance(call, Call):
        raise DefinitionError(
            f"task {task_id!r}: call must come from function_flow.remote (PubSub, OpenFaaS "
            f"or Http), got {call!r}", task_id)
    if remote_topic is not None:
        call = remote.PubSub(remote_topic)
    if call is not None:
        try:
            remote_targets.check(call)
        except ValueError as exc:
            raise DefinitionError(f"task {task_id!r}: {exc}", task_id) from None
    return call


# Function Flow's name for it: `tasks.cleanup_expired_jobs(...)`.
from function_flow.cleanup import cleanup_expired_jobs, names_cloud  # noqa: E402
