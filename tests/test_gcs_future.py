"""GCSFuture completes: by polling (list_blobs) and by Cloud Storage notifications.

On gcp-storage-emulator (`storage_env`), on the embedded backend and on the
Firestore store; the deployed topology (functions-framework processes
behind Pub/Sub push subscriptions) at the end. Notifications are published
in the form Cloud Storage sends them (tests/log_entries.py); the emulator
itself sends none.
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time
import uuid
from typing import Any

import pytest

from function_flow import backends, futures, tasks
from function_flow.core import watches
from function_flow.core.records import RunStatus, TaskStatus, Trigger
from function_flow.services.gcs import GcsWatcher
from log_entries import pubsub_event, storage_notification

WORKFLOWS = pathlib.Path(__file__).resolve().parent / "workflows_gcp"


# ------------------------------------------------------------------ helpers


def new_bucket() -> str:
    from google.cloud import storage

    name = f"ff-{uuid.uuid4().hex[:12]}"
    storage.Client().create_bucket(name)
    return name


def upload(bucket: str, name: str, data: str = "id,value\n1,2\n") -> None:
    from google.cloud import storage

    storage.Client().bucket(bucket).blob(name).upload_from_string(data)


class CountingWatcher(GcsWatcher):
    """The real watcher, counting the prefixes it was asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def exists(self, path_prefix: str) -> bool:
        self.asked.append(path_prefix)
        return super().exists(path_prefix)


def gcs_job(name: str = "gcs_test", timeout: float | None = None) -> tasks.Job:
    """wait (a GCSFuture for the run's "prefix" argument) -> after."""
    job = tasks.Job(name=name)
    job.bodies = []

    @job.task(task_id="wait", timeout=timeout)
    def wait(task, job):
        job_bodies.append(task.run_id)
        return futures.GCSFuture(job.get_arguments()["prefix"])

    @job.task(task_id="after", deps=["wait"])
    def after(task, job):
        return {"found": job.get_task_result("wait")}

    job_bodies = job.bodies
    return job


@pytest.fixture
def embedded(tmp_path, storage_env, monkeypatch):
    """Embedded backends on one SQLite file, checking prefixes every 0.2 s."""
    monkeypatch.setenv("FUNCTION_FLOW_GCS_POLL_INTERVAL", "0.2")
    made = []

    def make(watcher: Any = "default") -> backends.Backend:
        backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
        if watcher != "default":
            backend.watcher = watcher
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def waiting(job: tasks.Job, prefix: str) -> str:
    """Start a run that waits for `prefix`; its id once the wait is recorded."""
    run_id = job.start({"prefix": prefix})
    deadline = time.monotonic() + 30
    while not job.engine.store.get_tasks(run_id, ["wait"])[0].trigger_id:
        assert time.monotonic() < deadline, "the task never started waiting"
        time.sleep(0.02)
    return run_id


def state(job: tasks.Job, run_id: str) -> list[tuple]:
    run = job.engine.run_status(run_id)
    return [(run.status, run.error)] + [(t.task_id, t.status, t.attempt, t.result)
                                        for t in job.engine.task_records(run_id)]


def result_of(job: tasks.Job, run_id: str, task_id: str) -> Any:
    return job.engine.store.get_tasks(run_id, [task_id])[0].result


def notify(listener: Any, bucket: str, name: str, **options: Any) -> Any:
    data, attributes = storage_notification(bucket, name, **options)
    return listener(pubsub_event(data, attributes), None)


# --------------------------------------------------------- the Future itself


