"""Pytest fixtures around the real Firestore, Pub/Sub and storage emulators.

The emulators start once per test session (each takes several seconds) on
free ports, in their own process groups, and stop by process-group id at the
end of the session. Session fixtures do not change os.environ, so tests of
the embedded backend never see emulator variables; tests that need them ask
for `firestore_env` / `gcp_env`, which set them for that one test only.

If the Google Cloud CLI, its emulator components or Java are missing, the
tests that need them fail (not skip) with one line saying what to install.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from function_flow.local import emulators
from signatures import TEST_HMAC_KEY
from function_flow.local.emulators import DEFAULT_PROJECT, Emulator

PROJECT = DEFAULT_PROJECT


def unique_prefix() -> str:
    """A collection prefix no other test uses, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}_"


def _start(name: str) -> Emulator:
    try:
        emulators.check_requirements((name,))
    except emulators.EmulatorError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        return emulators.start(name, PROJECT)
    except emulators.EmulatorError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def gcloud_available() -> None:
    """Fails with an install hint unless gcloud, both emulators and Java are present."""
    try:
        emulators.check_requirements(("firestore", "pubsub"))
    except emulators.EmulatorError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[Emulator]:
    """The Firestore emulator for the whole session; `.host` is "127.0.0.1:PORT"."""
    emulator = _start("firestore")
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[Emulator]:
    """The Pub/Sub emulator (project PROJECT) for the whole session."""
    emulator = _start("pubsub")
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def storage_emulator() -> Iterator[Emulator]:
    """gcp-storage-emulator (in memory) for the whole session; `.env` points
    google-cloud-storage at it (STORAGE_EMULATOR_HOST)."""
    emulator = _start("storage")
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def storage_env(storage_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """STORAGE_EMULATOR_HOST set for this one test."""
    for name, value in storage_emulator.env.items():
        monkeypatch.setenv(name, value)
    return storage_emulator


@pytest.fixture
def collection_prefix() -> str:
    return unique_prefix()


@pytest.fixture
def firestore_env(firestore_emulator: Emulator, collection_prefix: str,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this test's Google Cloud clients and Settings at the Firestore emulator
    (with the test HMAC key: a gcp backend needs one)."""
    env = {"FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
           "GOOGLE_CLOUD_PROJECT": PROJECT,
           "FUNCTION_FLOW_COLLECTION_PREFIX": collection_prefix,
           "FUNCTION_FLOW_HMAC_KEY": TEST_HMAC_KEY}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def gcp_env(firestore_env: dict[str, str], pubsub_emulator: Emulator,
            monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Both emulators for this test: FUNCTION_FLOW_BACKEND=gcp plus their hosts."""
    env = dict(firestore_env, PUBSUB_EMULATOR_HOST=pubsub_emulator.host,
               FUNCTION_FLOW_BACKEND="gcp")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def firestore_store(firestore_env: dict[str, str], collection_prefix: str):
    """A FirestoreStore on the emulator with a collection prefix of its own."""
    from function_flow.store.firestore import FirestoreStore

    store = FirestoreStore(project=PROJECT, prefix=collection_prefix)
    store.client  # built now, while this test's environment is set
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "firestore"])
def store(request: pytest.FixtureRequest, tmp_path):
    """Each store adapter in turn: a fresh SQLite file, then the Firestore emulator."""
    if request.param == "sqlite":
        from function_flow.store.sqlite import SqliteStore

        sqlite = SqliteStore(str(tmp_path / "state.db"))
        yield sqlite
        sqlite.close()
    else:
        yield request.getfixturevalue("firestore_store")


@pytest.fixture
def gcs_bucket(storage_env: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on gcp-storage-emulator, named by FUNCTION_FLOW_BUCKET for this test."""
    from google.cloud import storage

    name = f"ff-{uuid.uuid4().hex[:12]}"
    storage.Client(project=PROJECT).create_bucket(name)
    monkeypatch.setenv("FUNCTION_FLOW_BUCKET", name)
    return name


@pytest.fixture(params=["local", "gcs"])
def blobs(request: pytest.FixtureRequest, tmp_path):
    """Each blob store adapter in turn: a fresh directory, then a bucket on
    gcp-storage-emulator."""
    if request.param == "local":
        from function_flow.blobs.local import LocalBlobs

        return LocalBlobs(str(tmp_path / "blobs"))
    from function_flow.blobs.gcs import GcsBlobs

    return GcsBlobs(request.getfixturevalue("gcs_bucket"), project=PROJECT)
