"""The oracle for hooks (core/hooks.py): on_failure and on_end, once, after the end.

A scenario with `hooks` gives the job both hooks. Their bodies log each
call (which attempt, whether the run had ended) in `Harness.hook_bodies`;
on_failure's first attempt raises when the scenario says so. After the
run, `check` wants: each hook that applies ran and its success committed
once (a body may run again only after its executor died), one that does
not apply (on_failure after a success) SKIPPED, no hook body before the
run's final status committed, on_end only after on_failure ended, and no
hook left pending. The commit-by-commit oracle (oracle.py) lets the commit
that ends the run (or ends a hook) also queue the next hook, and the run
record take `hooks_pending` after its end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from function_flow.core import hooks
from function_flow.core.graph import Backoff, TaskSpec
from function_flow.core.records import RunStatus, TaskStatus

from .scenario import LEASE
from .workflow import PlannedFailure

if TYPE_CHECKING:
    from .runner import Harness

Q, R, S, F, SK = (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.SUCCEEDED,
                  TaskStatus.FAILED, TaskStatus.SKIPPED)


def hook_specs(h: "Harness") -> list[TaskSpec]:
    """The job's two hooks, each a body that logs into `h` (one retry, LEASE timeout)."""
    def body(hook_id: str) -> Callable[[Any], None]:
        def run_hook(run: Any) -> None:
            record = h.raw_store.get_tasks(h.run_id, [hook_id])[0]
            key = (hook_id, record.attempt)
            with h.body_lock:
                if key in h.hook_bodies:
                    h.recorder.violation(f"{hook_id} attempt {record.attempt} started twice")
                h.hook_bodies[key] = {"outcome": "started", "ended": h.recorder.final_seq,
                                      "status": run.status, "start": h.clock.now()}
            if hook_id == hooks.ON_FAILURE and h.scenario.hook_fails and record.attempt == 1:
                h.hook_bodies[key]["outcome"] = "raised"
                raise PlannedFailure(f"{hook_id} fails attempt 1 on purpose")
            h.hook_bodies[key]["outcome"] = "ok"
            h.hook_bodies[key]["expired"] = h.clock.now() >= h.hook_bodies[key]["start"] + LEASE
        return run_hook

    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0)
    return [hooks.hook_spec(hook_id, body(hook_id), job_name="prop", retries=1,
                            retry_backoff=backoff, timeout=LEASE)
            for hook_id in (hooks.ON_FAILURE, hooks.ON_END)]


def side_writes(status: dict[str, Any], writes: list[tuple]) -> set[str]:
    """Hooks a commit queues or skips besides its own task (the run's end, a hook's)."""
    if not any(w[0] == "run" for w in writes):
        return set()
    return {w[1] for w in writes if w[0] == "task" and hooks.is_hook(w[1])
            and w[2].get("status") in (Q.value, SK.value) and status.get(w[1]) is not R
            and w[2].get("attempt", 1) == 1}


def check(h: "Harness") -> list[str]:
    if not h.scenario.hooks:
        return []
    problems = []
    run = h.raw_store.get_run(h.run_id)
    assert run is not None
    records = {t.task_id: t for t in h.raw_store.get_tasks(h.run_id, list(hooks.ORDER))}
    dead_any = h.crash_count() > 0
    if run.hooks != [hooks.ON_FAILURE, hooks.ON_END]:
        problems.append(f"run lists hooks {run.hooks}")
    if run.hooks_pending:
        problems.append("hooks still pending after the run and its messages are spent")
    for hook_id in (hooks.ON_FAILURE, hooks.ON_END):
        record = records.get(hook_id)
        if record is None:
            problems.append(f"{hook_id} has no record")
            continue
        applies = hooks.applies(hook_id, run.status)
        if not applies:
            if record.status is not SK:
                problems.append(f"{hook_id} is {record.status.value} after a "
                                f"{run.status.value} run, expected SKIPPED")
            if any(k[0] == hook_id for k in h.hook_bodies):
                problems.append(f"{hook_id} ran after a {run.status.value} run")
            continue
        if record.status not in (S, F) or (record.status is F and not dead_any):
            problems.append(f"{hook_id} ended {record.status.value} (attempt "
                            f"{record.attempt}): {record.error}")
        problems.extend(_bodies_once(h, hook_id, record.status is S))
    for (hook_id, attempt), body in h.hook_bodies.items():
        if body["ended"] is None:
            problems.append(f"{hook_id} attempt {attempt} ran before the run ended")
        if body["status"] is not run.status or run.status is RunStatus.RUNNING:
            problems.append(f"{hook_id} attempt {attempt} was told the run is "
                            f"{body['status']}, it ended {run.status.value}")
    problems.extend(_in_order(h, run))
    return problems


def _bodies_once(h: "Harness", hook_id: str, succeeded: bool) -> list[str]:
    """Each hook succeeded once; a body ran again only after its executor died."""
    rec = h.recorder
    committed = {tr.old_attempt: tr.new for tr in rec.transitions
                 if tr.task_id == hook_id and tr.old is R}
    wins = [a for a, new in committed.items() if new is S]
    problems = []
    if succeeded and len(wins) != 1:
        problems.append(f"{hook_id}: {len(wins)} committed successes")
    for (t, attempt), body in h.hook_bodies.items():
        if t != hook_id:
            continue
        dead = (t, attempt) in h.crashed_deliveries or body.get("expired")
        if body["outcome"] == "ok" and committed.get(attempt) is not S and not dead:
            problems.append(f"{t} attempt {attempt}: body succeeded but its success "
                            "never committed, and its executor did not crash")
        if (t, attempt) not in rec.claim_seq:
            problems.append(f"{t} attempt {attempt}: body ran without a committed claim")
    if succeeded and wins and h.hook_bodies.get((hook_id, wins[0]), {}).get("outcome") != "ok":
        problems.append(f"{hook_id}: success of attempt {wins[0]} committed without a "
                        "successful body")
    return problems


def _in_order(h: "Harness", run: Any) -> list[str]:
    """on_end's first claim comes after on_failure's final commit."""
    if run.status is not RunStatus.FAILED:
        return []
    rec = h.recorder
    failure_end = [tr.seq for tr in rec.transitions
                   if tr.task_id == hooks.ON_FAILURE and tr.new in (S, F)]
    end_claims = [seq for (t, _), seq in rec.claim_seq.items() if t == hooks.ON_END]
    if failure_end and end_claims and min(end_claims) < failure_end[0]:
        return [f"on_end claimed at commit {min(end_claims)}, before on_failure ended "
                f"at commit {failure_end[0]}"]
    return []
