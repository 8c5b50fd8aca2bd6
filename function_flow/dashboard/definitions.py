"""The workflow a run was started from, when the dashboard can have it.

Reading a run needs no workflow: records say everything but the edges of
tasks that have not run yet. Drawing those edges, redriving a run and
recording an approval (which advances the run's graph) need the job. It is
looked up, by the run's job name, among the jobs given to `create_app`,
then in the file the run recorded (`function-flow run` records it), then
in the `--file` files of the dashboard command (a deployed run records
none). A file is imported once per modification time; one that fails to
import is reported, not retried on every request.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Mapping, NamedTuple, Sequence

from function_flow import loader
from function_flow.core import versions
from function_flow.core.graph import Dag
from function_flow.core.records import RunRecord
from function_flow.errors import DefinitionError
from function_flow.tasks import Job


class Found(NamedTuple):
    """A run's job, and the file it came from (None: a Job given to create_app)."""

    job: Job | None
    path: str | None
    #: Why there is no job ("" when there is one).
    why: str


class Definitions:
    """Jobs by name, from given Job objects and workflow files."""

    def __init__(self, jobs: Mapping[str, Job] | None = None,
                 files: Sequence[str] = ()) -> None:
        self.jobs = dict(jobs or {})
        self.files = [os.path.abspath(f) for f in files]
        self._modules: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def job_for(self, run: RunRecord) -> Found:
        """The run's job, or why it is not at hand."""
        if run.job_name in self.jobs:
            return Found(self.jobs[run.job_name], None, "")
        paths = ([run.source] if run.source else []) + \
            [f for f in self.files if f != run.source]
        problems = []
        for path in paths:
            found = self._load(path, run.job_name)
            if isinstance(found, Job):
                return Found(found, path, "")
            problems.append(found)
        if not paths:
            return Found(None, None, f"run {run.run_id} records no workflow file: start the "
                                     "dashboard with --file FILE.py (the workflow it runs)")
        return Found(None, None, "; ".join(problems))

    def dag_for(self, run: RunRecord) -> tuple[Dag | None, str]:
        """(the run's graph as defined, "") or (None, why not).

        The job's graph is drawn when its dependencies are those the run
        started with (core/fingerprints.py: the first part of each task's
        fingerprint); a job whose bodies or settings changed since draws the
        same edges, one whose dependencies changed would not.
        """
        found = self.job_for(run)
        if found.job is None:
            return None, found.why
        try:
            definition = versions.of(found.job.dag)
        except DefinitionError as exc:
            return None, str(exc)
        if run.dag_hash in (definition.hash, definition.shape):
            return found.job.dag, ""
        try:
            recorded = json.loads(run.task_versions or "null")
        except ValueError:
            recorded = None
        if isinstance(recorded, dict) and recorded.keys() == definition.fingerprints.keys() \
                and all(str(recorded[t]).split(".")[0] == f.split(".")[0]
                        for t, f in definition.fingerprints.items()):
            return found.job.dag, ""
        where = f" in {found.path}" if found.path else ""
        return None, (f"the tasks or dependencies of job {run.job_name!r}{where} changed "
                      "since this run started")

    def _load(self, path: str, job_name: str) -> Job | str:
        if not os.path.exists(path):
            return f"{path} (the workflow file) does not exist"
        with self._lock:
            mtime = os.path.getmtime(path)
            cached = self._modules.get(path)
            if cached is None or cached[0] != mtime:
                try:
                    module: object = loader.load_module(path)
                except loader.LoadError as exc:
                    module = str(exc)
                cached = self._modules[path] = (mtime, module)
        module = cached[1]
        if isinstance(module, str):
            return module
        try:
            job = loader.find_job(module, path, job_name)  # type: ignore[arg-type]
            job.validate()
        except (loader.LoadError, DefinitionError) as exc:
            return str(exc)
        return job
