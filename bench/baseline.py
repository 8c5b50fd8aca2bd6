"""The previous figures of firestore_bench.py, and this run's ratio to them.

`bench/firestore_baseline.json` holds, per shape and worker count, the ms
per task and document operations per task of an earlier run (its "note"
says which code and when). Every run prints its own figures beside them;
`--save-baseline` writes this run's figures there, to compare the next
change against. Imports no function_flow code.
"""

from __future__ import annotations

import json
import os
from typing import Any

from firestore_report import Result

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "firestore_baseline.json")


def figures(result: Result) -> dict[str, float]:
    return {"ms_per_task": round(1000 * result.seconds / result.tasks, 2),
            "ops_per_task": round(result.doc_ops_per_task, 2),
            "finished": result.finished}


def load(path: str = PATH) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"note": "none", "figures": {}}


def save(results: list[Result], note: str, path: str = PATH,
         keep: dict[str, Any] | None = None) -> None:
    """Write this run's figures (over those of `keep` for the same cases)."""
    kept = dict((keep or {}).get("figures", {}))
    kept.update({f"{r.shape} w{r.workers}": figures(r) for r in results if r.side == "ours"})
    data = {"note": note, "figures": kept}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")


def table(results: list[Result], baseline: dict[str, Any]) -> str:
    """Markdown: this run's ms/task and ops/task beside the baseline's, with ratios."""
    lines = [f"Previous figures: {baseline.get('note', 'none')}", "",
             "| shape | workers | ms/task | ops/task | previous ms/task | previous ops/task "
             "| ms ratio | ops ratio |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r.side != "ours":
            continue
        now = figures(r)
        before = baseline.get("figures", {}).get(f"{r.shape} w{r.workers}")
        ms = f"{now['ms_per_task']:.2f}" if r.finished else "DNF"
        if before is None:
            cells = ["-", "-", "-", "-"]
        else:
            old_ms = f"{before['ms_per_task']:.2f}" if before.get("finished", True) else "DNF"
            cells = [old_ms, f"{before['ops_per_task']:.2f}",
                     f"{now['ms_per_task'] / before['ms_per_task']:.2f}"
                     if r.finished and before.get("finished", True) else "-",
                     f"{now['ops_per_task'] / before['ops_per_task']:.2f}"]
        lines.append(f"| {r.shape} | {r.workers} | {ms} | {now['ops_per_task']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
