"""Versions: what a run was started with, and whether this definition may advance it.

A workflow is redeployed while runs are in flight. A scheduler that ran
the rest of such a run with the new definition would be guessing: a task
it removed would never run, a changed body would mix two versions in one
run, changed dependencies would make its joins count wrongly. So each run
records its definition: a fingerprint per task (core/fingerprints.py) in
`RunRecord.task_versions`, and their hash in `RunRecord.dag_hash`. Where
the engine acts on a run it calls `check`: an equal hash is the fast path,
one string compare on the run record it read anyway. When they differ,
`difference` says whether the change is one the run would still reach;
if so the run is *blocked*: nothing of it is claimed or advanced, and the
run record says why (`RunRecord.blocked`) until a definition that may
advance it (the one it started with) acts on it again. A change only in
tasks the run has finished does not block it.
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import TYPE_CHECKING, Any, Iterable

from function_flow.core import fingerprints
from function_flow.core.definition import END_TASK_ID
from function_flow.core.fingerprints import changed_parts
from function_flow.core.graph import Dag
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus, Trigger
from function_flow.errors import RunBlockedError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Store, Transaction

logger = logging.getLogger("function_flow.engine")

#: Runs found not to be reached by a definition's changes, kept per process.
ACCEPTED_LIMIT = 10_000
#: Differences listed in a blocked run's reason before "and N more".
SHOWN_DIFFERENCES = 5


class Definition:
    """The fingerprints of one Dag, computed once (see `of`)."""

    def __init__(self, dag: Dag) -> None:
        self.fingerprints = fingerprints.of_dag(dag)
        self.hash = fingerprints.definition_hash(self.fingerprints)
        self.encoded = json.dumps(self.fingerprints, sort_keys=True, separators=(",", ":"))
        self.order = dag.order
        self.deps = {task_id: spec.deps for task_id, spec in dag.tasks.items()}
        #: What runs recorded before fingerprints existed: the graph's shape.
        self.shape = dag.digest()
        #: (run id, the run's definition hash) found compatible: runs only
        #: finish more tasks, so the answer stays true.
        self.accepted: set[tuple[str, str]] = set()


_definitions: "weakref.WeakKeyDictionary[Dag, Definition]" = weakref.WeakKeyDictionary()


def of(dag: Dag) -> Definition:
    """The fingerprints of `dag`, computed on first use and kept with it."""
    definition = _definitions.get(dag)
    if definition is None:
        definition = _definitions[dag] = Definition(dag)
    return definition


def recorded(dag: Dag) -> dict[str, Any]:
    """The run record fields that say which definition a run runs with.

    For a new run, and for a redrive that moves a run to `dag` (the block,
    if any, goes too).
    """
    definition = of(dag)
    return {"dag_hash": definition.hash, "task_versions": definition.encoded,
            "blocked": None, "blocked_by": None}


def parse(run: RunRecord) -> dict[str, str] | None:
    """The fingerprints a run recorded (None: recorded by an earlier function_flow)."""
    if not run.task_versions:
        return None
    try:
        found = json.loads(run.task_versions)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


# ------------------------------------------------------------------ checks


def difference(run: RunRecord, tasks: Iterable[TaskRecord], dag: Dag) -> list[str]:
    """The changes between the run's definition and `dag` that the run would reach.

    Empty when `dag` may advance the run. A change is reached when it is in
    a task the run has not finished: one removed or changed (dependencies,
    settings or body), or added after a task the run has not finished (it
    would be queued by it); a change of the tasks that end the run (the
    sinks) is always reached. A change in a finished task is not: its
    outcome stands, and nothing the run still does depends on its code.
    A finished task whose new dependencies include an unfinished one is.
    """
    definition = of(dag)
    old = parse(run)
    if old is None:  # only the graph's shape was recorded
        return [] if run.dag_hash == definition.shape else [
            "its tasks or dependencies differ (it recorded only its graph's shape)"]
    new = definition.fingerprints
    records = {task.task_id: task for task in tasks}

    def finished(task_id: str) -> bool:
        record = records.get(task_id)
        return record is not None and record.status.is_final

    found: list[str] = []
    added: set[str] = set()  # added tasks the run would queue
    for task_id in definition.order:
        if task_id not in old:
            after = [d for d in definition.deps[task_id]
                     if d in added or (d in old and not finished(d))]
            if after:
                added.add(task_id)
                found.append(f"task {task_id!r} was added after {after[0]!r}, which it "
                             "has not finished")
    for task_id, was in old.items():
        now = new.get(task_id)
        if task_id == END_TASK_ID:
            if now != was:
                found.append("the tasks that end it (those nothing depends on) changed")
        elif now is None:
            if not finished(task_id):
                found.append(f"task {task_id!r} was removed")
        elif now != was:
            changed = changed_parts(was, now)
            waits_for = [d for d in definition.deps[task_id]
                         if d in added or (d in old and not finished(d))]
            if not finished(task_id) or ("dependencies" in changed and waits_for):
                found.append(f"task {task_id!r} changed ({', '.join(changed)})")
    templates = {t.template for t in records.values()
                 if t.template and not t.status.is_final and t.task_id not in old}
    for template in sorted(templates):
        if old.get(template) != new.get(template):
            found.append(f"task {template!r}, which tasks the run added still run as, "
                         f"{'was removed' if template not in new else 'changed'}")
    return found


def reason(run: RunRecord, found: list[str]) -> str:
    """What `status` shows for a blocked run: what changed and what to do."""
    shown = found[:SHOWN_DIFFERENCES]
    more = len(found) - len(shown)
    return (f"run {run.run_id} was started with a different definition: "
            f"{'; '.join(shown)}{f'; and {more} more' if more > 0 else ''}. Deploy the "
            "definition it started with to let it continue, or cancel it and redrive it "
            "on the new one (allowed when the tasks it finished are unchanged and no "
            "task was added or removed)")


def refusal(run: RunRecord, store: "Store", dag: Dag) -> str | None:
    """Why `dag` may not advance `run` (None: it may), changing nothing.

    For a command that only asks (`function-flow resume` on Google Cloud,
    whose deployed functions, not the command, would advance the run).
    """
    if run.status is not RunStatus.RUNNING or run.dag_hash == of(dag).hash:
        return None
    found = difference(run, store.get_tasks(run.run_id), dag)
    return reason(run, found) if found else None


def check(engine: "Engine", run: RunRecord | None, *, record: bool = True) -> str | None:
    """None when `engine`'s definition may advance `run`, else why not.

    O(1) when the run was started with this definition, or was already
    found blocked by it: the run record, which the caller read anyway,
    says so. Otherwise the run's task records are read once (per process
    and definition, when the change is found not to matter). A blocked
    run's record says why, and the first engine that may advance it lifts
    the block. record=False only asks (a `resume` that is refused changes
    nothing).
    """
    if run is None or run.status is not RunStatus.RUNNING:
        return None
    definition = of(engine.dag)
    if run.dag_hash == definition.hash:
        if run.blocked is not None:
            _set_block(engine, run, None, None)
        return None
    if run.blocked is not None and run.blocked_by == definition.hash:
        return run.blocked
    key = (run.run_id, run.dag_hash)
    if key not in definition.accepted:
        found = difference(run, engine.store.get_tasks(run.run_id), engine.dag)
        if found:
            why = reason(run, found)
            if record:
                logger.warning("%s", why)
                _set_block(engine, run, why, definition.hash)
            return why
        if len(definition.accepted) >= ACCEPTED_LIMIT:
            definition.accepted.clear()
        definition.accepted.add(key)
        logger.info("run %s was started with another definition; the changes are in "
                    "tasks it has finished, so it continues with this one", run.run_id)
    if run.blocked is not None:
        _set_block(engine, run, None, None)
    return None


def _set_block(engine: "Engine", run: RunRecord, why: str | None,
               by: str | None) -> None:
    def write(tx: "Transaction") -> None:
        tx.update_run(run.run_id, {"blocked": why, "blocked_by": by})

    engine.store.transact(write)
    run.blocked, run.blocked_by = why, by
    if why is None:
        logger.info("run %s is no longer blocked: this definition may advance it",
                    run.run_id)


def refused(engine: "Engine", run: RunRecord | None, verdict: str, task_id: str,
            attempt: int) -> bool:
    """Whether a scheduling message must leave the run alone (see `check`).

    A claim it made is undone (`withdraw`), and nothing is sent: the
    message is acknowledged, and the run's records say what is left to do.
    """
    if check(engine, run) is None:
        return False
    if verdict == "claimed" and run is not None:
        withdraw(engine, run.run_id, task_id, attempt)
    return True


def admit_event(engine: "Engine", trigger: Trigger, record: bool = True) -> None:
    """Raise RunBlockedError when an event must not complete its attempt yet.

    Only the event carries its outcome, so it is not acknowledged: Pub/Sub
    delivers it again, an HTTP sender gets a 503, until a definition that
    may advance the run handles it. A wait recorded by this very definition
    needs no look at the run.
    """
    if trigger.definition == of(engine.dag).hash:
        return
    why = check(engine, engine.store.get_run(trigger.run_id), record=record)
    if why is not None:
        raise RunBlockedError(why)


def withdraw(engine: "Engine", run_id: str, task_id: str, attempt: int) -> None:
    """Undo a claim of a blocked run: the task is QUEUED again, unrun.

    As a new attempt that counts as interrupted (no retry used up), which
    the poller of a definition that may advance the run sends again; no
    message is sent now, so a blocked run costs nothing while it waits.
    """
    now = engine.clock()

    def undo(tx: "Transaction") -> None:
        task = tx.get_tasks(run_id, [task_id]).get(task_id)
        if task is None or task.status is not TaskStatus.RUNNING or task.attempt != attempt:
            return
        tx.update_task(run_id, task_id, {
            "status": TaskStatus.QUEUED.value, "attempt": attempt + 1,
            "interrupted": task.interrupted + 1, "queued_at": now, "lease_until": None,
            "not_before": None, "started_at": None})

    engine.store.transact(undo, compare_and_set=True)


def redrive_allowed(run: RunRecord, tasks: Iterable[TaskRecord],
                    dag: Dag) -> tuple[bool, str]:
    """Whether `run` may be redriven on `dag`, and if not, why.

    Allowed when every task the run has SUCCEEDED is unchanged in `dag`
    (same dependencies, settings and body): their results are kept, so
    they must be what this definition would have produced. The tasks that
    run again use `dag`; after the redrive the run records it (`recorded`).
    """
    definition = of(dag)
    if run.dag_hash == definition.hash:
        return True, ""
    old = parse(run)
    if old is None:
        if run.dag_hash == definition.shape:
            return True, ""
        return False, (f"run {run.run_id} was started with a different definition whose "
                       "tasks or dependencies differ; redrive it with the definition it "
                       "started with")
    # The run's records are its tasks: a task this definition adds would get
    # none, and one it removes would keep its own, waiting (the run hung).
    declared = definition.fingerprints.keys()
    other_tasks = [f"task {name!r} is new" for name in sorted(declared - old.keys())] + [
        f"task {name!r} was removed" for name in sorted(old.keys() - declared)]
    if other_tasks:
        more = len(other_tasks) - SHOWN_DIFFERENCES
        return False, (f"run {run.run_id} cannot be redriven on this definition: "
                       f"{'; '.join(other_tasks[:SHOWN_DIFFERENCES])}"
                       f"{f'; and {more} more' if more > 0 else ''}; a redrive runs the "
                       "run's own tasks again. Redrive it with the definition it started "
                       "with (changing only tasks that did not succeed), or "
                       "start a new run")
    found = []
    for task in tasks:
        if task.status is not TaskStatus.SUCCEEDED or task.task_id == END_TASK_ID:
            continue
        name = task.template or task.task_id
        was, now = old.get(name), definition.fingerprints.get(name)
        if was is None and now is None:
            continue  # a task the run added, declared by neither definition
        if now is None:
            change = "is no longer defined"
        elif was != now:
            change = f"changed ({', '.join(changed_parts(str(was), now))})"
        else:
            continue
        if name == task.task_id:
            found.append(f"task {name!r} succeeded but {change}")
        else:  # a foreach's item, or a task of an item's copy: kept as it is
            found.append(f"task {name!r} {change}, and its items that succeeded are kept")
    if not found:
        return True, ""
    shown = sorted(set(found))
    more = len(shown) - SHOWN_DIFFERENCES
    return False, (f"run {run.run_id} cannot be redriven on this definition: "
                   f"{'; '.join(shown[:SHOWN_DIFFERENCES])}"
                   f"{f'; and {more} more' if more > 0 else ''}; its results would not be "
                   "what this definition computes. Redrive it with the definition it "
                   "started with, or start a new run")
