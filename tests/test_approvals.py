"""Human approvals through the API (function_flow/approvals.py), on each store.

A task body returns `futures.Approval(...)` after handing out its token; the
attempt waits until `approvals.approve` / `approvals.reject` (what the CLI
and the HTTP callback call) decides, or the timeout does. Runs execute on
the in-process bus against each store adapter in turn (the `store`
fixture: SQLite, then the Firestore emulator). The CLI and HTTP forms are
in test_approvals_cli.py and test_approvals_http.py.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from function_flow import approvals, futures
from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.tasks import Job
from functions_stack import wait_for

pytestmark = pytest.mark.timeout(180)

NO_DEFAULT = object()


def approval_job(name: str, tokens: list[str], *, timeout: Any = None,
                 default: Any = NO_DEFAULT, retries: int = 0) -> Job:
    """ask (waits for a person) -> use (reads ask's result). A callable
    `timeout` gives each attempt's: timeout(attempt)."""
    job = Job(name)

    @job.task("ask", retries=retries, retry_backoff=0.01)
    def ask(task, job):
        options = {} if default is NO_DEFAULT else {"default": default}
        approval = futures.Approval(
            timeout=timeout(task.attempt) if callable(timeout) else timeout, **options)
        tokens.append(approval.token)  # the e-mail
        return approval

    @job.task("use", deps=["ask"])
    def use(task, job):
        return {"got": job.get_task_result("ask")}

    return job


_BUSES: list[LocalBus] = []


@pytest.fixture(autouse=True)
def _close_buses():
    yield
    while _BUSES:
        _BUSES.pop().close()


def on(store, job: Job, *, lease_checks: bool = True) -> Job:
    """The job on `store` with the in-process bus. lease_checks=False is Google
    Cloud's way: nothing ends an expired wait until the poller runs."""
    bus = LocalBus(4)
    _BUSES.append(bus)
    return job.use_backend(Backend("embedded", store, bus, lease_check_messages=lease_checks))


def started(job: Job, tokens: list[str], count: int = 1) -> str:
    run_id = job.start({})
    wait_for(lambda: len(tokens) >= count and _waiting(job, run_id), "the approval to wait")
    return run_id


def _waiting(job: Job, run_id: str) -> bool:
    ask = job.engine.store.get_tasks(run_id, ["ask"])[0]
    return ask.status is TaskStatus.RUNNING and ask.trigger_id is not None and \
        job.engine.store.get_trigger(ask.trigger_id) is not None


def records(job: Job, run_id: str) -> dict:
    return {t.task_id: t for t in job.engine.task_records(run_id)}


def dump_store(store) -> str:
    """Everything a store holds, as text: the SQLite file, or every Firestore document."""
    if hasattr(store, "client"):
        documents = []

        def walk(collection) -> None:
            for snapshot in collection.stream():
                documents.append(json.dumps(snapshot.to_dict(), default=str))
                documents.append(snapshot.id)
                for sub in snapshot.reference.collections():
                    walk(sub)

        for collection in store.client.collections():
            if collection.id.startswith(store.prefix):
                walk(collection)
        assert documents, "no documents found: the dump looks in the wrong place"
        return "\n".join(documents)
    path = Path(store.path)
    return "".join(p.read_bytes().decode("latin-1")
                   for p in path.parent.glob(path.name + "*"))


# ------------------------------------------------------------------- accept


def test_approve_makes_the_data_the_result_and_the_run_goes_on(store) -> None:
    tokens: list[str] = []
    job = on(store, approval_job("approve_ok", tokens, timeout=datetime.timedelta(hours=1)))
    run_id = started(job, tokens)
    assert records(job, run_id)["use"].status is TaskStatus.WAITING

    decision = approvals.approve(job.engine, tokens[0], {"approved_by": "ana", "n": 3})

    assert (decision.run_id, decision.task_id, decision.approved) == (run_id, "ask", True)
    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    done = records(job, run_id)
    assert done["ask"].result == {"approved_by": "ana", "n": 3}
    assert done["use"].result == {"got": {"approved_by": "ana", "n": 3}}
    assert store.get_trigger(approvals.token_hash(tokens[0])) is None
    # Only the hash was ever stored: the token appears nowhere.
    assert done["ask"].trigger_id == approvals.token_hash(tokens[0])
    assert tokens[0] not in dump_store(store)


def test_a_used_token_is_refused_and_changes_nothing(store) -> None:
    tokens: list[str] = []
    job = on(store, approval_job("approve_twice", tokens))
    run_id = started(job, tokens)
    approvals.approve(job.engine, tokens[0], "first")
    job.wait(run_id, timeout=60)
    before = records(job, run_id)

    for again in (lambda: approvals.approve(job.engine, tokens[0], "second"),
                  lambda: approvals.reject(job.engine, tokens[0], "too late")):
        with pytest.raises(approvals.UnknownToken, match="already used") as refused:
            again()
        assert refused.value.status == 404

    assert records(job, run_id) == before
    assert before["ask"].result == "first"


@pytest.mark.parametrize("token", [
    "x" * 43,                         # well formed, never issued
    "not a token!",                   # malformed
    "",
    None,
])
def test_a_forged_token_is_refused_and_changes_nothing(store, token) -> None:
    tokens: list[str] = []
    job = on(store, approval_job("forged", tokens))
    run_id = started(job, tokens)
    before = records(job, run_id)

    with pytest.raises(approvals.ApprovalError, match="nothing was changed") as refused:
        approvals.approve(job.engine, token, "forged")
    assert refused.value.status in (400, 404)
    # The trigger id itself (the stored hash) is no token either.
    with pytest.raises(approvals.UnknownToken):
        approvals.approve(job.engine, approvals.token_hash(tokens[0]))

    assert records(job, run_id) == before
    approvals.approve(job.engine, tokens[0])  # the real one still works
    assert job.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED


def test_data_that_cannot_be_stored_is_refused_and_changes_nothing(store) -> None:
    tokens: list[str] = []
    job = on(store, approval_job("bad_data", tokens))
    run_id = started(job, tokens)
    before = records(job, run_id)

    for data in ({"x": float("nan")}, {"blob": "x" * 1_000_000}, {1, 2}):
        with pytest.raises(approvals.BadDecision, match="nothing was changed"):
            approvals.approve(job.engine, tokens[0], data)
    with pytest.raises(approvals.BadDecision, match="text"):
        approvals.reject(job.engine, tokens[0], {"not": "text"})

    assert records(job, run_id) == before


# ------------------------------------------------------------------- reject


def test_reject_fails_the_task_with_the_reason_and_no_retry(store) -> None:
    tokens: list[str] = []
    job = on(store, approval_job("reject", tokens, retries=2))
    run_id = started(job, tokens)

    decision = approvals.reject(job.engine, tokens[0], "budget\nexceeded")

    assert decision.approved is False
    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.FAILED
    assert run.error == "task 'ask' failed: ApprovalRejected: budget exceeded"
    done = records(job, run_id)
    assert done["ask"].status is TaskStatus.FAILED and done["ask"].attempt == 1
    assert done["use"].status is TaskStatus.UPSTREAM_FAILED
    assert len(tokens) == 1  # no retry asked again


# ------------------------------------------------------------------ timeouts


def test_timeout_without_default_fails_the_task(store) -> None:
    tokens: list[str] = []
    job = on(store, approval_job("timeout_fails", tokens, timeout=0.5))
    run_id = job.start({})

    run = job.wait(run_id, timeout=60)

    assert run.status is RunStatus.FAILED
    assert "neither given nor refused within 0.5 seconds" in run.error
    assert records(job, run_id)["ask"].status is TaskStatus.FAILED
    # The timeout removed the trigger in the commit that failed the task.
    assert store.get_trigger(approvals.token_hash(tokens[0])) is None
    with pytest.raises(approvals.UnknownToken):
        approvals.approve(job.engine, tokens[0])


@pytest.mark.parametrize("default", [{"approved": False}, None])
def test_timeout_with_a_default_completes_the_task_with_it(store, default) -> None:
    tokens: list[str] = []
    job = on(store, approval_job("timeout_default", tokens, timeout=0.5, default=default))
    run_id = job.start({})

    run = job.wait(run_id, timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    done = records(job, run_id)
    assert done["ask"].result == default and done["ask"].attempt == 1
    assert done["use"].result == {"got": default}
    assert store.get_trigger(approvals.token_hash(tokens[0])) is None


def test_timeout_with_retries_asks_again_with_a_new_token(store) -> None:
    tokens: list[str] = []
    # The first ask times out; the second waits long enough for the approval
    # below however loaded the machine is.
    job = on(store, approval_job("reminder", tokens, retries=1,
                                 timeout=lambda attempt: 0.5 if attempt == 1 else 3600))
    run_id = started(job, tokens, count=2)

    with pytest.raises(approvals.UnknownToken):
        approvals.approve(job.engine, tokens[0], "stale token")
    approvals.approve(job.engine, tokens[1], "fresh token")

    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert records(job, run_id)["ask"].result == "fresh token"
    assert records(job, run_id)["ask"].attempt == 2


def test_an_expired_token_is_refused_until_and_after_the_poller_ends_the_wait(store) -> None:
    """Where the poller, not a lease-check message, ends expired waits (Google
    Cloud), a token whose timeout passed is refused as expired (410) and
    nothing changes; the poller then completes the task with its default."""
    tokens: list[str] = []
    job = on(store, approval_job("expired", tokens, timeout=0.3, default="nobody answered"),
             lease_checks=False)
    run_id = started(job, tokens)
    wait_for(lambda: records(job, run_id)["ask"].lease_until < job.engine.clock(),
             "the approval's timeout to pass")
    before = records(job, run_id)

    with pytest.raises(approvals.TokenExpired, match="expired") as refused:
        approvals.approve(job.engine, tokens[0], "too late")
    assert refused.value.status == 410
    assert records(job, run_id) == before

    job.engine.poll(stale_after=0, run_ids=[run_id])
    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert records(job, run_id)["ask"].result == "nobody answered"
    with pytest.raises(approvals.UnknownToken):
        approvals.approve(job.engine, tokens[0], "too late")


def test_the_approvals_timeout_wins_over_the_tasks_for_its_wait(store) -> None:
    tokens: list[str] = []
    job = Job("own_timeout")

    @job.task("ask", timeout=5)
    def ask(task, job):
        approval = futures.Approval(timeout=datetime.timedelta(days=3))
        tokens.append(approval.token)
        return approval

    on(store, job)
    run_id = started(job, tokens)
    ask_record = records(job, run_id)["ask"]
    assert ask_record.lease_until - ask_record.started_at > 3 * 86400 - 60
    approvals.approve(job.engine, tokens[0], 1)
    assert job.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), "1h", True])
