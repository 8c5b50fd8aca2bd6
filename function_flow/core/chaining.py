"""A chain's next task, claimed in the commit of the completion that queued it.

When a task's success queues exactly one dependent and does nothing else
(no join to look at, no slot to fill, no run to end: a chain's step), and
the bus would keep that message for this very thread to handle next
(`Bus.keeps_next`: the local bus's worker outside a body), and the store
can commit several transactions as one (`Store.commits_together`: SQLite's
single writer can, Firestore cannot), the completion and the dependent's
claim are two transactions, each a compare-and-set of its own task's
record as before, committed together: one commit and no message per chain
step instead of two and one.

Nothing acts on either before that commit: the claimed attempt is kept
here and run by `deliver`, after the completion's delivery returns (so a
chain of 10,000 tasks runs in a loop, not 10,000 frames deep). A process
killed before the commit loses both transactions (the completed task is
found RUNNING, as when it dies before recording a result); one killed
after it leaves a claimed attempt whose executor died, which its lease
finds, as after any claim. Only a delivery through `deliver` claims ahead:
a completion from an event or a lease check publishes the message as usual.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from function_flow import tracing
from function_flow.core.records import MessageKind, TaskRecord

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.transitions import Step

logger = logging.getLogger("function_flow.engine")

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
    """Inside `together`: claims the one task a committed-to-be step queues."""

    def __init__(self, engine: "Engine", claims: list[tuple[Claim, Any]] | None) -> None:
        self.engine = engine
        self.claims = claims

    def claim_next(self, step: "Step | None") -> None:
        if self.claims is None or step is None or not _queues_only_one(step):
            return
        message = step.messages[0]
        try:
            claim = self.engine.claim(message.run_id, message.task_id, message.attempt)
        except Exception:  # noqa: BLE001 -- rolled back alone: the message goes as usual
            logger.warning("run %s task %s: claiming it with its predecessor's completion "
                           "failed; sending it instead", message.run_id, message.task_id,
                           exc_info=True)
            return
        step.messages = []
        self.claims.append((claim, tracing.sender()))


@contextlib.contextmanager
def together(engine: "Engine") -> Iterator[_Ahead]:
    """A completion's transaction, and maybe its successor's claim, in one commit."""
    claims = getattr(_local, "claims", None)  # None outside `deliver`
    block = None if claims is None or not engine.bus.keeps_next() \
        else engine.store.commits_together()
    if block is None:
        yield _Ahead(engine, None)
        return
    with block:
        yield _Ahead(engine, claims)


def _queues_only_one(step: "Step") -> bool:
    """The step's only effect is one new attempt to run now (a chain's step)."""
    return (len(step.messages) == 1 and not step.delay and not step.joins
            and not step.fill_slots and step.collect is None and step.run_ended is None
            and step.messages[0].kind is MessageKind.RUN_TASK
            and all(write.kind != "run" for write in step.writes))
