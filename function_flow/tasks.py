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

import collections
import contextvars
import threading
from typing import Any, Callable, Optional

from function_flow.core import engine as engine_module
from function_flow.backends import Backend, from_settings
from function_flow.owners import pid_alive
from function_flow.config import Settings
from function_flow import callbacks, run_end, subdags
from function_flow.core import foreach as foreach_module
from function_flow.core.definition import DEFAULT_FOREACH_MAX_ITEMS, Call, ForEach
from function_flow.core.starts import process_owner
from function_flow.context import RunContext
from function_flow.entry_points import EntryPoints
from function_flow.task_view import Task, remote_call, topic_of
from function_flow.run_hooks import HookDecorators
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


class Job(EntryPoints, HookDecorators):
    """A workflow: a named DAG of tasks, and the handle to start and run it.

    Besides its tasks, a job may have hooks a run calls once after it ended:
    `@job.on_failure` and `@job.on_end` (run_hooks.py).
    """

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
        self._hooks: dict[str, TaskSpec] = {}
        self._subdags: list[subdags.SubDag] = []
        #: Each id above -> "task" or "sub-DAG" (subdags.declare keeps it).
        self._ids: dict[str, str] = {}
        #: The sub-DAG use a bound job's body runs in ("left/"): see get_task_result.
        self._scope = ""
        self._dag: Dag | None = None
        self._backend = backend
        self._engine: engine_module.Engine | None = None
        self._lock = threading.Lock()
        self._args_cache: tuple[str, dict[str, Any]] | None = None  # (run id, args)
        self._repairs = run_end.Repairs()

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
             retry_on: Any = None, trigger_rule: str = "all_success",
             branch: bool = False,
             foreach: ForEach | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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
        trigger_rule: when the task runs, given how its dependencies ended
            (Airflow's rules: all_success, all_failed, all_done, one_success,
            one_failed, none_failed, none_failed_min_one_success, always).
        branch: the body returns the id of the dependent to follow, or a
            list of them; the other dependents are SKIPPED.
        """
        if callable(task_id):  # a bare @job.task: Python passed the function
            name = getattr(task_id, "__name__", "task")
            raise DefinitionError(
                f"task function {name}() in job {self.name!r}: @job.task needs a "
                f"task id; write @job.task(task_id='{name}', deps=[...])", name)
        call = remote_call(task_id, remote_topic, call)
        if call is not None and call.kind == "pubsub" \
                and call.target in (self.schedule_topic, self.external_event_topic):
            raise DefinitionError(
                f"task {task_id!r}: remote_topic {call.target!r} is this job's own "
                "scheduling or external events topic; a remote function needs a topic of "
                "its own", task_id)

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            spec = make_spec(task_id, deps, func, retries=retries,
                             retry_backoff=retry_backoff, timeout=timeout,
                             task_args=task_args, call=call, retry_on=retry_on,
                             trigger_rule=trigger_rule, branch=branch, foreach=foreach)
            subdags.check_free(self, task_id, adding="task")
            subdags.declare(self, spec)
            self.tasks.append(Task(task_id, list(spec.deps), topic_of(call),
                                   spec.task_args, func))
            self._dag = None
            self._engine = None
            return func

        return register

    def foreach(self, task_id: str, over: str, deps: Optional[list[str]] = None, *,
                dag: Optional["Job"] = None, max_concurrency: int | None = None,
                tolerated_failures: int = 0, tolerated_failure_percentage: float | None = None,
                max_items: int = DEFAULT_FOREACH_MAX_ITEMS, **options: Any) -> Any:
        """Declare a task that runs once per item of task `over`'s result.

        The result must be a list or a mapping; the body gets each item as
        `item=` (if it takes that parameter) and as `task.item`, with its
        index or key as `task.item_key`. At most `max_concurrency` items run
        at once. The foreach fails when more than `tolerated_failures` items
        (or `tolerated_failure_percentage` percent) failed. Its result, for
        `job.get_task_result`, is every item's result: a list in item order,
        or a mapping by key. Other options are those of `task` (retries,
        timeout, retry_on... apply to each item).

        With `dag=other_job` this is not a decorator: each item runs a copy
        of that job's tasks, `task_id[i]/t`, whose bodies all see the item as
        `task.item`; an item's result is its copy's sink's (or {sink: result}).
        """
        spec = ForEach(over=over, max_concurrency=max_concurrency,
                       tolerated_failures=tolerated_failures,
                       tolerated_failure_percentage=tolerated_failure_percentage,
                       max_items=max_items)
        deps = list(deps or [])
        deps = deps if over in deps else [over, *deps]
        if dag is None:
            return self.task(task_id, deps, foreach=spec, **options)
        if options:
            raise DefinitionError(
                f"foreach {task_id!r} of job {self.name!r} runs job {dag.name!r} per item; "
                f"{', '.join(sorted(options))} belong to that job's tasks, not here",
                task_id)
        subdags.declare(self, subdags.add(self, task_id, dag, deps, foreach=spec))
        self._dag = None
        self._engine = None
        return None

    def subdag(self, task_id: str, dag: "Job", deps: Optional[list[str]] = None) -> None:
        """Use job `dag` (its tasks declared) as node `task_id`, after `deps`: its
        task `t` runs as `task_id/t`; the node's result is its sink's (or
        {sink: result}). See function_flow/subdags.py."""
        subdags.declare(self, subdags.add(self, task_id, dag, deps))
        self._dag = None
        self._engine = None

    @property
    def dag(self) -> Dag:
        """The validated graph; raises DefinitionError naming the bad task."""
        if self._dag is None or not subdags.is_current(self._dag):
            self._dag = subdags.compose(self)
            self._dag.hooks = {spec.task_id: spec for spec in self._hook_specs()}
            self._engine = None
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
              job_args: Optional[dict[str, Any]] = None,
              callback_url: Optional[str] = None) -> str:
        """Start a run with arguments `argv`; sets and returns `job.id`.

        job_args: the same, under the name later Function Flow releases use
        (`job.start(job_args={...})`); give one or the other.
        source: where the workflow is defined (a file path), stored on the
        run so that `function-flow resume` can find it again.
        callback_url: an http(s) URL that receives the run's final status and
        results, signed, once it ended (callbacks.py); needs FUNCTION_FLOW_HMAC_KEY.
        run_id: the same id again answers that run (a retry); with other
        arguments it raises RunConflictError and changes nothing.
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
        callbacks.check_start(callback_url)
        owner = process_owner() if self.backend.kind == "embedded" else None
        run_id, _ = self.engine.start(argv or {}, run_id=run_id, owner=owner,
                                      source=source, callback_url=callback_url)
        self.id = run_id
        return run_id

    def resume(self, run_id: str) -> RunRecord:
        """Finish a run whose process died; succeeded tasks do not run again."""
        run = self.engine.resume(run_id, owner=process_owner(),
                                 owner_alive=pid_alive)
        self.id = run_id
        return run

    def wait(self, run_id: Optional[str] = None, timeout: Optional[float] = None,
             poll_interval: Optional[float] = None, *, hooks: bool = True) -> RunRecord:
        """Block until the run ends, and its hooks and callback have run
        (hooks=False: only until it ends); returns its final record.

        On the embedded backend the store tells this process's waiters of
        the commit that ends the run (run_end.py), and `poll_interval`
        (default 1 s) is only how often it looks anyway, for what other
        processes write; elsewhere it polls every `poll_interval` (0.05 s).
        """
        run_id = run_id or self.id
        if run_id is None:
            raise FunctionFlowError("no run to wait for: call job.start() first")
        return run_end.wait(self, run_id, timeout, poll_interval, hooks=hooks)

    def repair_if_stalled(self, run_id: str, every: float = 2.0) -> None:
        """On the embedded backend, do what the poller does on Google Cloud
        (run_end.Repairs): redo a follow-up lost between a commit and its
        messages, look for GCSFutures' objects, resend a resumed run's tasks."""
        self._repairs.if_stalled(self, run_id, every)

    def run(self, argv: Optional[dict[str, Any]] = None,
            timeout: Optional[float] = None, *, run_id: Optional[str] = None,
            job_args: Optional[dict[str, Any]] = None) -> RunRecord:
        """Start a run and wait for it to end (with `run_id`: idempotent, as start;
        `job_args`: the arguments, under start's other name for them)."""
        return self.wait(self.start(argv, run_id=run_id, job_args=job_args), timeout=timeout)

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
        """The stored result of `task_id` in the current run (None if none yet).

        In a sub-DAG's body, `task_id` is looked for in the same use of the
        sub-DAG first, then in the enclosing ones (function_flow/subdags.py).
        """
        resolved = subdags.resolve(self._scope, task_id,
                                   collections.ChainMap(self.dag.tasks, self.dag.templates))
        if resolved is None:
            raise FunctionFlowError(
                f"job {self.name!r} has no task {task_id!r}; "
                f"its tasks are {', '.join(self.dag.order)}")
        task_id, run_id = resolved, self._current_run()
        records = self.engine.store.get_tasks(run_id, [task_id])
        if not records:
            return None
        value = self.engine.payloads.load(
            records[0].result, f"the result of task {task_id!r} of run {run_id!r}")
        spec = self.dag.spec_of(subdags.template_of(task_id))
        if spec is not None and spec.foreach is not None \
                and foreach_module.is_summary(value):
            return foreach_module.results(self.engine, run_id, task_id, value)
        return value

    @property
    def context(self) -> RunContext:
        """The current run's shared key/values: `job.context.set(key, value)`,
        `.get(key, default)`, `.delete(key)`, `.items()` (function_flow/context.py)."""
        return RunContext(self)

    def _current_run(self) -> str:
        if self.id is None:
            raise FunctionFlowError(
                f"job {self.name!r} has no current run: call job.start() first, "
                "or use the job passed to the task function")
        return self.id

    def invoke(self, spec: TaskSpec, run_id: str, attempt: int, **item: Any) -> Any:
        """Call a task's function the way it was declared (engine.Workflow)."""
        bound_job = object.__new__(type(self))  # copy.copy, without its protocol's cost
        bound_job.__dict__.update(self.__dict__)
        bound_job.id = run_id
        bound_job._args_cache = None
        bound_job._scope = subdags.scope_of(item.get("item_id", spec.task_id))
        task = Task(spec.task_id, list(spec.deps), topic_of(spec.call), spec.task_args,
                    spec.func)
        task.status, task.run_id, task.attempt = TaskStatus.RUNNING, run_id, attempt
        task.item, task.item_key = item.get("item"), item.get("item_key")
        if "item_id" in item:  # a foreach's item (work[3]) or a member of its copy
            task.id = item["item_id"]
            task.deps = [subdags.in_copy(dep, task.id) for dep in spec.deps]
        if spec.func is None:
            return None
        token = _executing.set((self.name, run_id))
        try:
            if spec.call_style == "positional":
                return spec.func(task, bound_job)
            if spec.call_style == "none":
                return spec.func()
            kwargs: dict[str, Any] = {}
            if item and spec.takes_item:
                kwargs["item"] = item["item"]
            if spec.pass_task:
                kwargs["task"] = task
            if spec.pass_job:
                kwargs["job"] = bound_job
            return spec.func(**kwargs)
        finally:
            _executing.reset(token)


# Function Flow's name for it: `tasks.cleanup_expired_jobs(...)`.
from function_flow.cleanup import cleanup_expired_jobs, names_cloud  # noqa: E402
