"""A chain's next task, claimed in the commit of the completion that queued it.

When a task's success queues exactly one dependent and does nothing else
(no join to look at, no slot to fill, no run to end: a chain's step), and
the bus would keep that message for this very thread to handle next
(`Bus.keeps_next`: the local bus's worker outside a body), and the store's
transactions hold its write lock from their first read to their commit
(`Store.locks_for_writes`: SQLite's single writer does, Firestore's
compare-and-set does not), the completion's transaction reads the dependent with
the task's own record and claims it too: its write takes it WAITING ->
RUNNING at once (LEGAL_TRANSITIONS), the queuing's fields and the claim's
(transitions.claim on the record as queued) merged. One commit, one
transaction and no message per chain step instead of two, two and one.
Where the store has no single writer, the dependent stays out of the
completion's read set (on Firestore a read the commit depends on is
contention), and it is queued and sent as usual.

Nothing acts on the claim before that commit: the claimed attempt is kept
here and run by `deliver`, after the completion's delivery returns (so a
chain of 10,000 tasks runs in a loop, not 10,000 frames deep). The run is
read in that transaction, which holds the write lock until its commit, for
what any claim checks after its commit (a pause or cancel committed before
stops it). A process killed before the commit loses both (the completed
task is found RUNNING, as when it dies before recording a result); one killed
after it leaves a claimed attempt whose executor died, which its lease
finds, as after any claim. Only a delivery through `deliver` claims ahead:
a completion from an event or a lease check publishes the message as usual.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from function_flow import tracing
from function_flow.core import transitions
from function_flow.core.records import MessageKind, TaskRecord, TaskStatus

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Transaction
    from function_flow.core.records import RunRecord
    from function_flow.core.transitions import Step

logger = logging.getLogger("function_flow.engine")

#: How a step's write names one entry of a record's deps_done (ports.Transaction).
DEP_FIELD = "deps_done."

#: Per thread: the claims the delivery in progress runs next (None outside one).
_local = threading.local()


class Claim(NamedTuple):
    """A committed claim transaction, for Engine.after_claim."""

    run_id: str
    task_id: str
    attempt: int
    step: "Step"
    task: TaskRecord | None
    now: float
    since: int
    lease: float
    #: The run as the claim's own transaction read it, if it did (a chain's
    #: step); else Engine.after_claim reads it after the commit.
    run: "RunRecord | None" = None


def deliver(engine: "Engine", run_id: str, task_id: str, attempt: int) -> str:
    """Execute one delivered attempt, then the attempts its completions claimed."""
    outer = getattr(_local, "claims", None)  # a body that delivers messages itself
    _local.claims = claims = []  # (claim, the trace context its message would carry)
    try:
        outcome = engine.execute(run_id, task_id, attempt)
        while claims:
            claim, sender = claims.pop()
            with tracing.resumed(sender):  # its claim span links to its predecessor's
                outcome = engine.after_claim(claim)
        return outcome
    except BaseException:
        for claim, _ in claims:  # committed, never run: put back QUEUED and sent again
            _put_back(engine, claim)
        raise
    finally:
        _local.claims = outer


def _put_back(engine: "Engine", claim: Claim) -> None:
    from function_flow.core import control

    try:
        control.hold(engine, claim.run_id, claim.task_id, claim.attempt)
    except Exception:  # noqa: BLE001 -- its lease finds it
        logger.exception("run %s task %s attempt %d: could not put back a claim",
                         claim.run_id, claim.task_id, claim.attempt)


class _Ahead:
    """Made by `together`: claims, in the completion's own transaction, the one task
    a chain's step queues (a retry queued with no backoff is sent as usual)."""

    def __init__(self, engine: "Engine", claims: list[tuple[Claim, Any]] | None) -> None:
        self.engine = engine
        self.claims = claims
        #: The claim the last run of the transaction's function made (None: none).
        self.pending: Claim | None = None

    def next_of(self, task_id: str, record: TaskRecord | None) -> str | None:
        """The dependent a success of `task_id` may queue and claim at once: its only
        one, of which it is the only dependency (read in the same transaction).
        Asked at the start of each run of the transaction's function."""
        self.pending = None
        if self.claims is None:
            return None
        graph = self.engine.graph
        single = graph.single_dependency_dependents(task_id, record)
        return single[0] if len(single) == 1 \
            and graph.dependents_of(task_id, record) == single else None

    def claim_in(self, step: "Step", tx: "Transaction", run_id: str,
                 dependent: TaskRecord | None, now: float) -> None:
        """Make `step`, a success that queues `dependent` (as read before it), claim it too.

        The dependent's write then takes it WAITING -> RUNNING in the one commit,
        the fields of the claim (transitions.claim) merged into those of its
        queuing, and no message goes. Anything else (no chain's step, a claim
        that would not be taken at once) leaves the step as it is. Before the
        step's writes: the run is read in the same transaction, for what
        Engine.after_claim checks (a single writer's store: that read is as
        late as one after the commit, and cheaper; it is not written, which
        only a store that locks, never one that compares and sets, allows).
        """
        self.pending = None
        if self.claims is None or dependent is None or not _queues_only_one(step):
            return
        message = step.messages[0]
        index = next((i for i, write in enumerate(step.writes) if write.kind == "task"
                      and write.key == dependent.task_id), None)
        if message.task_id != dependent.task_id or index is None:
            return
        queued = _as_written(dependent, step.writes[index].value)
        spec = self.engine.graph.spec(queued.task_id, queued)
        if spec is None:
            return
        lease = self.engine.lease_of(spec)
        claim = transitions.claim(queued, run_id, message.attempt, now, lease)
        if claim.verdict != "claimed":
            return
        step.writes[index] = transitions.Write("task", queued.task_id,
                                               {**step.writes[index].value,
                                                **claim.writes[0].value})
        step.messages = []
        self.pending = Claim(run_id, queued.task_id, message.attempt, claim, queued, now,
                             tracing.now(), lease, tx.get_run(run_id))

    def keep(self) -> None:
        """The transaction committed: its claim runs after this delivery's attempt."""
        if self.pending is not None and self.claims is not None:
            self.claims.append((self.pending, tracing.sender()))
        self.pending = None


def together(engine: "Engine") -> _Ahead:
    """For a completion's transaction, which may claim its successor too."""
    claims = getattr(_local, "claims", None)  # None outside `deliver`
    if claims is None or not engine.bus.keeps_next() or not engine.store.locks_for_writes():
        return _Ahead(engine, None)
    return _Ahead(engine, claims)


def _as_written(record: TaskRecord, fields: dict[str, Any]) -> TaskRecord:
    """`record` with a step's write of `fields` applied (as the store would merge it)."""
    written = object.__new__(type(record))  # a copy, without copy.copy's cost (5 us)
    written.__dict__.update(record.__dict__, deps_done=dict(record.deps_done))
    for name, value in fields.items():
        if name.startswith(DEP_FIELD):
            written.deps_done[name[len(DEP_FIELD):]] = value
        elif name == "status":
            written.status = TaskStatus(value)
        else:
            setattr(written, name, value)
    return written


def _queues_only_one(step: "Step") -> bool:
    """The step's only effect is one new attempt to run now (a chain's step)."""
    return (len(step.messages) == 1 and not step.delay and not step.joins
            and not step.fill_slots and step.collect is None and step.run_ended is None
            and step.messages[0].kind is MessageKind.RUN_TASK
            and all(write.kind != "run" for write in step.writes))
