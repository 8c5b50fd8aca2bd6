"""The attempt a worker handles next, claimed in the commit of a completion.

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

Any other success (a fan-out's member, a foreach's item) may claim ahead
too, on the same stores: the bus reserves for this worker the RUN_TASK
message of the same run it would handle next (`Bus.reserve_next`: the
local bus's kept message, or its queue's head), the transaction reads
that message's task with the task's own record and, if transitions.claim
takes the attempt at once, writes the claim (QUEUED -> RUNNING) in the
same commit; the message is then spent (`Bus.settle_next`), else the
worker handles it as usual. Only a success that writes neither the run
nor that task claims so: the claim then reads nothing the completion
writes, so the one commit is the completion's followed at once by the
claim's. A fan-out's member then costs one transaction, and its message
is dropped unhandled. Such a claim's run is read when it runs, as after
any claim: the completion's follow-up comes first and may end the run (a
foreach's collector failing it), and then nothing new may start.

Nothing acts on the claim before that commit: the claimed attempt is kept
here and run by `deliver`, after the completion's delivery returns (so a
chain of 10,000 tasks runs in a loop, not 10,000 frames deep). A chain's
step reads the run in that transaction, which holds the write lock until
its commit, for what any claim checks after its commit (a pause or cancel
committed before stops it; the step has no follow-up that could end it). A
process killed before the commit loses both (the completed task is found
RUNNING, as when it dies before recording a result); one killed after it
leaves a claimed attempt whose executor died, which its lease finds, as
after any claim. Only a delivery through `deliver` claims ahead:
a completion from an event or a lease check publishes the message as usual.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from function_flow import tracing
from function_flow.core import transitions
from function_flow.core.messages import Message, MessageKind
from function_flow.core.records import TaskRecord, TaskStatus
from function_flow.core.step import Write

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Transaction
    from function_flow.core.records import RunRecord
    from function_flow.core.step import Step

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
    """Made by `together`: claims, in a completion's own transaction, the attempt
    its worker handles next: the one task a chain's step queues (a retry
    queued with no backoff is sent as usual), or that of the message the bus
    reserved for this worker."""

    def __init__(self, engine: "Engine", claims: list[tuple[Claim, Any]] | None,
                 next_id: str | None = None,
                 reserved: tuple[Message, Any] | None = None) -> None:
        self.engine = engine
        self.claims = claims
        #: The task the transaction reads besides the completed one: a chain's
        #: next, or the reserved message's (None: none).
        self.next_id = next_id if claims is not None else None
        #: The message the bus reserved for this worker, and its trace context.
        self.reserved = reserved
        #: The claim the last run of the transaction's function made (None: none).
        self.pending: Claim | None = None
        self.spent = False  # the reserved message's attempt was claimed and committed

    def begin(self) -> str | None:
        """The task to read with the completed one; asked at the start of each run
        of the transaction's function."""
        self.pending = None
        return self.next_id

    def claim_in(self, step: "Step", tx: "Transaction", run_id: str,
                 record: TaskRecord | None, now: float) -> None:
        """Make `step`, a success, claim the task `begin` named too (`record`, as read
        before it), or leave it as it is (no claim taken at once, or one that
        would read what the step writes). Before the step's writes, a chain's
        step reads the run in the same transaction, for what Engine.after_claim
        checks (a single writer's store: that read is as late as one after the
        commit, since such a step has no follow-up, and cheaper; it is not
        written, which only a store that locks, never one that compares and
        sets, allows)."""
        self.pending = None
        if self.claims is None or record is None:
            return
        if self.reserved is None:
            self._chain_in(step, tx, run_id, record, now)
            return
        attempt = self.reserved[0].attempt
        if step.run_ended is not None or any(write.kind == "run" or write.kind == "task"
                                             and write.key == record.task_id
                                             for write in step.writes):
            return
        # The run is not read here: the completion's follow-up, which runs
        # before this claim does, may end it (a foreach's collector failing
        # it, say), so Engine.after_claim reads it then, as after any claim.
        claim = self._claimed(record, run_id, attempt, now)
        if claim is not None:
            step.writes.append(claim.step.writes[0])
            self.pending = claim

    def _chain_in(self, step: "Step", tx: "Transaction", run_id: str,
                  dependent: TaskRecord, now: float) -> None:
        """A chain's step that queues `dependent`: its write takes it WAITING ->
        RUNNING, the fields of the claim merged into those of its queuing, and
        no message goes."""
        if not _queues_only_one(step):
            return
        message = step.messages[0]
        index = next((i for i, write in enumerate(step.writes) if write.kind == "task"
                      and write.key == dependent.task_id), None)
        if message.task_id != dependent.task_id or index is None:
            return
        queued = _as_written(dependent, step.writes[index].value)
        claim = self._claimed(queued, run_id, message.attempt, now)
        if claim is None:
            return
        step.writes[index] = Write("task", queued.task_id,
                                               {**step.writes[index].value,
                                                **claim.step.writes[0].value})
        step.messages = []
        self.pending = claim._replace(run=tx.get_run(run_id))

    def _claimed(self, task: TaskRecord, run_id: str, attempt: int,
                 now: float) -> Claim | None:
        """The claim of `attempt` of `task` (as it will be before the claim's write),
        if it is taken at once (transitions.claim's "claimed")."""
        spec = self.engine.graph.spec(task.task_id, task)
        if spec is None:
            return None
        lease = self.engine.lease_of(spec)
        step = transitions.claim(task, run_id, attempt, now, lease)
        if step.verdict != "claimed":
            return None
        return Claim(run_id, task.task_id, attempt, step, task, now, tracing.now(), lease)

    def keep(self) -> None:
        """The transaction committed: its claim runs after this delivery's attempt."""
        if self.pending is not None and self.claims is not None:
            sender = tracing.sender() if self.reserved is None else self.reserved[1]
            self.claims.append((self.pending, sender))
            self.spent = self.reserved is not None
        self.pending = None

    def landed(self) -> None:
        """The commit an error left unknown landed after all (completion._complete_again),
        and so did its claim: it runs too, with its run read then (the tries
        since may have missed a pause). A reserved message, put back by then,
        finds the attempt claimed."""
        if self.pending is not None:
            self.pending = self.pending._replace(run=None)
        self.keep()

    def __enter__(self) -> "_Ahead":
        return self

    def __exit__(self, *exc: object) -> None:
        """The message reserved, if any, is spent or handled as usual; nothing
        claims it any more (a retry of the transaction reads no other task)."""
        if self.reserved is not None:
            self.engine.bus.settle_next(self.spent)
        self.next_id = None


def together(engine: "Engine", run_id: str, task_id: str, record: TaskRecord | None,
             ok: bool) -> _Ahead:
    """For the transaction that completes `task_id` (`record`: as claimed, if known;
    `ok`: a success), which may claim the attempt this worker runs next.
    Settle its reservation with `with`, around the transaction."""
    claims = getattr(_local, "claims", None)  # None outside `deliver`
    if claims is None or not ok or not engine.store.locks_for_writes():
        return _Ahead(engine, None)
    if engine.bus.keeps_next():
        graph = engine.graph
        single = graph.single_dependency_dependents(task_id, record)
        if len(single) == 1 and graph.dependents_of(task_id, record) == single:
            return _Ahead(engine, claims, single[0])
    reserved = engine.bus.reserve_next(run_id)
    if reserved is None:
        return _Ahead(engine, None)
    return _Ahead(engine, claims, reserved[0].task_id, reserved)


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
