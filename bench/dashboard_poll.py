"""What one live poll of the dashboard's run page reads, on a big run.

    .venv/bin/python bench/dashboard_poll.py                 # embedded store (SQLite), a few seconds
    .venv/bin/python bench/dashboard_poll.py --firestore     # Firestore emulator (started here), ~30 s

The run has 1,000 tasks (10 levels of 100) and a foreach of 10,000 items in
100 lanes: 900 items done, 100 running, 9,000 waiting their turn. Its records
are written straight into the store (no task runs), then the dashboard's app
(`create_app`, through Flask's test client) serves the run page once and the
page's live poll (`/api/runs/RUN`) a few times. For each request it prints the
records the dashboard read (`full` when it read them all), the Firestore reads
billed (`store.reads`), the response size and the wall time. The README's
table in "The dashboard" comes from this script.

`--firestore` needs the Google Cloud CLI's `cloud-firestore-emulator`
component and Java; the emulator is stopped by its process group at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]  # the run is tests/dashboard_runs.py's

from function_flow.core import versions  # noqa: E402
from function_flow.core.records import RunRecord  # noqa: E402
from function_flow.dashboard import create_app  # noqa: E402
from function_flow.dashboard.app import EXTENSION  # noqa: E402

from dashboard_runs import big_job, poll_records as records  # noqa: E402

logging.disable(logging.WARNING)

def measure(store: Any, label: str, args: argparse.Namespace) -> None:
    job = big_job()
    recs = records(job, args.items, args.done, args.running)
    started = time.perf_counter()
    store.create_run(RunRecord(run_id="big", job_name="big", dag_hash=versions.of(job.dag).hash,
                               args={}, created_at=1.0), recs, {})
    print(f"{label}: wrote {len(recs):,} records in {time.perf_counter() - started:.1f} s")
    app = create_app(lambda: store, jobs={"big": job})
    live = app.extensions[EXTENSION].live
    client = app.test_client()
    requests = [("page load", "/runs/big")] + [(f"poll {n}", "/api/runs/big")
                                               for n in range(1, args.polls + 1)]
    print("| request | records read | Firestore reads | bytes | ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, url in requests:
        reads = getattr(store, "reads", None)
        started = time.perf_counter()
        response = client.get(url)
        took = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"error: {url} answered HTTP {response.status_code}")
        billed = "-" if reads is None else f"{store.reads - reads:,}"
        kind = "full" if live.last.full else "changed only"
        print(f"| {name} | {live.last.records:,} ({kind}) | {billed} | "
              f"{len(response.data):,} | {took * 1000:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--firestore", action="store_true",
                        help="use the Firestore emulator (started and stopped here)")
    parser.add_argument("--items", type=int, default=10_000, help="foreach items (10,000)")
    parser.add_argument("--done", type=int, default=900, help="items done (900)")
    parser.add_argument("--running", type=int, default=100, help="items running (100)")
    parser.add_argument("--polls", type=int, default=3, help="polls after the page load (3)")
    args = parser.parse_args()
    if args.firestore:
        from function_flow.local import emulators
        from function_flow.store.firestore import FirestoreStore

        emulator = emulators.start("firestore", emulators.DEFAULT_PROJECT)
        try:
            os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
            measure(FirestoreStore(project=emulators.DEFAULT_PROJECT, prefix="poll_"),
                    "Firestore emulator", args)
        finally:
            emulator.stop()
    else:
        from function_flow.store.sqlite import SqliteStore

        with tempfile.TemporaryDirectory() as directory:
            measure(SqliteStore(os.path.join(directory, "poll.db")), "embedded (SQLite)", args)


if __name__ == "__main__":
    main()
