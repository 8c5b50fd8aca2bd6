"""What every blob store adapter promises (core.ports.Blobs), on each of them:
a directory (blobs/local.py) and a bucket on gcp-storage-emulator (blobs/gcs.py)."""

from __future__ import annotations

import os

import pytest

from function_flow.core import payloads
from function_flow.core.ports import BlobNotFoundError

FIVE_MIB = 5 * 1024 * 1024


def test_put_then_get_returns_the_same_bytes(blobs) -> None:
    data = bytes(range(256)) * (FIVE_MIB // 256) + b"tail"
    key = payloads.result_key("run-1", "a", 1)
    blobs.put(key, data)
    assert blobs.get(key) == data
    assert blobs.get(key) == data  # reading does not consume it


def test_get_of_a_missing_key_raises_blob_not_found(blobs) -> None:
    with pytest.raises(BlobNotFoundError):
        blobs.get(payloads.result_key("run-1", "never", 1))


def test_delete_removes_one_blob_and_a_missing_one_is_no_error(blobs) -> None:
    kept, gone = payloads.result_key("r", "a", 1), payloads.result_key("r", "a", 1)
    assert kept != gone  # every key is new, even for the same attempt
    blobs.put(kept, b"1")
    blobs.put(gone, b"2")
    blobs.delete(gone)
    blobs.delete(gone)
    with pytest.raises(BlobNotFoundError):
        blobs.get(gone)
    assert blobs.get(kept) == b"1"


def test_delete_run_removes_that_runs_blobs_only(blobs) -> None:
    # "r" is a prefix of "r2" as text: the run folder must not be.
    mine = [payloads.args_key("r"), payloads.result_key("r", "a", 1),
            payloads.result_key("r", "b", 3)]
    others = [payloads.result_key("r2", "a", 1), payloads.args_key("rr")]
    for key in mine + others:
        blobs.put(key, key.encode())
    blobs.delete_run("r")
    blobs.delete_run("r")  # again: nothing left, no error
    blobs.delete_run("never-had-blobs")
    for key in mine:
        with pytest.raises(BlobNotFoundError):
            blobs.get(key)
    for key in others:
        assert blobs.get(key) == key.encode()


@pytest.mark.parametrize("run_id", ["a/b", "..", ".", "x" * 600, "ünï cödé", "a%2Fb"])
def test_odd_run_ids_stay_in_their_own_folder(blobs, run_id: str) -> None:
    """Run ids chosen by callers may hold '/', '..' or be long; each run's blobs
    stay apart, and deleting one run never reaches another's."""
    neighbour = payloads.result_key("a", "t", 1)
    blobs.put(neighbour, b"neighbour")
    key = payloads.result_key(run_id, "t", 1)
    blobs.put(key, b"odd")
    assert blobs.get(key) == b"odd"
    blobs.delete_run(run_id)
    with pytest.raises(BlobNotFoundError):
        blobs.get(key)
    assert blobs.get(neighbour) == b"neighbour"


def test_location_names_the_key(blobs) -> None:
    key = payloads.args_key("run-9")
    assert key in blobs.location(key)


def test_a_local_key_cannot_leave_the_directory(tmp_path) -> None:
    from function_flow.blobs.local import LocalBlobs

    local = LocalBlobs(str(tmp_path / "blobs"))
    for bad in ("../outside", "runs/../../x", "/etc/passwd", "", "runs//x"):
        with pytest.raises(ValueError, match="not a blob key"):
            local.put(bad, b"x")
    assert sorted(os.listdir(tmp_path)) == []


def test_a_local_blob_is_never_seen_half_written(tmp_path, monkeypatch) -> None:
    """The file appears under its name only when complete: a write that fails
    midway leaves neither the blob nor a partial file."""
    from function_flow.blobs.local import LocalBlobs

    local = LocalBlobs(str(tmp_path / "blobs"))
    key = payloads.result_key("r", "a", 1)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        local.put(key, b"x" * 1000)
    monkeypatch.undo()
    with pytest.raises(BlobNotFoundError):
        local.get(key)
    folder = os.path.dirname(local.location(key))
    assert os.listdir(folder) == []


def test_gcs_bucket_setting_takes_a_name_or_a_gs_url() -> None:
    from function_flow.blobs.gcs import GcsBlobs, parse_bucket
    from function_flow.errors import ConfigurationError

    assert parse_bucket("b") == ("b", "")
    assert parse_bucket("gs://b/") == ("b", "")
    assert parse_bucket("gs://b/some/folder/") == ("b", "some/folder/")
    assert GcsBlobs("gs://b/f").location("runs/r/x.json") == "gs://b/f/runs/r/x.json"
    with pytest.raises(ConfigurationError, match="names no bucket"):
        parse_bucket("gs://")


def test_gcs_folder_keeps_deployments_apart(gcs_bucket) -> None:
    from function_flow.blobs.gcs import GcsBlobs

    one, two = GcsBlobs(f"gs://{gcs_bucket}/one"), GcsBlobs(f"gs://{gcs_bucket}/two")
    key = payloads.args_key("same-run")
    one.put(key, b"1")
    two.put(key, b"2")
    two.delete_run("same-run")
    assert one.get(key) == b"1"
    with pytest.raises(BlobNotFoundError):
        two.get(key)


def test_gcs_missing_bucket_is_a_configuration_error_naming_it(storage_env) -> None:
    from function_flow.blobs.gcs import GcsBlobs
    from function_flow.errors import ConfigurationError

    missing = GcsBlobs("no-such-bucket-here")
    with pytest.raises(ConfigurationError, match="no-such-bucket-here.*does not exist"):
        missing.put(payloads.args_key("r"), b"x")
    with pytest.raises(ConfigurationError, match="does not exist"):
        missing.get(payloads.args_key("r"))


def test_gcs_unreachable_emulator_is_transient(monkeypatch) -> None:
    from function_flow.blobs.gcs import GcsBlobs
    from function_flow.errors import TransientBackendError
    from function_flow.local.processes import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientBackendError, match="could not read"):
        GcsBlobs("b", retry_timeout=0.5).get(payloads.args_key("r"))