def test_gcs_future_parses_function_flow_event_and_notifications() -> None:
    upstream = futures.GCSFuture.handle_message(
        {"function_flow_event_type": "gcs_path_create", "path_prefix": "gs://test-bucket/p"})
    assert upstream.result == "gs://test-bucket/p" and upstream.is_success
    data, attributes = storage_notification("b1", "in/2024/part-0.csv")
    created = futures.GCSFuture.handle_message(futures.Event({}, attributes))
    assert isinstance(created, futures.PathCreated)
    assert created.path == "gs://b1/in/2024/part-0.csv"
    for event_type in ("OBJECT_DELETE", "OBJECT_METADATA_UPDATE", "OBJECT_ARCHIVE"):
        _, attributes = storage_notification("b1", "in/x", event_type=event_type)
        assert futures.GCSFuture.handle_message(futures.Event({}, attributes)) is None
    # The object resource alone (no attributes) does not say what happened.
    assert futures.GCSFuture.handle_message({"kind": "storage#object", "bucket": "b1",
                                             "name": "in/x"}) is None


def test_each_gcs_future_has_its_own_trigger_and_watches_its_prefix() -> None:
    one, two = futures.GCSFuture("gs://b/in/"), futures.GCSFuture("gs://b/in/")
    assert one.watch == one.path_prefix == "gs://b/in/"
    assert one.trigger_id != two.trigger_id


@pytest.mark.parametrize("path", ["s3://b/x", "b/x", "gs://", "gs:///x", ""])
def test_gcs_future_for_a_path_that_is_not_gs_fails_the_attempt(path, tmp_path) -> None:
    with pytest.raises(ValueError, match="gs://"):
        futures.GCSFuture(path)
    job = gcs_job("bad_path")
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=1)
    try:
        run = job.use_backend(backend).run({"prefix": path}, timeout=30)
    finally:
        backend.close()
    assert run.status is RunStatus.FAILED and "gs://BUCKET/PREFIX" in run.error


def test_gcs_poller_of_function_flow_explains_itself() -> None:
    for call in (lambda: futures.GCSPoller("SCHEDULE_EXTERNAL_EVENTS"),
                 lambda: futures.GCSPoller.register_path_prefix("gs://b/p"),
                 lambda: futures.GCSPoller.deregister_path_prefix("gs://b/p")):
        with pytest.raises(NotImplementedError, match="job.make_poller"):
            call()


def test_prefixes_of_a_path_start_at_its_bucket() -> None:
    assert watches.prefixes_of("gs://b/ab") == ["gs://b", "gs://b/", "gs://b/a", "gs://b/ab"]
    assert watches.prefixes_of("gs://bucket") == ["gs://bucket"]
    assert watches.prefixes_of("s3://b/x") == [] and watches.prefixes_of("gs://") == []


def test_store_finds_the_watches_among_candidate_prefixes(store) -> None:
    path = "gs://b/" + "d/" * 300 + "part-0.csv"  # 600+ candidates: several queries
    watched = ["gs://b", "gs://b/d/", "gs://b/" + "d/" * 250, path]
    others = ["gs://b/e/", "gs://b/d/x", "gs://bb/d/", path + "x"]
    triggers = [Trigger(f"t{i}", "run-1", "wait", 1, watch=w)
                for i, w in enumerate(watched + others)]
    store.transact(lambda tx: [tx.put_trigger(t) for t in triggers])
    found = store.find_watches(100, among=watches.prefixes_of(path))
    assert sorted(t.watch for t in found) == sorted(watched)
    assert len(store.find_watches(2, among=watches.prefixes_of(path))) == 2
    assert len(store.find_watches(100)) == len(triggers)


def test_due_checks_each_prefix_once_per_interval_oldest_first() -> None:
    schedule = watches.Watches(None, every=10.0, batch=2)
    known = ["gs://b/1", "gs://b/2", "gs://b/3"]
    assert schedule.due(known, 100.0, known) == ["gs://b/1", "gs://b/2"]  # bounded
    assert schedule.due(known, 101.0, known) == ["gs://b/3"]  # never checked goes first
    assert schedule.due(known, 105.0, known) == []
    assert schedule.due(known, 110.0, known) == ["gs://b/1", "gs://b/2"]
    assert schedule.due(known, 111.0, known) == ["gs://b/3"]
    assert schedule.due(["gs://b/4"], 111.5, ["gs://b/4"]) == ["gs://b/4"]
    assert schedule.due(known, 111.6, known) == ["gs://b/1", "gs://b/2"]  # forgotten, so due


