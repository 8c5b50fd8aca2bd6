"""Foreach: one task instance per item of another task's result.

When a foreach task (`TaskSpec.foreach`) is claimed, its attempt adds to
the run's graph, as records (graph.RunGraph reads their edges):

- one item task per item, `node[i]`, running the task's body on the item;
- lanes for `max_concurrency` C: item i waits for item i - C under the
  rule all_done, so at most C items run at once with no counter at all;
- group records `__group__node[g]`, each joining up to GROUP_SIZE items,
  and one `__collect__node` joining the groups. No record is written by
  every item: a group by its items, the collector by its groups. Each
  item's completion costs the same whatever the number of items.

The attempt then stays RUNNING. When the collector's join completes, the
sum of the groups' counts decides the attempt: it succeeds (with a summary;
`Job.get_task_result` assembles the items' results, ordered by item for a
list and keyed for a mapping) or fails when more items failed than the
task tolerates. Adding the records is idempotent, so an attempt whose
process died is simply expanded again.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping

from function_flow.core.definition import TaskSpec
from function_flow.core.records import ITEM_ROLES, RunRecord, TaskRecord, TaskStatus
from function_flow.core.step import Step

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Transaction

logger = logging.getLogger("function_flow.engine")

#: Items per group record: what one record is written by, at most.
GROUP_SIZE = 100
#: Records added per transaction (Firestore allows 500 writes in one).
CHUNK = 400
#: How long a foreach's attempt may wait for its items when the task sets
#: no timeout (its items each have their own timeout and lease).
DEFAULT_WAIT_SECONDS = 30 * 24 * 3600.0


def item_id(node: str, index: int) -> str:
    return f"{node}[{index}]"


def group_id(node: str, number: int) -> str:
    return f"__group__{node}[{number}]"


def collector_id(node: str) -> str:
    return f"__collect__{node}"


def summary(node: str, keys: list[Any], mapping: bool) -> dict[str, Any]:
    """A foreach's stored result: what `Job.get_task_result` needs to assemble it."""
    return {"__foreach__": node, "items": len(keys), "mapping": mapping}


def is_summary(value: Any) -> bool:
    return isinstance(value, dict) and "__foreach__" in value and "items" in value


def items_of(spec: TaskSpec, value: Any) -> tuple[list[Any], list[Any], bool]:
    """(keys, items, is_mapping) of the result a foreach runs over; ValueError if unfit."""
    assert spec.foreach is not None
    over = spec.foreach.over
    if isinstance(value, dict):
        keys, items, mapping = list(value), list(value.values()), True
    elif isinstance(value, list):
        keys, items, mapping = list(range(len(value))), value, False
    else:
        raise ValueError(
            f"foreach task {spec.task_id!r} runs over the result of {over!r}, which must be "
            f"a list or a mapping, but it is {type(value).__name__}")
    if len(items) > spec.foreach.max_items:
        raise ValueError(
            f"foreach task {spec.task_id!r}: the result of {over!r} has {len(items):,} items, "
            f"more than its max_items ({spec.foreach.max_items:,}); raise max_items or "
            "split the work")
    return keys, items, mapping


