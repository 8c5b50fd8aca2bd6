"""Sub-DAGs: a job defined once, used inside another job as one node.

    prep = tasks.Job(name="prep")
    @prep.task(task_id="clean")
    def clean(task, job): ...

    main = tasks.Job(name="main")
    main.subdag(task_id="left", dag=prep, deps=["extract"])

A sub-DAG is expanded statically when the parent's `Dag` is built, so the
engine, the stores and the run's records know nothing of it: each task `t`
of the sub-DAG becomes the task `left/t` (settings, body and remote call
kept), the sub-DAG's roots depend on the node's deps, and a join task
`left` depends on the sub-DAG's sinks. Tasks that depend on the node depend
on that join, whose result is the node's result: its sink's result, or
{sink id: result} when it has several. Nesting gives `outer/inner/t`.

Ids resolve like nested scopes: inside `left/clean`'s body,
`job.get_task_result("split")` reads `left/split`, the sibling in the same
instance of the sub-DAG, and falls back to the enclosing levels (the
parent's `extract`), which is what makes a sub-DAG's bodies reusable.

A foreach can run a sub-DAG per item (`job.foreach(..., dag=prep)`): that
node is not expanded here but stays one foreach task holding the sub-DAG's
Dag, and each item gets its own copy of the tasks as it runs, `node[3]/t`
(core/foreach.py). Ids resolve the same way inside such a copy.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
from typing import Any, Container, Iterable, Optional

from function_flow.core.definition import ForEach
from function_flow.core.graph import Dag, TaskSpec, make_spec
from function_flow.errors import DefinitionError

SEPARATOR = "/"

__all__ = ["SubDag", "add", "compose", "expand", "is_current", "scope_of", "resolve",
           "local_id", "grouped", "node_ids", "contains"]

#: Jobs whose Dag is being composed in this thread, outermost first: a job
#: met again inside its own composition includes itself.
_composing: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "function_flow_composing", default=())


@dataclasses.dataclass(frozen=True)
class SubDag:
    """One use of a job as a node of another job."""

    node_id: str
    job: Any  # tasks.Job (not imported: tasks imports this module)
    deps: tuple[str, ...]
    #: How many tasks the parent had declared before this node, to keep
    #: declaration order among independent tasks and nodes.
    position: int
    #: Set for a foreach over the sub-DAG: one copy of it per item.
    foreach: Optional[ForEach] = None


class ComposedDag(Dag):
    """A Dag with sub-DAGs expanded in it; remembers what it was built from."""

    def __init__(self, name: str, specs: Iterable[TaskSpec],
                 sources: tuple[tuple[Any, Dag], ...], jobs: dict[str, str]) -> None:
        super().__init__(name, specs)
        #: (sub-job, the Dag of it that was expanded), for each direct node.
        self.sources = sources
        #: Node id (nested ones too: "outer/inner") -> the name of its job.
        self.subdag_jobs = jobs


# ------------------------------------------------------------------ ids


def scope_of(task_id: str) -> str:
    """The prefix of the sub-DAG instance `task_id` is in: "left/" for "left/clean"."""
    head, sep, _ = task_id.rpartition(SEPARATOR)
    return head + sep


def local_id(task_id: str) -> str:
    """The id a task has in its own sub-DAG: "clean" for "left/clean"."""
    return task_id.rpartition(SEPARATOR)[2]


#: The item index in an id of a foreach's sub-DAG copy: "node[3]/t".
_ITEM_INDEX = re.compile(r"\[\d+\](?=/|$)")


def template_of(task_id: str) -> str:
    """The id of the declared task a task runs as: "node/t" for "node[3]/t"."""
    return _ITEM_INDEX.sub("", task_id) if "[" in task_id else task_id


def in_copy(task_id: str, item_id: str) -> str:
    """The id the declared task `task_id` has in the foreach copy `item_id` is
    part of: "node[3]/a" for "node/a" seen from "node[3]/b"; any other id as is.

    What a member's `task.deps` shows, so that its ids name records.
    """
    match = _ITEM_INDEX.search(item_id)
    if match is None:
        return task_id
    copy = item_id[:match.end()]
    template = template_of(copy)
    if task_id.startswith(template + SEPARATOR):
        return copy + task_id[len(template):]
    return task_id


def resolve(scope: str, task_id: str, known: Container[str]) -> Optional[str]:
    """The task `task_id` names from inside `scope`: innermost level first.

    From "outer/inner/" the id "x" is looked for as "outer/inner/x", then
    "outer/x", then "x"; from "node[3]/" (an item's copy of a foreach's
    sub-DAG) as "node[3]/x", then "x". None if no level has it.
    """
    while True:
        if template_of(scope + task_id) in known:
            return scope + task_id
        if not scope:
            return None
        scope = scope_of(scope[:-len(SEPARATOR)])


def node_ids(task_ids: Iterable[str]) -> set[str]:
    """The sub-DAG nodes among `task_ids`' ancestors: "a" and "a/b" for "a/b/c"."""
    nodes = set()
    for task_id in task_ids:
        parts = task_id.split(SEPARATOR)
        for end in range(1, len(parts)):
            nodes.add(SEPARATOR.join(parts[:end]))
    return nodes


