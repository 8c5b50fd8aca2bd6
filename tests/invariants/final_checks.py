"""The oracle, part two: what must hold once a run has ended and its messages are spent.

`check(harness)` returns every violation it finds ([] when all hold):
liveness (the run ended, with no more poller rounds than crashes explain),
one final status matching the tasks, retries used exactly as configured,
every body's outcome committed exactly once, results flowing along the
edges, nothing downstream of a failed task ever started, the recorder's
shadow matching the store, and who wrote each record (no hot document).
It adds the recorder's per-commit violations (oracle.py) to its own.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from function_flow.core import hooks
from function_flow.core.graph import END_TASK_ID
from function_flow.core.records import RunStatus, TaskStatus

from . import hook_checks
from .oracle import CONTROL, F, Q, R, S, SK, UF
from .scenario import MODULUS, descendants, model_outcomes, task_name
from .workflow import EARLY_RULES

if TYPE_CHECKING:
    from .runner import Harness


def check(h: "Harness") -> list[str]:
    """Every invariant of docs/design.md that this run can show; [] when all hold."""
    problems = list(h.recorder.violations)
    sc, rec, dag = h.scenario, h.recorder, h.dag
    names = [task_name(i) for i in range(sc.n)]
    records = {t.task_id: t for t in h.raw_store.get_tasks(h.run_id)}
    run = h.raw_store.get_run(h.run_id)
    assert run is not None
    crashes = h.crash_count()

    # Liveness (invariant 5): the run ended, with no more poller rounds than
    # crashes that could have lost a message, and none at all without crashes.
    if not run.status.is_final:
        problems.append(f"liveness: run still {run.status.value} after "
                        f"{h.recover_rounds} poller rounds and {h.steps} steps")
    if h.recover_rounds > crashes:
        problems.append(f"liveness: needed {h.recover_rounds} poller rounds, "
                        f"but only {crashes} crashes happened")

    # Invariant 3: one final status, written once, matching the tasks.
    finals = [u for u in rec.run_updates if "status" in u[2]
              and RunStatus(u[2]["status"]).is_final]
    if len(finals) != 1:
        problems.append(f"run final status written {len(finals)} times: {finals}")
    # Only its hooks' progress (hook_checks.py), pause and resume (and their
    # entries in the run's history), and, where the run goes on after a
    # failure, a note of its first failure, once.
    notes = [u for u in rec.run_updates if "status" not in u[2]
             and set(u[2]) != {"hooks_pending"}
             and not set(u[2]) <= {"paused_at", "resumed_at", "history"}]
    if len(notes) > (0 if dag.fails_fast else 1) or any(set(u[2]) != {"error"} for u in notes):
        problems.append(f"run record written besides its final status: {rec.run_updates}")
    if rec.final_status is not None and run.status is not rec.final_status:
        problems.append(f"run status {run.status.value} differs from the final status "
                        f"written, {rec.final_status.value}")
    all_ok = all(records[t].status in (S, SK) for t in names)
    # Sinks of a run with several complete without reading the run, so each
    # may succeed between a cancel's commit and its sweep; a run's only sink
    # reads it and is CANCELLED instead (transitions.discarded_by_cancel).
    raced = run.status is RunStatus.CANCELLED and h.cancel_requested \
        and len(dag.end_deps) > 1
    if (run.status is RunStatus.SUCCEEDED) != all_ok and not (raced and all_ok):
        problems.append(f"run {run.status.value} but tasks: "
                        f"{ {t: records[t].status.value for t in names} }")
    any_failed = any(records[t].status is F for t in names)
    cancelled = run.status is RunStatus.CANCELLED
    if cancelled and not h.cancel_requested:
        problems.append("run CANCELLED, but nobody cancelled it")
    if cancelled:
        # Invariant 3 for a cancel: every task ended, none still to run.
        left = {t: records[t].status.value for t in names if not records[t].status.is_final}
        if left:
            problems.append(f"run CANCELLED with tasks unfinished: {left}")
    # A task that failed while a cancel swept the run may end FAILED in it.
    elif (run.status is RunStatus.FAILED) != any_failed:
        problems.append(f"run {run.status.value}, a task FAILED: {any_failed}")
    timed_out = any(body.get("expired") for body in h.bodies.values())
    model = model_outcomes(sc)
    if not crashes and not timed_out and not cancelled:
        expected = RunStatus.FAILED if "F" in model.values() else RunStatus.SUCCEEDED
        if run.status is not expected:
            problems.append(f"run {run.status.value}, expected {expected.value} "
                            f"(permanently failing: {sorted(sc.permanently_failing())})")
        if not dag.fails_fast or expected is RunStatus.SUCCEEDED:
            # The run went on to the end: every task ended as the rules say.
            names_of = {"S": S, "F": F, "SKIPPED": SK, "UPSTREAM_FAILED": UF}
            for i, t in enumerate(names):
                if records[t].status is not names_of[model[i]]:
                    problems.append(f"{t} ended {records[t].status.value}, its rule "
                                    f"({sc.rule(i)}) and upstream say {model[i]}")
        unfinished = [t for t in names if not records[t].status.is_final]
        if unfinished:
            problems.append(f"tasks not final in an ended run: {unfinished}")

    # Retries: a task fails only after retries + 1 failed attempts.
    failed_attempts = collections.Counter(
        tr.task_id for tr in rec.transitions
        if tr.old is R and tr.new in (Q, F) and not tr.interrupted and not tr.held)
    for i, t in enumerate(names):
        limit = sc.retries[i] + 1
        if failed_attempts[t] > limit:
            problems.append(f"{t}: {failed_attempts[t]} failed attempts, limit {limit}")
        if records[t].status is F and failed_attempts[t] != limit:
            problems.append(f"{t} FAILED after {failed_attempts[t]} failed attempts, "
                            f"it has {sc.retries[i]} retries")

    # Invariant 2: bodies and their outcomes, exactly once.
    committed = {(tr.task_id, tr.old_attempt): tr.new for tr in rec.transitions
                 if tr.old is R}
    for (t, a), body in h.bodies.items():
        # A body still executing when a cancel ended its task: what it returned is lost.
        dead = (t, a) in h.crashed_deliveries or body.get("expired") \
            or committed.get((t, a)) is TaskStatus.CANCELLED
        if body["outcome"] == "ok" and committed.get((t, a)) is not S and not dead:
            problems.append(f"{t} attempt {a}: body succeeded but its success never "
                            "committed, and its executor did not crash or time out")
        if body["outcome"] == "raised" and committed.get((t, a)) not in (Q, F) \
                and not dead:
            problems.append(f"{t} attempt {a}: body failed but no failure committed")
        if (t, a) not in rec.claim_seq:
            problems.append(f"{t} attempt {a}: body ran without a committed claim")
        elif rec.failed_seq is not None and rec.claim_seq[(t, a)] > rec.failed_seq:
            problems.append(f"{t} attempt {a} claimed after the run {rec.final_status.value}")
    for t in names:
        wins = [a for (tt, a), tr in committed.items() if tt == t and tr is S]
        if records[t].status is S:
            if len(wins) != 1:
                problems.append(f"{t}: {len(wins)} committed successes")
                continue
            body = h.bodies.get((t, wins[0]), {})
            if body.get("outcome") != "ok":
                problems.append(f"{t}: success of attempt {wins[0]} committed without "
                                f"a successful body ({body})")
            elif records[t].result != body["value"]:
                problems.append(f"{t}: stored result {records[t].result} is not what "
                                f"the committed body returned, {body['value']}")
        elif wins:
            problems.append(f"{t} is {records[t].status.value} after a committed success")

    # Results flow: value = 1 + sum of the dependencies' values.
    expected_value: dict[str, int] = {}
    for i, t in enumerate(names):
        flows = [d for d in sc.deps[i] if records[task_name(d)].status is S
                 and d not in sc.branches and sc.rule(i) not in EARLY_RULES]
        expected_value[t] = (1 + sum(expected_value[task_name(d)] for d in flows)) % MODULUS
        if records[t].status is S and i not in sc.branches \
                and records[t].result["value"] != expected_value[t]:
            problems.append(f"{t}: result {records[t].result} expected value "
                            f"{expected_value[t]}")

    # Failed tasks: nothing downstream of them ever started.
    for t in names if not sc.rules else ():  # trigger rules: the bodies check their own
        if records[t].status is F:
            for d in descendants(dag, t):
                if any(tt == d for (tt, _) in h.bodies):
                    problems.append(f"{d} ran although its ancestor {t} FAILED")

    # The recorder saw every write: its shadow matches the store.
    for t, record in records.items():
        if (record.status, record.attempt) != (rec.status.get(t), rec.attempt.get(t)):
            problems.append(f"{t}: store {record.status.value}/{record.attempt}, "
                            f"recorded {rec.status.get(t)}/{rec.attempt.get(t)}")
    if rec.slots:
        free = set(h.raw_store.find_free_slots(h.run_id, rec.slots, rec.slots))
        shadow_free = {s for s, h in rec.slot_holder.items() if h is None}
        if free != shadow_free:
            problems.append(f"free slots: store {free}, recorded {shadow_free}")
        if run.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED) \
                and free != set(range(rec.slots)):
            problems.append(f"run {run.status.value} with slots still held: "
                            f"{rec.slot_holder}")

    problems.extend(_check_writers(h, records))
    problems.extend(hook_checks.check(h))
    return problems


def _check_writers(h: "Harness", records: dict[str, Any]) -> list[str]:
    """No hot document: who writes each record (see docs/design.md)."""
    problems = []
    sc, rec, dag = h.scenario, h.recorder, h.dag
    names = set(dag.tasks)
    for key, actors in rec.writers.items():
        if key[0] == "task" and hooks.is_hook(key[1]):
            continue  # queued by the run's end or the hook before: hook_checks.py
        if key[0] == "task":
            t = key[1]
            allowed = {t} | (set(dag.end_deps) if t == END_TASK_ID else set(dag.tasks[t].deps))
            if not actors <= allowed:
                problems.append(f"record of {t} written by {sorted(actors - allowed)}, "
                                f"which are neither {t} nor its dependencies")
            for dep in allowed - {t}:
                count = rec.write_count[(key, dep)]
                # Every final outcome is written into the dependents once, but a
                # task that a failed run's leftovers ended (leftovers.py) writes none.
                status = records[dep].status
                wanted = {1} if status in (S, F) else {0, 1} if status in (SK, UF) else {0}
                if count not in wanted:
                    problems.append(f"{dep} wrote into {t}'s record {count} times, "
                                    f"expected {wanted}")
            everyone = names <= actors
            own_join = t != END_TASK_ID and set(dag.tasks[t].deps) == names - {t}
            if sc.n >= 3 and everyone and t != END_TASK_ID and not own_join:
                problems.append(f"record of {t} written by every task")
        elif key[0] == "run":
            # The task that ends the run; and, where the run goes on after a
            # failure, the first task that failed (it notes the failure);
            # besides hooks and control actions (pause, resume, cancel).
            actors = {a for a in actors if not hooks.is_hook(a)} - {CONTROL}
            if len(actors) > (1 if dag.fails_fast else 2):
                problems.append(f"run record written by {sorted(actors)}")
        else:
            slot = key[1]
            if not actors <= rec.slot_holders_ever[slot]:
                problems.append(f"slot {slot} written by {sorted(actors)}, which never "
                                f"held it ({sorted(rec.slot_holders_ever[slot])})")
            # With one slot every task must pass through it, one at a time,
            # by definition of max_parallel_tasks = 1; with more, none is shared by all.
            if sc.n >= 3 and rec.slots >= 2 and names <= actors:
                problems.append(f"slot {slot} written by every task")
    return problems


def report(h: "Harness", problems: list[str]) -> str:
    """The violations, the scenario that shows them and how its delivery went."""
    sc = h.scenario
    lines = [f"{len(problems)} invariant violation(s):", *problems[:20], "",
             f"scenario: {sc}", f"slots: {h.recorder.slots}, "
             f"width bound {h.dag.width_bound}, crashes fired {h.crasher.fired}, "
             f"poller rounds {h.recover_rounds}, store {h.store_name}, compare-and-set "
             f"conflicts {h.store.conflicts} (functions run again: {h.store.reruns})",
             "delivery trace (last 60):",
             *h.trace[-60:]]
    return "\n".join(lines)

