"""BigQueryFuture's two audit-log forms (AuditData jobcompleted, BigQueryAuditMetadata
jobChange), parsed one by one from realistic log entries (tests/log_entries.py);
through the external event listener of an embedded run: test_futures.py."""

from __future__ import annotations

import pytest

from function_flow import futures
from log_entries import bigquery_job_change, bigquery_jobcompleted


@pytest.mark.parametrize("form", [bigquery_jobcompleted, bigquery_job_change])
def test_bigquery_log_entry_of_either_form(form) -> None:
    ok = futures.BigQueryFuture.handle_message(form("bqjob_r1a2_0001"))
    assert ok.is_success and ok.trigger_id == "bqjob_r1a2_0001"
    assert ok.result == {"job_id": "bqjob_r1a2_0001", "location": "EU"}
    failed = futures.BigQueryFuture.handle_message(
        form("bqjob_r1a2_0002", error="Syntax error: Unexpected end of script at [1:9]"))
    assert not failed.is_success and failed.trigger_id == "bqjob_r1a2_0002"
    assert failed.error == "Syntax error: Unexpected end of script at [1:9]"


def test_job_change_other_than_done_is_not_a_completion() -> None:
    for before, after in (("PENDING", "RUNNING"), ("", "PENDING")):
        entry = bigquery_job_change("bqjob_3", before=before, after=after)
        assert futures.BigQueryFuture.handle_message(entry) is None


@pytest.mark.parametrize("job_name", [None, "", "projects/p/jobs/", "bqjob-only", 7])
def test_job_change_without_a_usable_job_name_is_ignored(job_name) -> None:
    entry = bigquery_job_change("bqjob_4")
    job = entry["protoPayload"]["metadata"]["jobChange"]["job"]
    if job_name is None:
        del job["jobName"]
    else:
        job["jobName"] = job_name
    assert futures.BigQueryFuture.handle_message(entry) is None


def test_other_bigquery_entries_are_not_completions() -> None:
    insert = bigquery_jobcompleted("bqjob_5")
    insert["protoPayload"]["methodName"] = "jobservice.insert"
    del insert["protoPayload"]["serviceData"]["jobCompletedEvent"]
    assert futures.BigQueryFuture.handle_message(insert) is None
    assert futures.BigQueryFuture.handle_message({"resource": {"type": "bigquery_resource"}}) \
        is None