def test_an_approval_timeout_must_be_positive_seconds(timeout) -> None:
    with pytest.raises((TypeError, ValueError), match="Approval timeout"):
        futures.Approval(timeout=timeout)


def test_the_token_is_new_each_time_and_never_in_the_repr() -> None:
    made = [futures.Approval() for _ in range(50)]
    assert len({a.token for a in made}) == 50
    # 32 random bytes (256 bits): 43 letters, digits, "-" and "_", as the README says.
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", a.token) for a in made)
    assert all(a.trigger_id == approvals.token_hash(a.token) for a in made)
    assert all(a.token not in repr(a) and a.token not in str(a) for a in made)


def test_a_token_never_looks_like_a_command_line_option() -> None:
    # One in 64 random tokens starts with "-" (`function-flow approve -Nce...`
    # would be an unknown option): 2000 tokens show it is excluded.
    assert not [t for t in (approvals.new_token() for _ in range(2000)) if t.startswith("-")]


# ------------------------------------------------------------------ races


@pytest.mark.parametrize("second", ["approve", "reject"])
def test_two_decisions_at_once_exactly_one_wins(store, second) -> None:
    tokens: list[str] = []
    job = on(store, approval_job("race", tokens))
    run_id = started(job, tokens)
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def decide(name: str, act) -> None:
        barrier.wait()
        try:
            outcomes[name] = act()
        except approvals.ApprovalError as exc:
            outcomes[name] = exc

    actions = {"one": lambda: approvals.approve(job.engine, tokens[0], "one"),
               "two": (lambda: approvals.approve(job.engine, tokens[0], "two"))
               if second == "approve" else
               (lambda: approvals.reject(job.engine, tokens[0], "two"))}
    threads = [threading.Thread(target=decide, args=item) for item in actions.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    winners = [n for n, o in outcomes.items() if isinstance(o, approvals.Decision)]
    # The loser finds the token used, or (after a rejection ended the run
    # first) the run ended: refused either way, nothing changed.
    losers = [o for o in outcomes.values() if isinstance(o, approvals.ApprovalError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    run = job.wait(run_id, timeout=60)
    ask = records(job, run_id)["ask"]
    if outcomes[winners[0]].approved:
        assert run.status is RunStatus.SUCCEEDED and ask.result == winners[0]
    else:
        assert run.status is RunStatus.FAILED and "ApprovalRejected: two" in run.error


def test_a_decision_for_a_run_that_ended_is_refused(store) -> None:
    tokens: list[str] = []
    job = Job("ended")

    @job.task("ask")
    def ask(task, job):
        approval = futures.Approval()
        tokens.append(approval.token)
        return approval

    @job.task("boom")
    def boom(task, job):
        wait_for(lambda: tokens, "the approval")
        raise RuntimeError("another task failed")

    on(store, job)
    run_id = job.start({})
    assert job.wait(run_id, timeout=60).status is RunStatus.FAILED
    # The run's end cancels the wait (whichever committed first), so nothing
    # is left RUNNING and the token no longer works.
    wait_for(lambda: records(job, run_id)["ask"].status is TaskStatus.CANCELLED,
             "the wait to be cancelled")
    with pytest.raises(approvals.ApprovalError) as refused:
        approvals.approve(job.engine, tokens[0])
    assert refused.value.status in (404, 409)
    assert records(job, run_id)["ask"].status is TaskStatus.CANCELLED