def plan(engine: "Engine", run_id: str, spec: TaskSpec, attempt: int, keys: list[Any],
         items: list[Any]) -> list[TaskRecord]:
    """Every record the foreach adds: items (the first of each lane queued), groups,
    the collector. Items too large for a record go to blobs (payloads.py)."""
    assert spec.foreach is not None
    node, count = spec.task_id, len(items)
    slots = item_slots(engine, spec, count)
    # With concurrency slots, at most `slots` items run at once anyway:
    # as many lanes, so each item hands its slot to its lane's next item
    # (no query for a READY task per item: on the emulator a query scans
    # every record of the run, which made a foreach's time grow as N^2).
    lanes = min(spec.foreach.max_concurrency or count, count, slots or count)
    groups = math.ceil(count / GROUP_SIZE)
    queued = TaskStatus.READY if slots else TaskStatus.QUEUED
    now = engine.clock()
    records = []
    for index, (key, item) in enumerate(zip(keys, items)):
        after = index + lanes
        stored = engine.payloads.store(f"item {key!r} of foreach task {node!r}", item,
                                       f"runs/{run_id}/items/{node}/{index}.json")
        record = TaskRecord(
            task_id=item_id(node, index), template=node, role="item", item=stored,
            item_key=key, trigger_rule="all_done",
            deps=[item_id(node, index - lanes)] if index >= lanes else [],
            dependents=([item_id(node, after)] if after < count else [])
            + [group_id(node, index // GROUP_SIZE)])
        if spec.foreach.dag is not None:
            records += _instance(spec, index, lanes, count, record)
        elif index < lanes:
            _queue(record, queued, now)
        records.append(record)
    for number in range(groups):
        members = range(number * GROUP_SIZE, min(count, (number + 1) * GROUP_SIZE))
        records.append(TaskRecord(task_id=group_id(node, number), template=node,
                                  role="group", trigger_rule="all_done",
                                  deps=[item_id(node, i) for i in members],
                                  dependents=[collector_id(node)]))
    records.append(TaskRecord(task_id=collector_id(node), template=node, role="collect",
                              trigger_rule="all_done", node_attempt=attempt,
                              deps=[group_id(node, g) for g in range(groups)],
                              dependents=[]))
    for record in records:
        if record.role == "member" and not record.deps:
            _queue(record, queued, now)
    # Groups and collector first: an item queued by an expansion cut short
    # (and sent by the poller) must find the group it writes into.
    itemized = [r for r in records if r.role in ITEM_ROLES]
    return [r for r in records if r.role not in ITEM_ROLES] + itemized


def item_slots(engine: "Engine", spec: TaskSpec, count: int) -> int:
    """The concurrency slots `count` items of foreach `spec` take turns in: the
    run's, or 0 when the graph, with this foreach at `count` items, can never
    run more than max_parallel_tasks at once (Dag.width_bound_with).

    A foreach as wide as max_parallel_tasks then queues every item at once,
    as if the run had no slots: slots would cost each item a transaction to
    take one, and its completion two queries for a READY task that never
    comes (and every completer raced the others for the same free slots).
    """
    dag = engine.graph.dag
    if engine.slots and spec.task_id in dag.tasks \
            and dag.width_bound_with(spec.task_id, count) <= engine.slots:
        return 0
    return engine.slots


def _queue(record: TaskRecord, queued: TaskStatus, now: float) -> None:
    record.status = queued
    if queued is TaskStatus.QUEUED:
        record.attempt, record.queued_at = 1, now


def _instance(spec: TaskSpec, index: int, lanes: int, count: int,
              record: TaskRecord) -> list[TaskRecord]:
    """Item `index`'s own copy of the foreach's sub-DAG: tasks `node[i]/t`.

    The item's record becomes the instance's join (its sinks' results, as a
    sub-DAG node's join), and the lane runs through it: the instance's roots
    wait, under all_done, for the join of the item `lanes` places before.
    """
    assert spec.foreach is not None and spec.foreach.dag is not None
    sub, node = spec.foreach.dag, spec.task_id
    prefix = record.task_id + "/"
    roots = [t for t in sub.order if not sub.tasks[t].deps]
    record.deps = [prefix + sink for sink in sub.sinks]
    record.trigger_rule = "none_failed"  # a branch inside that skips a sink is no failure
    after = index + lanes
    successors = [f"{item_id(node, after)}/{root}" for root in roots] if after < count else []
    record.dependents = successors + [group_id(node, index // GROUP_SIZE)]
    members = []
    for task_id in sub.order:
        inner = sub.tasks[task_id]
        lane = [item_id(node, index - lanes)] if not inner.deps and index >= lanes else []
        members.append(TaskRecord(
            task_id=prefix + task_id, template=f"{node}/{task_id}", role="member",
            item=record.item, item_key=record.item_key,
            trigger_rule="all_done" if lane else None,
            deps=[prefix + dep for dep in inner.deps] or lane,
            dependents=[prefix + d for d in sub.dependents[task_id]] or [record.task_id]))
    return members


def lane_successor(record: TaskRecord) -> str | None:
    """The item that waits for `record`, a foreach item, in its lane (None if none)."""
    if record.role != "item":
        return None
    return next((d for d in record.dependents or [] if not d.startswith("__")), None)


def joins_instance(spec: TaskSpec, record: TaskRecord) -> bool:
    """Whether `record` is the join of one item's sub-DAG (see `_instance`)."""
    return record.role == "item" and spec.foreach is not None and spec.foreach.dag is not None


def instance_result(engine: "Engine", run_id: str, record: TaskRecord) -> Any:
    """One item's result when it runs a sub-DAG: its sink's result, or
    {sink id: result} when it has several (as a sub-DAG node's join)."""
    prefix = record.task_id + "/"
    found = {t.task_id: t for t in engine.store.get_tasks(run_id, list(record.deps or []))}
    results = {}
    for dep in record.deps or []:
        task = found.get(dep)
        value = task.result if task is not None and task.status is TaskStatus.SUCCEEDED \
            else None
        results[dep[len(prefix):]] = engine.payloads.load(value, f"the result of {dep!r}")
    return next(iter(results.values())) if len(results) == 1 else results


def run_attempt(engine: "Engine", run: RunRecord, spec: TaskSpec, attempt: int) -> str:
    """A foreach task's attempt: add its items to the run, or fail saying why not."""
    try:
        value = expand(engine, run, spec, attempt)
    except Exception as exc:  # a result it cannot run over, a store error
        return engine.complete(run.run_id, spec.task_id, attempt, ok=False, cause=exc,
                               error=f"{type(exc).__name__}: {exc}")
    if value is None:
        return "waiting"
    return engine.complete(run.run_id, spec.task_id, attempt, ok=True, value=value)


def expand(engine: "Engine", run: RunRecord, spec: TaskSpec, attempt: int) -> Any:
    """Run a claimed foreach attempt: add its records and start its items.

    Returns the attempt's result when there is nothing to wait for (no
    items), else None: the attempt stays RUNNING until `collect`.
    Raises ValueError (the attempt fails) when the result is unfit.
    """
    assert spec.foreach is not None
    run_id, node = run.run_id, spec.task_id
    source = engine.store.get_tasks(run_id, [spec.foreach.over])
    if source and source[0].status is not TaskStatus.SUCCEEDED:  # its trigger rule let it run
        raise ValueError(
            f"foreach task {node!r} runs over the result of {spec.foreach.over!r}, which "
            f"has none: it ended {source[0].status.value}")
    value = engine.payloads.load(source[0].result if source else None,
                                 f"the result of task {spec.foreach.over!r}")
    keys, items, mapping = items_of(spec, value)
    if not items:
        return {} if mapping else []
    records = plan(engine, run_id, spec, attempt, keys, items)
    fresh = add_missing(engine, run_id, records)
    wait = spec.timeout or DEFAULT_WAIT_SECONDS

    def hold(tx: "Transaction") -> bool:
        task = tx.get_tasks(run_id, [node]).get(node)
        if task is None or task.status is not TaskStatus.RUNNING or task.attempt != attempt:
            return False
        # The foreach itself runs nothing while its items do: its concurrency
        # slot goes to them (with max_parallel_tasks 1 they would wait forever).
        tx.update_task(run_id, node, {"lease_until": engine.clock() + wait, "slot": None,
                                      "result": summary(node, keys, mapping)})
        if task.slot is not None:
            tx.set_slot(run_id, task.slot, None)
        # Expanded again by a later attempt (its process died): the collector
        # ends this attempt now.
        tx.update_task(run_id, collector_id(node), {"node_attempt": attempt})
        return True

    if not engine.store.transact(hold, compare_and_set=False):
        ended = engine.store.get_run(run_id)
        if ended is not None and ended.status.is_final:
            # The run ended (and its leftovers were ended) while this attempt
            # added its items: they are leftovers too.
            from function_flow.core import leftovers

            leftovers.retire(engine, run_id, ended.status)
        return None
    # The slot the foreach held is free now (hold), whether its items take
    # slots or not: a READY task elsewhere in the run may take it.
    step = Step("expanded", fill_slots=bool(engine.slots))
    if fresh:  # the plan says what it queued
        step.messages += [_message(run_id, r) for r in records
                          if r.status is TaskStatus.QUEUED]
    else:
        # Expanded again (a process died, or `redrive` restarted the failed
        # items): send what is queued, and decide, as any join, an item that
        # waits for nothing but its turn, which came.
        found = {t.task_id: t for t in engine.store.get_tasks(
            run_id, [r.task_id for r in records if r.role in ITEM_ROLES])}
        for record in found.values():
            if record.status is TaskStatus.QUEUED:
                step.messages.append(_message(run_id, record))
            elif record.status is TaskStatus.WAITING and all(
                    d in found and found[d].status.is_final for d in record.deps or []):
                step.joins += (record.task_id,)
    engine.follow_up(run_id, step)
    logger.info("run %s: foreach task %s attempt %d fans out into %d items",
                run_id, node, attempt, len(items))
    return None


def _message(run_id: str, record: TaskRecord) -> Any:
    from function_flow.core.messages import Message

    return Message(run_id, record.task_id, record.attempt)


def add_missing(engine: "Engine", run_id: str, records: list[TaskRecord]) -> bool:
    """Add the records the run does not have yet, CHUNK per transaction.

    The first expansion finds none, so it adds before it reads (a read per
    item saved); only a chunk that already exists in part is read. True if
    every record was added here (none existed)."""
    from function_flow.core.ports import RecordExistsError

    fresh = True
    for start in range(0, len(records), CHUNK):
        chunk = missing = records[start:start + CHUNK]
        for _ in range(3):
            try:
                engine.store.transact(lambda tx, m=missing: [tx.add_task(run_id, r)
                                                             for r in m])
                break
            except RecordExistsError:  # expanded before, or meanwhile: look
                fresh = False
                have = {t.task_id for t in engine.store.get_tasks(
                    run_id, [r.task_id for r in chunk])}
                missing = [r for r in chunk if r.task_id not in have]
                if not missing:
                    break
    return fresh


def collect(engine: "Engine", run_id: str, node: str, attempt: int) -> str:
    """Every item of the foreach ended: end its attempt by the failures it tolerates."""
    spec = engine.graph.spec(node)
    if spec is None or spec.foreach is None:
        return "unknown_task"
    found = engine.store.get_tasks(run_id, [collector_id(node)])
    groups = found[0].deps or [] if found else []
    counts = {"succeeded": 0, "failed": 0, "skipped": 0}
    for group in engine.store.get_tasks(run_id, groups):
        for name in counts:
            counts[name] += int((group.result or {}).get(name, 0))
    total = sum(counts.values())
    node_record = engine.store.get_tasks(run_id, [node])
    value = node_record[0].result if node_record else None
    if node_record and node_record[0].status is TaskStatus.RUNNING:
        attempt = node_record[0].attempt  # expanded again by a later attempt
    if spec.foreach.tolerates(counts["failed"], total):
        return engine.complete(run_id, node, attempt, ok=True, value=value)
    allowed = f"{spec.foreach.tolerated_failures}"
    if spec.foreach.tolerated_failure_percentage is not None:
        allowed += f" or {spec.foreach.tolerated_failure_percentage}%"
    return engine.complete(
        run_id, node, attempt, ok=False, retry=False,
        error=(f"ForEachFailed: {counts['failed']} of {total} items of foreach task "
               f"{node!r} failed, more than the {allowed} it tolerates; see them with "
               f"function-flow status {run_id}"))


def is_summary_of(task_id: str, value: Any) -> bool:
    """Whether `value` is the summary the foreach `task_id` stored as its result."""
    return is_summary(value) and value["__foreach__"] == task_id


def assemble(node: str, value: dict[str, Any], records: Mapping[str, TaskRecord],
             load: Callable[[Any, str], Any]) -> Any:
    """A foreach's results from its summary and its items' records: a list in
    item order, or a mapping by key (None for items that did not succeed).
    `load(stored, what)` turns a stored result into the value shown."""
    pairs = []
    for index in range(int(value.get("items", 0))):
        task_id = item_id(node, index)
        record = records.get(task_id)
        result = None
        if record is not None and record.status is TaskStatus.SUCCEEDED:
            result = load(record.result, f"the result of {task_id!r}")
        pairs.append((record.item_key if record is not None else index, result))
    if value.get("mapping"):
        return dict(pairs)
    return [result for _, result in pairs]


def as_stored(stored: Any, _what: str) -> Any:
    """The `load` of `assemble` that keeps each result as stored (a blob as its
    reference): what the callback sends and `status --json` shows."""
    return stored


def results(engine: "Engine", run_id: str, node: str, value: dict[str, Any], *,
            load: bool = True) -> Any:
    """A foreach's results, read from the store (see `assemble`). load=False
    keeps large values as their references (what the callback sends)."""
    ids = [item_id(node, i) for i in range(int(value.get("items", 0)))]
    records = {t.task_id: t for t in engine.store.get_tasks(run_id, ids)}
    return assemble(node, value, records,
                    engine.payloads.load if load else as_stored)
