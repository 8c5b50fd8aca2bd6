"""The ASL corpus (tests/asl_corpus, 250 executions recorded on AWS Step Functions).

Every case runs twice: in memory (asl/local.py, the oracle for the language
alone, with a test clock: branches and items one after another, so it has
no sibling to stop, test_asl_stop.py) and through the engine on the embedded backend
(function_flow.asl.adapter: SQLite, the in-process bus, real timers), each
compared with what AWS recorded by the corpus's own runner.compare. The
engine runs are made once per session by a pool of processes, because
about a dozen Retry cases wait seconds of real backoff; each case is then
its own test. A sample runs on the Firestore emulator's store too.
"""

from __future__ import annotations

import concurrent.futures
import glob
import json
import multiprocessing
import os
import sys
from typing import Any

import pytest

CORPUS = os.path.join(os.path.dirname(__file__), "asl_corpus")
sys.path.insert(0, CORPUS)
import runner  # noqa: E402  (the corpus's comparison rules)
import tasks as corpus_tasks  # noqa: E402

from function_flow.asl import adapter, local  # noqa: E402

CASES = {os.path.basename(p)[:-5]: p for p in sorted(glob.glob(f"{CORPUS}/cases/*.json"))}
#: Cases that do not pass, with the reason (xfail strict: a pass must remove them).
KNOWN_FAILURES: dict[str, str] = {}
FIRESTORE_SAMPLE = ["011-pass-and-paths-state-pass-result-null-input-output-paths",
                    "024-context-object-query-context-object-values",
                    "070-choice-choice-aws-docs-scenario-choice-state-aws-scenario",
                    "094-parallel-parallel-state-parallel-state-parameters", "103-map-map-state-catch",
                    "122-map-max-concurrency-path-1",
                    "140-task-lambda-catch", "145-task-lambda-catch-states-runtime",
                    "172-callback-sqs-wait-for-task-token", "204-intrinsic-context-json-path"]


def _case(name: str) -> dict[str, Any]:
    with open(CASES[name]) as fh:
        return json.load(fh)


def _tasks(case: dict[str, Any]) -> dict[str, Any]:
    return {r: getattr(corpus_tasks, f) for r, f in (case.get("tasks") or {}).items()}


def _on_engine(name: str) -> Any:
    case = _case(name)
    try:
        return json.loads(json.dumps(adapter.run_asl(case["definition"], case["input"],
                                                     _tasks(case))))
    except Exception as exc:  # reported by the case's test
        return {"status": "ERROR", "error": f"{type(exc).__name__}: {exc}"}


@pytest.fixture(scope="session")
def engine_results() -> dict[str, Any]:
    """Every case through the engine, six at a time (each in a process of its own)."""
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(6, mp_context=context) as pool:
        return dict(zip(CASES, pool.map(_on_engine, CASES)))


def _marks(name: str) -> list[Any]:
    reason = KNOWN_FAILURES.get(name)
    return [pytest.mark.xfail(reason=reason, strict=True)] if reason else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CASES])
def test_case_in_memory(name: str) -> None:
    case = _case(name)
    result = local.run(case["definition"], case["input"], _tasks(case), test_clock=True)
    problem = runner.compare(case, json.loads(json.dumps(result.as_dict())), False)
    assert problem is None, problem


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CASES])
def test_case_on_the_engine(name: str, engine_results: dict[str, Any]) -> None:
    problem = runner.compare(_case(name), engine_results[name], False)
    assert problem is None, f"{problem} (got {json.dumps(engine_results[name])[:300]})"


def test_at_least_245_cases_pass_on_the_engine(engine_results: dict[str, Any]) -> None:
    failing = {n: runner.compare(_case(n), r, False) for n, r in engine_results.items()}
    failing = {n: p for n, p in failing.items() if p is not None}
    print(f"ASL corpus on the engine: {len(CASES) - len(failing)} passed, "
          f"{len(failing)} failed: {failing}")
    assert len(CASES) == 250 and len(failing) <= 5, failing


@pytest.mark.parametrize("name", FIRESTORE_SAMPLE)
def test_a_sample_on_the_firestore_emulator(name: str, firestore_store: Any) -> None:
    case = _case(name)
    result = adapter.run_asl(case["definition"], case["input"], _tasks(case),
                             store=firestore_store)
    problem = runner.compare(case, json.loads(json.dumps(result)), False)
    assert problem is None, problem
