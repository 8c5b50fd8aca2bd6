"""Human approvals: the token a waiting task hands out, and deciding with it.

A task body returns `futures.Approval(...)` after sending its `token` to a
person (an e-mail, a chat message). The attempt then waits like any Future;
its trigger id is the SHA-256 of the token, and only that hash is stored:
a copy of the database (or a Firestore reader) cannot approve anything.
Whoever holds the token decides once, through `approve` or `reject` here,
which `function-flow approve|reject` (cli/approvals.py) and the HTTP
callback (cloud/approval_routes.py) call:

- approve: the attempt succeeds with the data as the task's result;
- reject: the task fails with the reason, at once: a person said no, so
  its retries do not apply (a retry would only ask again);
- no decision within the Approval's timeout: the task fails (retries
  apply, each retry sends a new token: a reminder), or succeeds with the
  Approval's default (core/recovery.py, `_end_wait`);
- heartbeat: the wait goes on, for a wait that takes heartbeats (a Step
  Functions task token with HeartbeatSeconds; `function-flow heartbeat`,
  POST /heartbeat).

A token that is malformed, unknown, already used, expired, or whose run has
ended is refused with an `ApprovalError` (its `status` is the HTTP answer)
and nothing changes. Two decisions at once: exactly one is recorded (the
completion is a compare-and-set deleting the trigger); the other is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from typing import TYPE_CHECKING, Any

from function_flow.core.records import RunRecord, RunStatus, TaskStatus, Trigger
from function_flow.core.values import storable
from function_flow.errors import FunctionFlowError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Store

#: Random bytes in a token: 256 bits, as text 43 URL-safe characters.
TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")
#: Longest rejection reason kept (it becomes the task's error).
MAX_REASON_CHARS = 2000


def new_token() -> str:
    """An unguessable token, safe in URLs, e-mails and command lines.

    Never starting with "-", which a command line would take for an option
    (`function-flow approve -Nce...`); that costs 0.02 of its 256 bits.
    """
    while True:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if not token.startswith("-"):
            return token


def token_hash(token: str) -> str:
    """What is stored instead of the token: its SHA-256, hex (the trigger id)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApprovalError(FunctionFlowError):
    """A decision that was refused; nothing changed. `status`: its HTTP answer."""

    status = 400


class MalformedToken(ApprovalError):
    status = 400


class UnknownToken(ApprovalError):
    """Never issued, already used, or its wait already ended."""

    status = 404


class RunEnded(ApprovalError):
    status = 409


class TokenExpired(ApprovalError):
    status = 410


class BadDecision(ApprovalError):
    """The data or reason cannot be stored (not JSON, too large, not text)."""

    status = 400


@dataclasses.dataclass(frozen=True)
class Waiting:
    """What a valid token names: the attempt waiting for the decision."""

    trigger: Trigger
    run: RunRecord

    @property
    def task_id(self) -> str:
        return self.trigger.task_id


@dataclasses.dataclass(frozen=True)
class Decision:
    """A recorded decision: the task's new status, and its run's afterwards."""

    run_id: str
    task_id: str
    approved: bool
    run_status: RunStatus


UNKNOWN_TOKEN = ("unknown approval token, one already used (a token works once), or one "
                 "of a run that ended: nothing was changed")


def find(store: "Store", token: Any, now: float) -> Waiting:
    """The attempt `token` may decide, or an ApprovalError saying why not.

    Reads only; the CLI calls it before loading the workflow, so a wrong
    token is refused without importing anything.
    """
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise MalformedToken("that is not an approval token (a token is the text the "
                             "task sent: letters, digits, '-' and '_'); nothing was changed")
    trigger = store.get_trigger(token_hash(token))
    if trigger is None:
        raise UnknownToken(UNKNOWN_TOKEN)
    run = store.get_run(trigger.run_id)
    if run is None:
        raise UnknownToken(UNKNOWN_TOKEN)
    where = f"task {trigger.task_id!r} of run {run.run_id}"
    if run.status.is_final:
        raise RunEnded(f"{where} no longer waits: the run already ended "
                       f"({run.status.value}); nothing was changed")
    records = store.get_tasks(run.run_id, [trigger.task_id])
    task = records[0] if records else None
    if task is None or task.status is not TaskStatus.RUNNING \
            or task.attempt != trigger.attempt:
        raise UnknownToken(UNKNOWN_TOKEN)
    if task.lease_until is not None and task.lease_until <= now:
        raise TokenExpired(f"the approval token of {where} expired: its timeout passed "
                           "(the task fails or takes its default); nothing was changed")
    return Waiting(trigger, run)


