"""What the OpenFaaS tests share (tests/test_openfaas*.py).

A local gateway (tests/openfaas_gateway.py) with a password, the settings
that point function_flow at it, and jobs on their own embedded backends
whose middle task calls a function of that gateway.
"""

from __future__ import annotations

import uuid

import pytest
from openfaas_gateway import Gateway

from function_flow import backends, tasks

PASSWORD = "s3cret-" + uuid.uuid4().hex[:6]


@pytest.fixture
def gateway():
    with Gateway(user="admin", password=PASSWORD) as gateway:
        yield gateway


@pytest.fixture
def settings_env(monkeypatch, gateway):
    for name in ("FUNCTION_FLOW_CALLBACK_URL", "FUNCTION_FLOW_OPENFAAS_USER",
                 "FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE", "FUNCTION_FLOW_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FUNCTION_FLOW_OPENFAAS_GATEWAY", gateway.url)
    monkeypatch.setenv("FUNCTION_FLOW_OPENFAAS_PASSWORD", PASSWORD)
    return monkeypatch


@pytest.fixture
def new_job(tmp_path, settings_env):
    """A factory of jobs, each on its own embedded backend (built after the env is set)."""
    made = []

    def make(name: str = "openfaas") -> tasks.Job:
        backend = backends.embedded(db_path=str(tmp_path / f"{name}.db"), workers=4)
        made.append(backend)
        return tasks.Job(name=name, backend=backend)

    yield make
    for backend in made:
        backend.close()


def records(job: tasks.Job, run_id: str) -> dict:
    return {r.task_id: r for r in job.engine.task_records(run_id)}


def remote_job(new_job, call, *, timeout=None, retries=0, send=None):
    """prepare -> remote (sends `send` or {"x": 21} to `call`) -> after (reads its result)."""
    job = new_job()

    @job.task(task_id="prepare")
    def prepare(task, job):
        return {"x": 21}

    @job.task(task_id="remote", deps=["prepare"], call=call, timeout=timeout,
              retries=retries, retry_backoff=0, task_args={"region": "EMEA"})
    def remote_task(task, job):
        return job.get_task_result("prepare") if send is None else send

    @job.task(task_id="after", deps=["remote"])
    def after(task, job):
        return {"seen": job.get_task_result("remote")}

    return job


def doubler(call):
    payload = call.json()
    return {"double": payload["result"]["x"] * 2, "job_args": payload["job_args"],
            "task_args": payload["task_args"], "job_id": payload["job_id"]}