def grouped(task_ids: Iterable[str]) -> list[str]:
    """`task_ids` with each sub-DAG node first, then its tasks, recursively.

    A group takes the place of the first of its ids; order is otherwise
    kept. For people (status, progress): a node's join task runs last but
    is the group's heading.
    """
    ids = list(task_ids)
    children: dict[str, list[str]] = {}
    seen: set[str] = set()
    for task_id in ids:
        parts = task_id.split(SEPARATOR)
        parent = ""
        for end in range(1, len(parts) + 1):
            key = SEPARATOR.join(parts[:end])
            if key not in seen:
                seen.add(key)
                children.setdefault(parent, []).append(key)
            parent = key
    present = set(ids)
    out: list[str] = []
    stack = list(reversed(children.get("", [])))
    while stack:
        key = stack.pop()
        if key in present:
            out.append(key)
        stack.extend(reversed(children.get(key, [])))
    return out


def indented(task_id: str) -> str:
    """A task id indented by how deep in sub-DAGs it is, for tables."""
    return "  " * task_id.count(SEPARATOR) + task_id


# ------------------------------------------------------------ expansion


def expand(node_id: str, dag: Dag, deps: tuple[str, ...]) -> list[TaskSpec]:
    """The specs of sub-DAG `dag` used as node `node_id` after `deps`.

    Each task `t` becomes `node_id/t` with every setting kept; roots depend
    on `deps`; the join task `node_id` depends on the sinks.
    """
    prefix = node_id + SEPARATOR
    specs = []
    for task_id in dag.order:
        spec = dag.tasks[task_id]
        inner = tuple(prefix + dep for dep in spec.deps) if spec.deps else tuple(deps)
        foreach = spec.foreach and dataclasses.replace(spec.foreach,
                                                      over=prefix + spec.foreach.over)
        specs.append(dataclasses.replace(spec, task_id=prefix + task_id, deps=inner,
                                         foreach=foreach))
    # none_failed: a branch inside that skips a sink does not skip the node.
    join = make_spec("join", None, join_results, retries=2, retry_backoff=1.0,
                     trigger_rule="none_failed")
    specs.append(dataclasses.replace(join, task_id=node_id,
                                     deps=tuple(prefix + sink for sink in dag.sinks)))
    return specs


def join_results(task: Any, job: Any) -> Any:
    """The body of a node's join task: its sub-DAG's result.

    The sink's result, or {sink id: result} for several sinks, keyed by
    their ids inside the sub-DAG.
    """
    results = {local_id(dep): job.get_task_result(dep) for dep in task.deps}
    if len(results) == 1:
        return next(iter(results.values()))
    return results


