"""`@job.on_failure` and `@job.on_end`: functions a run calls once, after it ended.

    @job.on_failure(retries=2)
    def alert(run):
        notify(f"{run.job_name} {run.run_id} failed: {run.error}")

    @job.on_end
    def clean_up(run):          # whatever the status: Python's `finally`
        delete_scratch(run.args["scratch"])

faas-flow's OnFailure and Finally. Each is called with a core.hooks.RunInfo
(run_id, job_name, status, error, results of the sinks, failed_tasks,
args, times) exactly once per run, even if the process that ended the run
dies right after (they are records of the run: core/hooks.py). on_failure
runs only after a FAILED run, first; on_end after every end (SUCCEEDED,
FAILED, CANCELLED), after on_failure; then the completion callback, if
the start gave one (callbacks.py). A hook that raises is retried as its
`retries` say; its failure never changes the run's status.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from function_flow import callbacks
from function_flow.core import hooks
from function_flow.core.definition import Backoff, TaskSpec
from function_flow.errors import DefinitionError

Hook = Callable[[hooks.RunInfo], Any]


class HookDecorators:
    """The hook half of tasks.Job (which sets `name`, `_hooks`, `_dag`, `_engine`)."""

    name: str
    _hooks: dict[str, TaskSpec]
    _dag: Any
    _engine: Any

    def on_failure(self, func: Optional[Hook] = None, *, retries: int = 0,
                   retry_backoff: Backoff | float | None = None,
                   timeout: float | None = None) -> Any:
        """Call `func(run)` once when a run ends FAILED. Use as `@job.on_failure`
        or `@job.on_failure(retries=..., retry_backoff=..., timeout=...)`
        (the settings mean what they mean for a task)."""
        return self._hook(hooks.ON_FAILURE, func, retries, retry_backoff, timeout)

    def on_end(self, func: Optional[Hook] = None, *, retries: int = 0,
               retry_backoff: Backoff | float | None = None,
               timeout: float | None = None) -> Any:
        """Call `func(run)` once when a run ends, whatever its status (after
        on_failure). Use as `@job.on_end` or `@job.on_end(retries=...)`."""
        return self._hook(hooks.ON_END, func, retries, retry_backoff, timeout)

    def _hook(self, hook_id: str, func: Optional[Hook], retries: int,
              retry_backoff: Backoff | float | None, timeout: float | None) -> Any:
        def register(function: Hook) -> Hook:
            if hook_id in self._hooks:
                name = hooks.NAMES[hook_id]
                raise DefinitionError(
                    f"job {self.name!r} already has an {name} hook "
                    f"({getattr(self._hooks[hook_id].func, '__name__', '?')}); a job has "
                    f"one: call what else must run from it", hook_id)
            self._hooks[hook_id] = hooks.hook_spec(
                hook_id, function, job_name=self.name, retries=retries,
                retry_backoff=retry_backoff, timeout=timeout)
            self._dag = None
            self._engine = None
            return function

        return register if func is None else register(func)

    def _hook_specs(self) -> list[TaskSpec]:
        """Every hook the job's runs may have: its own, and the completion callback."""
        return [*self._hooks.values(), callbacks.spec(self.name)]
