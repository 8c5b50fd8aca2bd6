"""The ASL corpus's adapter: one execution on the embedded backend, start to end.

`python tests/asl_corpus/runner.py function_flow.asl.adapter` runs the whole
corpus through the engine (SQLite store, in-process bus: the same code
paths as `function-flow run`); `run_asl(..., store=...)` runs one on another
store (the tests use the Firestore emulator's).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

from function_flow.asl.job import StateMachine

#: Longest an execution of the corpus may take (its Retry cases wait ~8 s).
TIMEOUT_SECONDS = 60.0


def run_asl(definition: dict[str, Any], input: Any, tasks: dict[str, Callable[..., Any]],
            store: Any = None) -> dict[str, Any]:
    from function_flow.backends import Backend, embedded
    from function_flow.bus.local import LocalBus

    job = StateMachine(definition, resources=tasks)
    with tempfile.TemporaryDirectory() as directory:
        backend = embedded(os.path.join(directory, "run.db"), workers=4) if store is None \
            else Backend("embedded", store, LocalBus(4))
        job.use_backend(backend)
        try:
            return job.execute(input, timeout=TIMEOUT_SECONDS).as_dict()
        finally:
            backend.bus.close()
            if store is None:
                backend.close()
