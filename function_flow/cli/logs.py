"""`logs`: a run's events in order, with what each attempt printed.

Reads the backend the settings select, like `status` (cli/stores.py), and
needs no workflow file: the events are derived from the run's records
(function_flow/history.py). `--follow` prints new events as they happen
until the run ends; an attempt's output appears with its end (or when its
body returned and it waits for an event).

A foreach of many items would print three lines per item: beyond
items.SHOWN_ITEMS items, only those with a failed or retried attempt are
shown (up to items.SHOWN_FAILURES of them), and a closing line counts the
rest. `--items` shows every item; `--task 'node[17]'` one of them.
"""

from __future__ import annotations

import collections
import datetime
import time
from typing import Any, Iterable

import click

from function_flow import history, owners
from function_flow.cli import items, progress, run_json
from function_flow.cli.common import fail
from function_flow.cli.stores import get_run, open_selected
from function_flow.core.definition import did_you_mean
from function_flow.core.records import ITEM_ROLES, RunRecord, TaskRecord, TaskStatus

#: Seconds between two looks at the run with --follow. Each look reads every
#: task record (Firestore bills each read), so a run of N tasks is looked at
#: no more often than every N / READS_PER_SECOND seconds.
FOLLOW_INTERVAL = 0.5
READS_PER_SECOND = 2000
#: Once the run ended, how long --follow waits for tasks still finishing
#: (a running body, leftovers being cancelled, hooks).
FOLLOW_GRACE_SECONDS = 10.0
_END_KINDS = ("succeeded", "retried", "failed", "cancelled", "interrupted")


@click.command()
@click.argument("run_id")
@click.option("--task", "task_ids", multiple=True, metavar="ID",
              help="Only this task (repeatable); a sub-DAG node or a foreach includes "
                   "its tasks or items.")
@click.option("--follow", "-f", is_flag=True, help="Print new events until the run ends.")
@click.option("--items", "all_items", is_flag=True,
              help="Show every item of a foreach, not only those that failed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def logs(run_id: str, task_ids: tuple[str, ...], follow: bool, all_items: bool,
         as_json: bool) -> None:
    """Print the events of RUN_ID in order (created, queued, claimed, succeeded,
    retried, failed, skipped, paused, ...) with the output of each attempt."""
    selected = open_selected()
    run = get_run(selected, run_id)  # one error line when there is no store yet
    store = selected.store
    assert store is not None
    tasks = store.get_tasks(run_id)
    check_tasks(run_id, task_ids, tasks)
    out = progress.make_console()
    printer = Printer(out, as_json)
    if not as_json:
        printer.line(f"run {run_id} (job {run.job_name}) in {selected.description}")
    view = View(task_ids, all_items)
    if not follow:
        printer.show(view.events(run, tasks))
        printer.notes(view.notes(tasks))
        return
    follow_run(store, run_id, selected.description, tasks, view, printer,
               embedded=selected.kind == "embedded")


def follow_run(store: Any, run_id: str, where: str, tasks: list[TaskRecord], view: "View",
               printer: "Printer", embedded: bool = False) -> None:
    """Print new events until the run has ended and its last tasks have settled.

    An embedded run whose process is gone advances no more until someone
    resumes it: that is said once (on stderr), and the following goes on.
    """
    last = [0.0]
    told = [False]

    def fetch() -> tuple[RunRecord, list[TaskRecord]]:
        pause = len(tasks) / READS_PER_SECOND - (time.monotonic() - last[0])
        if pause > 0:
            time.sleep(pause)
        last[0] = time.monotonic()
        current = store.get_run(run_id)
        if current is None:
            fail(f"run {run_id} vanished from {where}")
        tasks[:] = store.get_tasks(run_id)
        if embedded and not told[0] and not current.status.is_final and current.owner \
                and owners.owner_state(current.owner) == owners.OWNER_GONE:
            told[0] = True
            click.echo(f"note: the process that ran run {run_id} ({current.owner}) is gone, "
                       f"so nothing advances it until function-flow resume {run_id}; "
                       "still following (Ctrl-C stops)", err=True)
        return current, tasks

    def new_lines(current: RunRecord, records: list[TaskRecord]) -> list[str]:
        return printer.fresh(view.events(current, records))

    progress.follow(fetch, printer.out, interval=FOLLOW_INTERVAL, lines=new_lines)
    deadline = time.monotonic() + FOLLOW_GRACE_SECONDS
    run, _ = fetch()  # (fetch refreshes `tasks` in place)
    while (run.hooks_pending or any(t.status in (TaskStatus.RUNNING, TaskStatus.QUEUED)
                                    for t in tasks)) and time.monotonic() < deadline:
        time.sleep(FOLLOW_INTERVAL)
        run, _ = fetch()
    printer.show(view.events(run, tasks))
    printer.notes(view.notes(tasks))


#: How many of a run's task ids an unknown --task's error lists.
SHOWN_TASKS = 20


def check_tasks(run_id: str, wanted: Iterable[str], tasks: list[TaskRecord]) -> None:
    """One error line for a --task the run does not have."""
    known = {t.task_id for t in tasks if not t.task_id.startswith("__")}
    for task_id in wanted:
        if not any(_covers(task_id, k) for k in known):
            names = sorted(k for k in known if "[" not in k)
            hint = did_you_mean(task_id, names)
            more = f" and {len(names) - SHOWN_TASKS} more" if len(names) > SHOWN_TASKS else ""
            fail(f"run {run_id} has no task {task_id!r}{hint}; its tasks: "
                 f"{', '.join(names[:SHOWN_TASKS])}{more}")