def heartbeat(store: "Store", token: Any, now: float) -> float | None:
    """The holder of `token` is still at work: extend the wait by its heartbeat.

    A wait whose trigger sets `on_timeout["heartbeat"]` (seconds; a Step
    Functions Task's HeartbeatSeconds, asl/tokens.py) ends with its
    `on_timeout` error unless a heartbeat comes within that many seconds of
    the last; heartbeats never carry it past `on_timeout["deadline"]`
    (TimeoutSeconds), and the last one before it makes the deadline's error
    (`on_timeout["deadline_error"]`) the one the timeout gives. Returns the
    wait's new end (None: a wait without heartbeats, only checked). An
    ApprovalError, changing nothing, as for a decision.
    """
    waiting = find(store, token, now)
    trigger = waiting.trigger
    on_timeout = dict(trigger.on_timeout or {})
    beat = on_timeout.get("heartbeat")
    if not isinstance(beat, (int, float)) or isinstance(beat, bool):
        return None
    until = now + float(beat)
    deadline = on_timeout.get("deadline")
    if deadline is not None and until >= float(deadline):
        until = float(deadline)
        if on_timeout.get("deadline_error"):
            on_timeout["error"] = on_timeout["deadline_error"]

    def extend(tx: Any) -> bool:
        task = tx.get_tasks(trigger.run_id, [trigger.task_id]).get(trigger.task_id)
        if task is None or task.status is not TaskStatus.RUNNING \
                or task.attempt != trigger.attempt or (task.lease_until or 0) <= now:
            return False
        tx.update_task(trigger.run_id, trigger.task_id, {"lease_until": until})
        tx.put_trigger(dataclasses.replace(trigger, on_timeout=on_timeout))
        return True

    if not store.transact(extend):
        raise UnknownToken(UNKNOWN_TOKEN)  # answered, or timed out, meanwhile
    return until


def approve(engine: "Engine", token: Any, data: Any = None, *,
            record_block: bool = True) -> Decision:
    """Complete the waiting attempt with `data` as the task's result.

    record_block: see Engine.complete_trigger."""
    try:
        value = storable("the approval's data", data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadDecision(f"{exc}; nothing was changed") from None
    return _decide(engine, token, approved=True, value=value, error=None,
                   record_block=record_block)


def reject(engine: "Engine", token: Any, reason: Any = None, *,
           record_block: bool = True) -> Decision:
    """Fail the waiting task with `reason`, without retries."""
    if reason is not None and not isinstance(reason, str):
        raise BadDecision(f"the reason must be text, got {type(reason).__name__}; "
                          "nothing was changed")
    reason = " ".join((reason or "").split())[:MAX_REASON_CHARS]
    return _decide(engine, token, approved=False, value=None,
                   error=f"ApprovalRejected: {reason or 'rejected (no reason given)'}",
                   record_block=record_block)


def _decide(engine: "Engine", token: Any, *, approved: bool, value: Any,
            error: str | None, record_block: bool) -> Decision:
    waiting = find(engine.store, token, engine.clock())
    outcome = engine.complete_trigger(waiting.trigger.trigger_id, ok=approved, value=value,
                                      error=error, retry=False, record_block=record_block)
    if outcome not in ("succeeded", "failed"):
        # Someone else decided first, or the timeout did: theirs stands.
        raise UnknownToken(UNKNOWN_TOKEN)
    run = engine.store.get_run(waiting.run.run_id)
    return Decision(waiting.run.run_id, waiting.task_id, approved,
                    run.status if run is not None else RunStatus.RUNNING)
