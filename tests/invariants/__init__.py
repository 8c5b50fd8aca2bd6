"""A deterministic harness that drives the real engine over a real store and checks its invariants.

The property tests (tests/test_engine_properties.py on SQLite,
tests/test_engine_properties_firestore.py on the Firestore emulator)
generate a `Scenario` and hand it to `run_scenario`, which returns the
oracle's verdict. Read the modules in this order:

- scenario.py: the plain data of one example (a random DAG, retries,
  planned failures and crashes, a delivery seed and rates) and its Dag.
- strategies.py: how hypothesis generates scenarios.
- fakes.py: the fake clock, the pool bus, the crasher and the recording
  store, which wraps any ports.Store and logs every commit in commit order.
- stores.py: the real stores, one fresh store per example.
- workflow.py: the task bodies, which check their dependencies from inside.
- oracle.py: the commit-ordered recorder, checking every commit against
  core.transitions.LEGAL_TRANSITIONS and the parallelism bound.
- final_checks.py: what must hold once the run has ended.
- hook_checks.py: the on_failure and on_end hooks a scenario may add: once
  each, after the run ended, in order.
- runner.py: delivers messages, crashes, plays the poller (engine.poll).
- properties.py: the properties themselves, shared by every store's tests,
  and the engines with planted bugs that the harness must catch.

The invariants: a task starts only after its dependencies succeeded; each
state advances exactly once per attempt whatever the delivery (duplicates,
reordering, concurrent instances); a run ends exactly once;
max_parallel_tasks is never exceeded; a dead executor's task is found
again; nothing is a hot document (who writes each record).
"""

from .runner import Harness, run_scenario
from .scenario import LEASE, Scenario, build_dag, task_name
from .stores import FirestoreStores, StoreFactory, StoreUnderTest, sqlite_store

__all__ = ["Harness", "run_scenario", "LEASE", "Scenario", "build_dag", "task_name",
           "FirestoreStores", "StoreFactory", "StoreUnderTest", "sqlite_store"]