def _covers(wanted: str, task_id: str) -> bool:
    """Whether --task `wanted` includes `task_id` (itself, its sub-DAG's, its items)."""
    return task_id == wanted or task_id.startswith((wanted + "/", wanted + "["))


class View:
    """Which tasks' events are shown: --task, and a foreach's items collapsed."""

    def __init__(self, task_ids: Iterable[str], all_items: bool) -> None:
        self.task_ids = tuple(task_ids)
        self.all_items = all_items

    def chosen(self, tasks: list[TaskRecord]) -> list[TaskRecord]:
        tasks = [t for t in tasks if not t.task_id.startswith("__")]
        if self.task_ids:
            tasks = [t for t in tasks if any(_covers(w, t.task_id) for w in self.task_ids)]
        shown, _ = self._split(tasks)
        return shown

    def _split(self, tasks: list[TaskRecord]
               ) -> tuple[list[TaskRecord], dict[str, list[TaskRecord]]]:
        """(tasks shown, the hidden item records of each foreach).

        A foreach's items are its instances `node[i]`: the item's record and,
        for a foreach over a sub-DAG, its copy's tasks `node[i]/t`.
        """
        if self.all_items:
            return tasks, {}
        nodes: dict[str, dict[str, list[TaskRecord]]] = collections.defaultdict(
            lambda: collections.defaultdict(list))
        for task in tasks:
            instance = _instance(task)
            if instance is not None and instance not in self.task_ids:
                nodes[instance.rpartition("[")[0]][instance].append(task)
        hidden: dict[str, list[TaskRecord]] = {}
        for node, instances in nodes.items():
            if len(instances) <= items.SHOWN_ITEMS:
                continue
            failing = [i for i, records in instances.items()
                       if any(_failed_once(t) for t in records)][:items.SHOWN_FAILURES]
            hidden[node] = [t for i, records in instances.items() if i not in failing
                            for t in records]
        gone = {t.task_id for group in hidden.values() for t in group}
        return [t for t in tasks if t.task_id not in gone], hidden

    def events(self, run: RunRecord, tasks: list[TaskRecord]) -> list[history.Event]:
        found = history.run_events(run) if not self.task_ids else []
        times = history.redrive_times(run)
        for task in self.chosen(tasks):
            found.extend(history.task_events(task, times))
        return history.ordered(found)

    def notes(self, tasks: list[TaskRecord]) -> list[str]:
        """A closing line per foreach whose items were not all shown."""
        chosen = [t for t in tasks if not self.task_ids
                  or any(_covers(w, t.task_id) for w in self.task_ids)]
        _, hidden = self._split(chosen)
        lines = []
        for node, group in hidden.items():
            shown = [t for t in group if t.role == "item"] or group
            counts = collections.Counter(t.status.value for t in shown)
            counted = ", ".join(f"{n:,} {s}" for s, n in counts.most_common())
            lines.append(f"({len(shown):,} items of {node} not shown: {counted}; "
                         f"--items shows them, --task '{node}[N]' one of them)")
        return lines


def _instance(task: TaskRecord) -> str | None:
    """`node[i]` for the records of a foreach's item i, else None."""
    if task.role not in ITEM_ROLES or "[" not in task.task_id:
        return None
    return task.task_id.partition("]")[0] + "]"


def _failed_once(task: TaskRecord) -> bool:
    return task.status is TaskStatus.FAILED or any(
        a.outcome in ("failed", "interrupted") for a in history.attempts(task))


class Printer:
    """Prints each event once (--follow looks again and again)."""

    def __init__(self, out: Any, as_json: bool) -> None:
        self.out, self.as_json = out, as_json
        self.seen: set[tuple] = set()
        self.printed_output: dict[tuple, str] = {}
        self.day: str | None = None

    def line(self, text: str) -> None:
        self.out.print(text, markup=False, soft_wrap=True, highlight=False)

    def show(self, events: list[history.Event]) -> None:
        for text in self.fresh(events):
            self.line(text)

    def fresh(self, events: list[history.Event]) -> list[str]:
        """The lines of the events not printed yet."""
        found = []
        for event in events:
            key = (event.kind, event.task_id, event.attempt, event.redrive, event.at)
            if key in self.seen:
                continue
            self.seen.add(key)
            if self.as_json:
                found.append(run_json.dumps(event.to_json()))
            else:
                found.extend(self.lines(event))
        return found

    def notes(self, lines: list[str]) -> None:
        if not self.as_json:
            for text in lines:
                self.line(text)

    def lines(self, event: history.Event) -> list[str]:
        moment = datetime.datetime.fromtimestamp(event.at)
        day = moment.strftime("%Y-%m-%d")
        found = []
        if day != self.day:
            self.day = day
            found.append(f"--- {day} ---")
        who = "run" if event.task_id is None else event.task_id
        if event.attempt is not None:
            who += f" #{event.attempt}" + (f" (redrive {event.redrive})" if event.redrive
                                           else "")
        head = f"{moment.strftime('%H:%M:%S.%f')[:-3]}  {event.kind:<15} {who}"
        found.append(head + (f"  {event.detail}" if event.detail else ""))
        attempt = (event.task_id, event.attempt, event.redrive)
        if event.output and self.printed_output.get(attempt) != event.output:
            self.printed_output[attempt] = event.output
            found.append("    output:" if not event.output_cut else
                         f"    output (its first {event.output_cut:,} characters cut):")
            found.extend(_indented(event.output, "    | "))
        if event.error and event.kind in _END_KINDS:
            found.append("    error:")
            found.extend(_indented(event.error, "    ! "))
        return found


def _indented(text: str, prefix: str) -> list[str]:
    return [prefix + line for line in text.rstrip("\n").splitlines()]