# ------------------------------------------------------- polling, embedded


def test_polling_completes_the_wait_when_the_object_appears(embedded) -> None:
    bucket = new_bucket()
    watcher = CountingWatcher()
    job = gcs_job().use_backend(embedded(watcher))
    prefix = f"gs://{bucket}/exports/2024-03-01/"
    upload(bucket, "exports/2024-02-29/part-0.csv")  # beside the prefix: does not count

    def upload_once_waited_for() -> None:
        deadline = time.monotonic() + 30
        while prefix not in watcher.asked and time.monotonic() < deadline:
            time.sleep(0.05)
        upload(bucket, "exports/2024-03-01/part-0.csv")

    uploader = threading.Thread(target=upload_once_waited_for)
    uploader.start()
    run = job.run({"prefix": prefix}, timeout=60)
    uploader.join()
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("wait") == prefix
    assert job.get_task_result("after") == {"found": prefix}
    assert job.engine.store.find_watches(10) == []  # deleted with the completion
    assert job.bodies == [run.run_id]


def test_polling_goes_on_while_other_tasks_keep_the_embedded_bus_busy(embedded) -> None:
    bucket = new_bucket()
    upload(bucket, "ready/flag")
    job = gcs_job().use_backend(embedded())

    @job.task(task_id="busy")
    def busy(task, job):
        """Runs until the GCSFuture beside it completed (or gives up)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if job.engine.store.get_tasks(task.run_id, ["wait"])[0].status \
                    is TaskStatus.SUCCEEDED:
                return "saw the wait complete"
            time.sleep(0.05)
        return "gave up"

    run = job.run({"prefix": f"gs://{bucket}/ready/"}, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("busy") == "saw the wait complete"


def test_a_missing_bucket_is_logged_and_the_task_keeps_waiting(embedded, caplog,
                                                                monkeypatch) -> None:
    """As an error the first time, which `function-flow run` shows without -v
    (a typo in a bucket's name was a silent wait), then as warnings."""
    monkeypatch.setenv("FUNCTION_FLOW_GCS_POLL_INTERVAL", "0.001")
    job = gcs_job().use_backend(embedded())
    run_id = waiting(job, "gs://ff-no-such-bucket-here/x/")
    with caplog.at_level(logging.WARNING, logger="function_flow"):
        for _ in range(3):
            time.sleep(0.01)
            assert job.engine.poll(run_ids=[run_id]).watches_completed == 0
    checks = [r for r in caplog.records if "cannot check gs://ff-no-such-bucket-here/x/" in
              r.getMessage() and "there is no bucket 'ff-no-such-bucket-here'" in r.getMessage()]
    assert [r.levelname for r in checks] == ["ERROR", "WARNING", "WARNING"], caplog.text
    assert job.engine.store.get_tasks(run_id, ["wait"])[0].status is TaskStatus.RUNNING


def test_polls_check_each_prefix_at_most_once_per_interval_and_batch(embedded,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("FUNCTION_FLOW_GCS_POLL_INTERVAL", "3600")
    monkeypatch.setenv("FUNCTION_FLOW_GCS_POLL_BATCH", "2")
    bucket = new_bucket()
    watcher = CountingWatcher()
    job = gcs_job().use_backend(embedded(watcher))
    runs = [waiting(job, f"gs://{bucket}/in/{n}/") for n in range(3)]
    for _ in range(4):
        job.engine.poll()
    assert sorted(watcher.asked) == [f"gs://{bucket}/in/{n}/" for n in range(3)]
    assert all(job.engine.run_status(r).status is RunStatus.RUNNING for r in runs)


def test_the_watch_of_an_attempt_that_timed_out_is_deleted_unchecked(embedded) -> None:
    bucket = new_bucket()
    watcher = CountingWatcher()
    job = gcs_job(timeout=1).use_backend(embedded(watcher))
    run_id = waiting(job, f"gs://{bucket}/never/")
    trigger_id = job.engine.store.get_tasks(run_id, ["wait"])[0].trigger_id
    run = job.wait(run_id, timeout=60)  # the lease check fails the attempt at 1 s
    assert run.status is RunStatus.FAILED and "TimeoutError" in run.error
    assert f"got no answer or event for an object under gs://{bucket}/never/ within" \
        in run.error, run.error
    asked = len(watcher.asked)
    job.engine.poll()
    assert job.engine.store.get_trigger(trigger_id) is None
    assert len(watcher.asked) == asked


def test_a_poller_leaves_the_watches_of_other_workflows_alone(embedded) -> None:
    bucket = new_bucket()
    upload(bucket, "shared/part-0.csv")
    ours = gcs_job("ours").use_backend(embedded())
    theirs = gcs_job("theirs").use_backend(embedded())
    run_id = waiting(theirs, f"gs://{bucket}/shared/")
    ours.engine.poll()
    assert theirs.engine.store.find_watches(10) != []
    assert theirs.engine.run_status(run_id).status is RunStatus.RUNNING
    assert theirs.wait(run_id, timeout=30).status is RunStatus.SUCCEEDED


# -------------------------------------------------- notifications, embedded


def test_notification_completes_every_wait_for_a_prefix_of_the_object(embedded) -> None:
    bucket = new_bucket()
    job = gcs_job().use_backend(embedded(watcher=None))  # notifications only
    listener = job.make_external_event_listener()
    year = waiting(job, f"gs://{bucket}/in/2024/")
    everything = waiting(job, f"gs://{bucket}/in/")
    twin = waiting(job, f"gs://{bucket}/in/")  # the same prefix as another run's
    before = state(job, year)

    upload(bucket, "in/2023/a.csv")
    assert notify(listener, bucket, "in/2023/a.csv") is None
    assert job.wait(everything, timeout=30).status is RunStatus.SUCCEEDED
    assert result_of(job, everything, "after") == {"found": f"gs://{bucket}/in/"}
    assert job.wait(twin, timeout=30).status is RunStatus.SUCCEEDED
    assert state(job, year) == before

    upload(bucket, "in/2024/b.csv")
    assert notify(listener, bucket, "in/2024/b.csv", payload=False) is None  # format NONE
    assert job.wait(year, timeout=30).status is RunStatus.SUCCEEDED
    assert result_of(job, year, "after") == {"found": f"gs://{bucket}/in/2024/"}


def test_notifications_for_other_objects_change_nothing_and_duplicates_complete_once(
        embedded) -> None:
    bucket = new_bucket()
    job = gcs_job().use_backend(embedded(watcher=None))
    listener = job.make_external_event_listener()
    run_id = waiting(job, f"gs://{bucket}/in/")
    before = state(job, run_id)
    for other_bucket, name, event_type in ((bucket, "out/x.csv", "OBJECT_FINALIZE"),
                                           (bucket, "i", "OBJECT_FINALIZE"),
                                           (f"{bucket}-2", "in/x.csv", "OBJECT_FINALIZE"),
                                           (bucket, "in/x.csv", "OBJECT_DELETE"),
                                           (bucket, "in/x.csv", "OBJECT_METADATA_UPDATE")):
        assert notify(listener, other_bucket, name, event_type=event_type) is None
    broken = {"eventType": "OBJECT_FINALIZE", "bucketId": bucket}  # no objectId
    assert listener(pubsub_event(b"", broken), None) is None
    assert state(job, run_id) == before

    upload(bucket, "in/x.csv")
    data, attributes = storage_notification(bucket, "in/x.csv")
    threads = [threading.Thread(target=listener, args=(pubsub_event(data, attributes), None))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert listener(pubsub_event(data, attributes), None) is None
    run = job.wait(run_id, timeout=30)
    assert run.status is RunStatus.SUCCEEDED
    records = {t.task_id: t for t in job.engine.task_records(run_id)}
    assert records["wait"].attempt == 1 and records["after"].attempt == 1
    assert job.bodies == [run_id]


# --------------------------------------------- Firestore, deployed topology


@pytest.fixture
def stack(gcp_env, storage_env):
    """Functions of the gcs_wait workflow on the emulators, checking prefixes every 0.1 s."""
    from emulators import PROJECT
    from functions_stack import Stack

    stack = Stack(dict(gcp_env, **storage_env.env, FUNCTION_FLOW_GCS_POLL_INTERVAL="0.1"),
                  PROJECT)
    try:
        yield stack
    finally:
        stack.close()


def deployed(stack: Any, *targets: str) -> dict[str, Any]:
    """The workflow's functions: scheduler pushed from SCHEDULE, the listener from EVENTS."""
    source = WORKFLOWS / "gcs_wait.py"
    signatures = {"scheduler": "event", "external_event_listener": "cloudevent",
                  "start": "http", "poller": "http"}
    functions = {t: stack.function(source, t, signatures[t]) for t in ("scheduler", *targets)}
    stack.push(functions["scheduler"])
    if "external_event_listener" in functions:
        functions["events"] = f"EVENTS-{stack.suffix}"
        stack.push(functions["external_event_listener"], topic=functions["events"])
    return functions


def started_and_waiting(start: Any, store: Any, prefix: str) -> str:
    from functions_stack import post, wait_for

    status, body = post(start.url, {"prefix": prefix})
    assert status == 200, body
    run_id = body["run_id"]
    wait_for(lambda: (store.get_tasks(run_id, ["wait"]) or [None])[0] is not None
             and store.get_tasks(run_id, ["wait"])[0].trigger_id, "the wait to be recorded")
    return run_id


def ended(store: Any, run_id: str, poke: Any = None) -> Any:
    from functions_stack import wait_for

    def final() -> Any:
        if poke is not None:
            poke()
        run = store.get_run(run_id)
        return run if run is not None and run.status.is_final else None
    return wait_for(final, f"run {run_id} to end", 120)


def results(store: Any, run_id: str) -> dict[str, Any]:
    return {t.task_id: t.result for t in store.get_tasks(run_id) if t.task_id != "__end__"}


def test_deployed_poller_completes_the_wait_on_firestore(stack, firestore_store) -> None:
    from functions_stack import post

    functions = deployed(stack, "start", "poller")
    bucket = new_bucket()
    prefix = f"gs://{bucket}/landing/"
    run_id = started_and_waiting(functions["start"], firestore_store, prefix)
    assert post(functions["poller"].url, {})[0] == 200  # nothing there yet
    assert firestore_store.get_run(run_id).status is RunStatus.RUNNING
    upload(bucket, "landing/orders.csv")
    run = ended(firestore_store, run_id, poke=lambda: post(functions["poller"].url, {}))
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert results(firestore_store, run_id) == {"a": prefix, "wait": prefix,
                                                "after": {"found": prefix}}
    assert firestore_store.find_watches(10) == []
    assert "Traceback" not in stack.logs()


def test_deployed_listener_completes_the_wait_from_notifications(stack,
                                                                 firestore_store) -> None:
    functions = deployed(stack, "start", "external_event_listener")
    bucket = new_bucket()
    prefix = f"gs://{bucket}/landing/"
    run_id = started_and_waiting(functions["start"], firestore_store, prefix)
    for name in ("elsewhere/orders.csv", "landing"):  # not under the prefix
        data, attributes = storage_notification(bucket, name)
        stack.publish(data, topic=functions["events"], **attributes)
    data, attributes = storage_notification(bucket, "landing/orders.csv", "OBJECT_DELETE")
    stack.publish(data, topic=functions["events"], **attributes)
    upload(bucket, "landing/orders.csv")
    data, attributes = storage_notification(bucket, "landing/orders.csv")
    for _ in range(2):  # Pub/Sub may deliver twice
        stack.publish(data, topic=functions["events"], **attributes)
    run = ended(firestore_store, run_id)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert results(firestore_store, run_id)["after"] == {"found": prefix}
    assert {t.task_id: t.attempt for t in firestore_store.get_tasks(run_id)} == \
        {"a": 1, "wait": 1, "after": 1}
    logs = stack.logs()
    assert "Traceback" not in logs and "will be redelivered" not in logs
