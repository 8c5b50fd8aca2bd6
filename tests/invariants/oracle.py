"""The oracle, part one: the commit-ordered log of what the engine wrote.

`RecordingStore` (fakes.py) hands every committed transaction's writes to
`Recorder.record_commit` under one lock, so the log's order is the commit
order even with several threads. The recorder keeps a shadow of each task's
status and attempt and of every slot's holder, and checks at every commit:

- each status change is in core.transitions.LEGAL_TRANSITIONS and sets the
  attempt as that table says (the same table the engine's rules follow);
  WAITING -> RUNNING only in the commit of the task's only dependency's
  success (a chain's next task queued and claimed at once, core/chaining.py);
- no transition of an attempt commits twice (exactly once per attempt);
- the run's final status is written once, and nothing after it;
- a transaction advances exactly one task's own record (plus blind
  deps_done writes, and at most one READY heir of its slot); a success's
  commit may also claim one QUEUED task, with a claim's fields alone and
  nothing of the run written (the attempt its worker runs next,
  core/chaining.py);
- never more RUNNING tasks than max_parallel_tasks, each holding a slot.

It also notes who writes each record, for the hot-document checks after
the run (final_checks.py).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any, Iterable

from function_flow.core import hooks
from function_flow.core.graph import END_TASK_ID, Dag
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.core.transitions import LEGAL_TRANSITIONS

from . import hook_checks
from .scenario import Scenario

W, RD, Q, R = TaskStatus.WAITING, TaskStatus.READY, TaskStatus.QUEUED, TaskStatus.RUNNING
S, F, C = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED
SK, UF = TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED
#: The actor of commits that write only the run record: control actions.
CONTROL = "control"
#: What a claim writes (transitions.claim): QUEUED -> RUNNING, the attempt unchanged.
CLAIM_FIELDS = frozenset({"status", "started_at", "lease_until", "not_before",
                          "finished_at"})


@dataclasses.dataclass
class Transition:
    seq: int
    task_id: str
    old: TaskStatus
    new: TaskStatus
    old_attempt: int
    new_attempt: int
    #: RUNNING -> QUEUED because the executor was declared dead (resume),
    #: which does not use up a retry
    interrupted: bool = False
    #: RUNNING -> QUEUED with the same attempt: a claim of a paused run put
    #: back unrun (control.hold); no attempt ended
    held: bool = False


class Recorder:
    """Commit-ordered log of everything the engine wrote, plus a shadow state.

    Every committed transaction goes through `record_commit` under one lock,
    so the log's order is the commit order even with several threads.
    """

    def __init__(self, scenario: Scenario, dag: Dag, slots: int) -> None:
        self.scenario = scenario
        self.dag = dag
        self.slots = slots
        self.lock = threading.RLock()
        self.seq = 0
        self.violations: list[str] = []
        self.status: dict[str, TaskStatus] = {}
        self.attempt: dict[str, int] = {}
        self.slot_holder: dict[int, str | None] = {}
        self.slot_holders_ever: dict[int, set[str]] = collections.defaultdict(set)
        self.transitions: list[Transition] = []
        self.transition_keys: set[tuple[str, int, TaskStatus, TaskStatus]] = set()
        self.claim_seq: dict[tuple[str, int], int] = {}
        #: (task, attempt) claimed in another task's commit (core/chaining.py): its
        #: delivery may put it back unrun if it fails before running it.
        self.claimed_ahead: set[tuple[str, int]] = set()
        #: record -> set of actors (tasks whose transition wrote it)
        self.writers: dict[tuple, set[str]] = collections.defaultdict(set)
        self.write_count: collections.Counter = collections.Counter()
        self.run_updates: list[tuple[int, str, dict[str, Any]]] = []
        self.final_seq: int | None = None
        self.final_status: RunStatus | None = None
        #: The commit that ended the run FAILED or CANCELLED: no body may run
        #: for an attempt claimed after it.
        self.failed_seq: int | None = None
        #: Whether the run is paused (paused_at written, not cleared since),
        #: and the commit that last resumed it.
        self.paused = False
        self.unpaused_seq = 0
        self.max_running_records = 0

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def record_create(self, tasks: Iterable[Any], slots: dict[int, str]) -> None:
        with self.lock:
            for task in tasks:
                self.status[task.task_id] = task.status
                self.attempt[task.task_id] = task.attempt
            for slot in range(self.slots):
                self.slot_holder[slot] = slots.get(slot)
                if slots.get(slot):
                    self.slot_holders_ever[slot].add(slots[slot])

    def record_commit(self, writes: list[tuple]) -> None:
        with self.lock:
            self.seq += 1
            seq = self.seq
            if not writes:
                return
            # The actor: the task whose own record the transaction advances.
            # Writes into other tasks' records are deps_done blind writes, or
            # a READY task queued with a slot: the heir of a finishing task's
            # slot, which advances its own record (alone, in fill_slots).
            heirs = {w[1] for w in writes if w[0] == "task" and "slot" in w[2]
                     and w[2].get("status") == Q.value and self.status.get(w[1]) is RD
                     and not any(k.startswith("deps_done.") for k in w[2])}
            # The commit that ends the run, or a hook, also queues the next hook.
            queued_hooks = hook_checks.side_writes(self.status, writes)
            # A QUEUED task claimed with another task's success (core/chaining.py).
            claims = {w[1] for w in writes if w[0] == "task" and set(w[2]) == CLAIM_FIELDS
                      and w[2]["status"] == R.value and self.status.get(w[1]) is Q}
            actors = [w[1] for w in writes if w[0] == "task" and w[1] not in heirs
                      and w[1] not in queued_hooks and w[1] not in claims
                      and not any(k.startswith("deps_done.") for k in w[2])] \
                or sorted(heirs) or sorted(claims)
            riders = claims - set(actors)
            if not actors and all(w[0] == "run" or w[1] in queued_hooks for w in writes):
                actors = [CONTROL]  # pause, resume, or the end of a cancelled run
            if len(actors) != 1 or len(heirs) > 1:
                self.violations.append(
                    f"commit {seq}: a transaction must advance exactly one task's own "
                    f"record (and hand its slot to at most one READY task), this one "
                    f"advanced {actors}, heirs {sorted(heirs)}: {writes}")
            actor = actors[0] if actors else "?"
            self._check_chain_claims(seq, actor, writes)
            self._check_riders(seq, actor, riders, writes)
            for write in writes:
                if write[0] == "task":
                    # A blind deps_done write is the completer's, even into its
                    # heir (a one_success task may be READY before all its deps end).
                    blind = any(k.startswith("deps_done.") for k in write[2])
                    writer = write[1] if write[1] in heirs and not blind \
                        or write[1] in riders else actor
                    self._task_write(seq, writer, write[1], write[2])
                elif write[0] == "run":
                    self._run_write(seq, actor, write[1])
                else:
                    self._slot_write(actor, write[1], write[2])
                if write[0] == "task" and write[1] != actor \
                        and write[2].get("status") == R.value:
                    self.claimed_ahead.add((write[1], self.attempt[write[1]]))
            self._check_parallelism(seq)

    def _check_chain_claims(self, seq: int, actor: str, writes: list[tuple]) -> None:
        """WAITING -> RUNNING is a chain's step only (core/chaining.py): the commit
        records the success of the task's only dependency, which writes its entry
        into the task's deps_done in the same write that claims it."""
        for write in writes:
            if write[0] != "task" or write[2].get("status") != R.value \
                    or self.status.get(write[1]) is not W:
                continue
            own = [w[2] for w in writes if w[0] == "task" and w[1] == actor]
            spec = self.dag.tasks.get(write[1])
            if spec is None or list(spec.deps) != [actor] \
                    or write[2].get(f"deps_done.{actor}") != S.value \
                    or self.status.get(actor) is not R \
                    or not any(w.get("status") == S.value for w in own):
                self.violations.append(
                    f"commit {seq}: {write[1]} went WAITING -> RUNNING, which only the "
                    f"success of its only dependency may do (it queues and claims it "
                    f"at once), in a commit of {actor}: {writes}")

    def _check_riders(self, seq: int, actor: str, riders: set[str],
                      writes: list[tuple]) -> None:
        """A claim besides the actor's own record (core/chaining.py): at most one,
        only in the commit of the actor's success, and with nothing of the run
        written (the claim reads the run before the commit's writes)."""
        if not riders:
            return
        own = [w[2] for w in writes if w[0] == "task" and w[1] == actor]
        if len(riders) > 1 or self.status.get(actor) is not R \
                or not any(w.get("status") == S.value for w in own) \
                or any(w[0] == "run" for w in writes):
            self.violations.append(
                f"commit {seq}: claimed {sorted(riders)} besides {actor}'s own record: "
                f"only one claim may ride along, with a success that writes nothing of "
                f"the run: {writes}")

    def _task_write(self, seq: int, actor: str, task_id: str, fields: dict[str, Any]) -> None:
        key = ("task", task_id)
        self.writers[key].add(actor)
        self.write_count[(key, actor)] += 1
        if "status" not in fields:
            return
        old, old_attempt = self.status[task_id], self.attempt[task_id]
        new = TaskStatus(fields["status"])
        new_attempt = fields.get("attempt", old_attempt)
        rule = LEGAL_TRANSITIONS.get((old, new))
        if rule is None or ((old, new) == (W, S)) != (task_id == END_TASK_ID):
            self.violations.append(
                f"commit {seq}: illegal transition of {task_id}: {old.value} -> {new.value}")
        allowed = {{"same": old_attempt, "next": old_attempt + 1, "one": 1}[r]
                   for r in (rule or "").split("|") if r}
        if allowed and new_attempt not in allowed:
            self.violations.append(
                f"commit {seq}: {task_id} {old.value} -> {new.value} set attempt "
                f"{new_attempt}, expected {' or '.join(map(str, sorted(allowed)))}")
        held = (old, new) == (R, Q) and new_attempt == old_attempt
        if held:
            # A claim put back unrun (control.hold): only when the claimer
            # read the run paused, so it was paused at some point after the
            # claim, or a claim made in another task's commit whose delivery
            # failed before running it (chaining.deliver; a body run twice
            # would show in the bodies' log).
            if not self.paused and (task_id, old_attempt) not in self.claimed_ahead \
                    and self.unpaused_seq < self.claim_seq.get((task_id, old_attempt), seq):
                self.violations.append(
                    f"commit {seq}: {task_id} RUNNING -> QUEUED kept attempt {new_attempt} "
                    "although the run was not paused after its claim")
            # The attempt is claimed again later: that claim is not a second one.
            self.transition_keys.discard((task_id, new_attempt, Q, R))
            self.transition_keys.discard((task_id, new_attempt, R, Q))
        tkey = (task_id, new_attempt, old, new)
        if tkey in self.transition_keys:
            self.violations.append(
                f"commit {seq}: transition {old.value} -> {new.value} of {task_id} "
                f"attempt {new_attempt} committed twice")
        if not held:
            self.transition_keys.add(tkey)
        self.transitions.append(Transition(seq, task_id, old, new, old_attempt, new_attempt,
                                           "interrupted" in fields, held))
        if new is R:  # QUEUED -> RUNNING, or WAITING -> RUNNING in a chain's step
            self.claim_seq[(task_id, new_attempt)] = seq
            # A claim committed after the run ended is allowed: claims are
            # compare-and-set on the task alone, and the claimer then reads
            # the run and cancels the attempt unrun. check() makes sure no
            # body ran for such a claim.
        self.status[task_id], self.attempt[task_id] = new, new_attempt

    def _run_write(self, seq: int, actor: str, fields: dict[str, Any]) -> None:
        self.writers[("run",)].add(actor)
        self.write_count[(("run",), actor)] += 1
        self.run_updates.append((seq, actor, dict(fields)))
        if "paused_at" in fields:
            self.paused = fields["paused_at"] is not None
            if not self.paused:
                self.unpaused_seq = seq
        if "status" in fields and RunStatus(fields["status"]).is_final:
            if self.final_seq is not None:
                self.violations.append(
                    f"commit {seq}: run status set to {fields['status']} after it already "
                    f"ended {self.final_status.value} at commit {self.final_seq}")
                return
            self.final_seq, self.final_status = seq, RunStatus(fields["status"])
            if self.final_status in (RunStatus.FAILED, RunStatus.CANCELLED):
                self.failed_seq = seq
        elif self.final_seq is not None and set(fields) != {"hooks_pending"}:
            self.violations.append(f"commit {seq}: run record written after it ended: {fields}")

    def _slot_write(self, actor: str, slot: int, holder: str | None) -> None:
        key = ("slot", slot)
        self.writers[key].add(actor)
        self.write_count[(key, actor)] += 1
        self.slot_holder[slot] = holder
        if holder is not None:
            self.slot_holders_ever[slot].add(holder)

    def _check_parallelism(self, seq: int) -> None:
        # Hooks run after the run's end and take no slot (core/hooks.py).
        running = [t for t, s in self.status.items() if s is R and not hooks.is_hook(t)]
        self.max_running_records = max(self.max_running_records, len(running))
        if len(running) > self.scenario.max_parallel:
            self.violations.append(
                f"commit {seq}: {len(running)} tasks RUNNING ({running}), "
                f"max_parallel_tasks is {self.scenario.max_parallel}")
        if self.slots:
            holders = [h for h in self.slot_holder.values() if h is not None]
            if len(holders) != len(set(holders)):
                self.violations.append(f"commit {seq}: a task holds two slots: {self.slot_holder}")
            for task_id in running:
                if task_id not in holders:
                    self.violations.append(
                        f"commit {seq}: {task_id} is RUNNING without holding a slot")