def is_join(spec: TaskSpec) -> bool:
    """Whether `spec` is a sub-DAG node's join task."""
    return spec.func is join_results


# ---------------------------------------------------------- definition


def add(parent: Any, node_id: Any, dag: Any, deps: Any,
        foreach: Optional[ForEach] = None) -> SubDag:
    """Check one `parent.subdag(...)` (or `parent.foreach(..., dag=)`) call now
    and return its node.

    Errors name the node (and the task inside, for errors of the sub-DAG):
    a bad or taken id, something other than a Job, a job that would contain
    itself, a sub-DAG whose own definition is invalid, or, for a foreach, a
    sub-DAG that runs a foreach of its own.
    """
    from function_flow.tasks import Job

    try:
        spec = make_spec(node_id, deps, None, foreach=foreach)
    except DefinitionError as exc:
        raise DefinitionError(f"sub-DAG in job {parent.name!r}: {exc}", exc.task_id) from None
    where = f"sub-DAG {node_id!r} of job {parent.name!r}"
    if not isinstance(dag, Job):
        raise DefinitionError(
            f"{where}: dag must be a tasks.Job whose tasks are declared, got "
            f"{type(dag).__name__}", node_id)
    check_free(parent, node_id)
    if dag is parent or contains(dag, parent):
        raise DefinitionError(
            f"{where}: job {dag.name!r} "
            + ("is this job" if dag is parent else f"contains job {parent.name!r}")
            + "; a DAG cannot contain itself", node_id)
    sub = _sub_dag(dag, node_id, parent.name)  # its own errors, now, naming the node
    if foreach is not None:
        _refuse_inner_foreach(node_id, parent.name, dag.name, sub)
    return SubDag(node_id, dag, spec.deps, len(parent._specs), foreach)


def _refuse_inner_foreach(node_id: str, parent: str, job_name: str, sub: Dag) -> None:
    """A foreach's copied job may not run a foreach: checked where it is used,
    and again when the graph is built (a task added to that job later)."""
    inner = [t for t, s in sub.tasks.items() if s.foreach is not None]
    if inner:
        raise DefinitionError(
            f"foreach {node_id!r} of job {parent!r} runs job {job_name!r} per item, "
            f"whose task {inner[0]!r} is a foreach itself; a foreach inside a foreach's "
            "sub-DAG is not supported: run the inner foreach as a task of the parent",
            node_id)


def check_free(parent: Any, task_id: str, adding: str = "sub-DAG") -> None:
    """Refuse `task_id`, for the task or sub-DAG `parent` is `adding`, if a task or
    a sub-DAG of `parent` already has it: a look-up in the ids `declare` keeps, so
    a job of 10,000 tasks is not quadratic to define."""
    taken_by = parent._ids.get(task_id)
    if taken_by == "task" and adding == "task":
        raise DefinitionError(
            f"task {task_id!r} is defined twice in job {parent.name!r}; "
            "task ids must be unique", task_id)
    if taken_by == "sub-DAG":
        raise DefinitionError(
            f"id {task_id!r} is already sub-DAG {task_id!r} of job {parent.name!r}; "
            "task and sub-DAG ids must be unique", task_id)
    if taken_by == "task":
        raise DefinitionError(
            f"sub-DAG {task_id!r} of job {parent.name!r}: the job already has a task "
            f"{task_id!r}; task and sub-DAG ids must be unique", task_id)


def declare(parent: Any, entry: TaskSpec | SubDag) -> None:
    """Add a task's spec or a sub-DAG node to `parent`, and its id to the ids
    check_free looks in: the one place a job's `_specs` and `_subdags` grow."""
    if isinstance(entry, SubDag):
        parent._subdags.append(entry)
        parent._ids[entry.node_id] = "sub-DAG"
    else:
        parent._specs.append(entry)
        parent._ids[entry.task_id] = "task"


