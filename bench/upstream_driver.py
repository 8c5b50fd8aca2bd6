"""Run one benchmark shape on Google's Function Flow 0.0.7, print JSON.

Executed by bench/firestore_bench.py with the python of a throwaway venv
that has `function-flow==0.0.7` from PyPI installed. Its module is also
called `function_flow`, so this script must never import our package: it
runs in its own process, and Python puts only this directory (bench/) and
that venv on its path.

    <venv>/bin/python bench/upstream_driver.py --shape chain-10 --workers 8 \
        --project P --timeout 60

FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST must point at the
emulators. Each worker thread gets its own `tasks.Job` (own Firestore and
Pub/Sub clients), as each Cloud Functions instance would, and calls its
`scheduler(event, context)`. Document operations and publishes are counted
at the RPC layer by bench/instrument.py, the same way as for our package.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import uuid

import harness
import instrument
from shapes import SHAPES, Shape


def build_job(shape: Shape, name: str, topic: str, project: str) -> object:
    from function_flow import tasks  # upstream's package, from this venv

    job = tasks.Job(name=name, schedule_topic=topic, project=project,
                    max_parallel_tasks=shape.max_parallel_tasks)
    for task_id, deps in shape.deps.items():
        job.task(task_id=task_id, deps=list(deps))(_noop)
    return job


def _noop(task: object, job: object) -> None:
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", required=True, choices=sorted(SHAPES))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--project", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--by-site", action="store_true")
    args = parser.parse_args(argv)

    import function_flow

    location = os.path.dirname(os.path.abspath(function_flow.__file__))
    if not location.startswith(sys.prefix):
        print(json.dumps({"error": f"function_flow comes from {location}, not from "
                                   f"the upstream venv {sys.prefix}"}))
        return 2

    counters = instrument.install(("function_flow/tasks.py",) if args.by_site else ())
    shape = SHAPES[args.shape]
    suffix = uuid.uuid4().hex[:6]
    name = f"up-{shape.name}-w{args.workers}"
    topic = f"SCHEDULE-{name}-{suffix}"
    with instrument.uncounted():
        subscription = harness.create_subscription(args.project, topic, f"sub-{name}-{suffix}")
        starter = build_job(shape, name, topic, args.project)
        workers = [build_job(shape, name, topic, args.project) for _ in range(args.workers)]
        schedulers = [w.make_scheduler() for w in workers]
        from google.cloud import firestore

        monitor = firestore.Client(project=args.project)
    counters.reset()

    def status() -> str | None:
        if starter.id is None:
            return None
        snapshot = monitor.collection("JobStatus").document(starter.id).get()
        value = (snapshot.to_dict() or {}).get("status")
        value = getattr(value, "value", value)
        return value if value in ("FINISHED", "FAILED") else None

    outcome = harness.drive(subscription, schedulers, starter.start, status, args.timeout)
    print(json.dumps({"side": "upstream", "shape": shape.name, "tasks": shape.size,
                      "workers": args.workers, **dataclasses.asdict(outcome),
                      "counts": counters.snapshot()}))
    sys.stdout.flush()
    # DNF runs may leave threads inside long transaction retries: do not wait.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
