"""Where each node of a run's graph goes: levels by depth, top to bottom, as SVG boxes.

The levels are `function-flow graph`'s (cli/graphs.levels): a task sits one
level below the deepest of its dependencies, and a sub-DAG is one node of
its scope. A level wider than PER_ROW wraps onto several rows, so a run of
1,000 tasks is a tall page, not one 100,000-pixel row. A sub-DAG or a
foreach is collapsed into one box unless the page asks to open it
(`expanded`): an open sub-DAG is a frame around its own levels, an open
foreach a grid of its first ITEMS_SHOWN items (the items page lists the
rest, a page at a time). Nothing here knows statuses: model.py colours the
boxes by id.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from function_flow import subdags
from function_flow.cli import graphs
from function_flow.core.graph import Dag

NODE_W, NODE_H = 176.0, 50.0
GAP_X, GAP_Y = 20.0, 44.0
PAD, TITLE = 12.0, 38.0
PER_ROW = 8
#: Items drawn in an open foreach; the items page shows them all, paged.
ITEMS_SHOWN = 100
CELL, CELL_GAP, CELLS_PER_ROW = 14.0, 3.0, 20
#: More edges than this are not drawn (the boxes still are).
MAX_EDGES = 5000
LABEL_CHARS = 22


@dataclasses.dataclass
class Box:
    """One drawn node: a task, a (collapsed or open) sub-DAG, or a foreach."""

    id: str
    #: "task", "subdag" (collapsed), "frame" (open sub-DAG), "foreach"
    #: (collapsed) or "items" (an open foreach: a grid of item cells).
    kind: str
    w: float
    h: float
    x: float = 0.0
    y: float = 0.0
    children: list["Box"] = dataclasses.field(default_factory=list)
    #: An open foreach's cells: (item index, x, y).
    cells: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        text = subdags.local_id(self.id)
        return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "\u2026"

    @property
    def openable(self) -> bool:
        return self.kind in ("subdag", "frame", "foreach", "items")

    @property
    def is_open(self) -> bool:
        return self.kind in ("frame", "items")

    def move(self, dx: float, dy: float) -> None:
        self.x += dx
        self.y += dy
        self.cells = [(i, x + dx, y + dy) for i, x, y in self.cells]
        for child in self.children:
            child.move(dx, dy)

    def walk(self) -> Iterator["Box"]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclasses.dataclass
class Edge:
    source: str
    target: str
    path: str


@dataclasses.dataclass
class Drawing:
    boxes: list[Box]
    edges: list[Edge]
    width: float
    height: float
    #: Edges left out (more than MAX_EDGES).
    edges_hidden: int = 0

    def all_boxes(self) -> Iterator[Box]:
        for box in self.boxes:
            yield from box.walk()


def layout(dag: Dag, *, foreach: set[str], expanded: set[str],
           item_counts: dict[str, int]) -> Drawing:
    """The drawing of `dag`: `foreach` names its foreach nodes, `expanded` the
    groups shown open, `item_counts` how many items each foreach has so far."""
    boxes, width, height = _scope(dag, "", foreach, expanded, item_counts)
    for box in boxes:
        box.move(PAD, PAD)
    drawing = Drawing(boxes, [], width + 2 * PAD, height + 2 * PAD)
    _connect(dag, drawing)
    return drawing


def _scope(dag: Dag, scope: str, foreach: set[str], expanded: set[str],
           item_counts: dict[str, int]) -> tuple[list[Box], float, float]:
    """The boxes of one scope laid out in rows, relative to (0, 0); its size."""
    rows: list[list[Box]] = []
    for level in graphs.levels(dag, scope):
        for start in range(0, len(level), PER_ROW):
            rows.append([_box(dag, t, foreach, expanded, item_counts)
                         for t in level[start:start + PER_ROW]])
    if not rows:
        return [], NODE_W, NODE_H
    widths = [sum(b.w for b in row) + GAP_X * (len(row) - 1) for row in rows]
    width = max(widths)
    y = 0.0
    boxes = []
    for row, row_width in zip(rows, widths):
        x = (width - row_width) / 2
        for box in row:
            box.move(x, y)
            x += box.w + GAP_X
            boxes.append(box)
        y += max(b.h for b in row) + GAP_Y
    return boxes, width, y - GAP_Y


def _box(dag: Dag, task_id: str, foreach: set[str], expanded: set[str],
         item_counts: dict[str, int]) -> Box:
    spec = dag.tasks[task_id]
    if subdags.is_join(spec):
        if task_id not in expanded:
            return Box(task_id, "subdag", NODE_W, NODE_H)
        inner, width, height = _scope(dag, task_id + subdags.SEPARATOR, foreach, expanded,
                                      item_counts)
        frame = Box(task_id, "frame", max(NODE_W, width + 2 * PAD), height + TITLE + 2 * PAD)
        for child in inner:
            child.move((frame.w - width) / 2, TITLE + PAD)
        frame.children = inner
        return frame
    if task_id not in foreach:
        return Box(task_id, "task", NODE_W, NODE_H)
    if task_id not in expanded:
        return Box(task_id, "foreach", NODE_W, NODE_H)
    shown = min(item_counts.get(task_id, 0), ITEMS_SHOWN)
    columns = min(max(shown, 1), CELLS_PER_ROW)
    lines = -(-shown // CELLS_PER_ROW)
    step = CELL + CELL_GAP
    box = Box(task_id, "items", max(NODE_W, columns * step - CELL_GAP + 2 * PAD),
              TITLE + max(lines, 1) * step + 2 * PAD + 14)
    box.cells = [(i, PAD + (i % CELLS_PER_ROW) * step, TITLE + PAD + (i // CELLS_PER_ROW) * step)
                 for i in range(shown)]
    return box


def _connect(dag: Dag, drawing: Drawing) -> None:
    """An edge for each dependency drawn in the same scope as its dependent.

    A sub-DAG's roots wait for what the sub-DAG waits for: that edge goes to
    the frame, not again into it.
    """
    placed = {box.id: box for box in drawing.all_boxes()}
    edges = []
    for box in placed.values():
        scope = subdags.scope_of(box.id)
        for dep in graphs.shown_deps(dag, box.id):
            source = placed.get(dep)
            if source is None or subdags.scope_of(dep) != scope:
                continue
            edges.append((source, box))
    drawing.edges_hidden = max(0, len(edges) - MAX_EDGES)
    for source, target in edges[:MAX_EDGES]:
        x1, y1 = source.x + source.w / 2, source.y + source.h
        x2, y2 = target.x + target.w / 2, target.y
        bend = max(16.0, (y2 - y1) / 2)
        drawing.edges.append(Edge(source.id, target.id,
                                  f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} "
                                  f"{x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}"))