def contains(job: Any, other: Any) -> bool:
    """Whether `other` is used as a sub-DAG somewhere inside `job`."""
    pending, seen = [job], set()
    while pending:
        current = pending.pop()
        for node in current._subdags:
            if node.job is other:
                return True
            if id(node.job) not in seen:
                seen.add(id(node.job))
                pending.append(node.job)
    return False


def compose(job: Any) -> Dag:
    """The job's validated Dag, its sub-DAGs expanded.

    The graph with each node as one task is validated first, so unknown
    deps and cycles through a node name the node, not its inner tasks.
    """
    if not job._subdags:
        return Dag(job.name, job._specs)
    outer = _composing.get()
    if any(j is job for j in outer):
        raise DefinitionError(f"job {job.name!r} contains itself as a sub-DAG; a DAG "
                              "cannot contain itself")
    token = _composing.set(outer + (job,))
    try:
        entries = _in_order(job._specs, job._subdags)
        try:  # each node as one task: unknown deps and cycles name the node
            Dag(job.name, [spec for spec, _ in entries])
        except DefinitionError as exc:
            if any(node is not None and node.node_id == exc.task_id for _, node in entries):
                raise DefinitionError(f"sub-DAG {exc.task_id!r} of job {job.name!r}: {exc}",
                                      exc.task_id) from None
            raise
        specs: list[TaskSpec] = []
        sources, names = [], {}
        for spec, node in entries:
            if node is None:
                specs.append(spec)
                continue
            sub = _sub_dag(node.job, node.node_id, job.name)
            sources.append((node.job, sub))
            names[node.node_id] = node.job.name
            if node.foreach is not None:  # one copy per item, as the run goes
                _refuse_inner_foreach(node.node_id, job.name, node.job.name, sub)
                specs.append(make_spec(node.node_id, node.deps, None,
                                       foreach=dataclasses.replace(node.foreach, dag=sub)))
                continue
            for inner, name in getattr(sub, "subdag_jobs", {}).items():
                names[node.node_id + SEPARATOR + inner] = name
            specs.extend(expand(node.node_id, sub, node.deps))
        return ComposedDag(job.name, specs, tuple(sources), names)
    finally:
        _composing.reset(token)


def is_current(dag: Dag) -> bool:
    """False when a sub-job changed after `dag` expanded it (rebuild it then)."""
    try:
        return all(job.dag is sub for job, sub in getattr(dag, "sources", ()))
    except DefinitionError:
        return False  # rebuilding raises it again, naming the node


def _in_order(specs: list[TaskSpec], nodes: list[SubDag]
              ) -> list[tuple[TaskSpec, SubDag | None]]:
    """Tasks, and nodes as tasks without a body, in declaration order."""
    keyed: list[tuple[tuple[int, int, int], TaskSpec, SubDag | None]] = [
        ((i, 1, 0), spec, None) for i, spec in enumerate(specs)]
    keyed += [((node.position, 0, n), make_spec(node.node_id, node.deps, None,
                                                foreach=node.foreach), node)
              for n, node in enumerate(nodes)]
    return [(spec, node) for _, spec, node in sorted(keyed, key=lambda entry: entry[0])]


def _sub_dag(job: Any, node_id: str, parent: str) -> Dag:
    """`job.dag`, its errors told as errors of node `node_id` of job `parent`."""
    try:
        return job.dag
    except DefinitionError as exc:
        inner = getattr(exc, "subdag", None)
        path = node_id + SEPARATOR + inner if inner else node_id
        task_id = node_id + SEPARATOR + exc.task_id if exc.task_id else None
        base = getattr(exc, "base_message", str(exc))
        where = f"sub-DAG {path!r} of job {parent!r}"
        if task_id:
            where += f", task {task_id!r}"
        error = DefinitionError(f"{where}: {base}", task_id or node_id)
        error.subdag = path  # type: ignore[attr-defined]
        error.base_message = base  # type: ignore[attr-defined]
        raise error from None
