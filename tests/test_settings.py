"""Settings.from_env: the defaults the README's Configuration table gives, and bad values.

A bad value is one ConfigurationError naming the variable (the CLI prints
it as one `error:` line), never a silent substitute: FUNCTION_FLOW_WORKERS=0
used to run on one worker, FUNCTION_FLOW_FUNCTION_TIMEOUT=-5 to retry an
overrunning task at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from function_flow import backends
from function_flow.config import Settings
from function_flow.errors import ConfigurationError
from function_flow.local.framework import local_function_timeout
from function_flow.local.processes import DevError


def test_the_readmes_configuration_table_lists_every_variable_settings_read() -> None:
    """config.py's own table is what Settings reads; the README's holds each of them."""
    import re

    from function_flow import config

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("### Configuration"):readme.index(
        "### The embedded backend: durability and waiting")]
    listed = set(re.findall(r"`(FUNCTION_FLOW_[A-Z_]+|[A-Z_]+_HOST|GOOGLE_CLOUD_PROJECT)`",
                            table))
    listed |= {f"FUNCTION_FLOW_CALLBACK{s}" for s in ("_BACKOFF", "_TIMEOUT")} \
        if "`FUNCTION_FLOW_CALLBACK_ATTEMPTS`, `_BACKOFF`, `_TIMEOUT`" in table else set()
    listed |= {f"FUNCTION_FLOW_OPENFAAS{s}" for s in ("_USER", "_PASSWORD", "_PASSWORD_FILE")} \
        if "`FUNCTION_FLOW_OPENFAAS_GATEWAY`, `_USER`, `_PASSWORD`, `_PASSWORD_FILE`" in table \
        else set()
    read = {name for row in config.__doc__.splitlines() if row.startswith("| ")
            for name in re.findall(r"[A-Z][A-Z_]+[A-Z]", row.split("|")[1])}
    assert read - listed == set()


def test_the_defaults_of_the_configuration_table() -> None:
    settings = Settings.from_env({})
    assert settings.backend == "embedded"
    assert settings.db_path == os.path.join(".function_flow", "function_flow.db")
    assert settings.workers == 8 and settings.sqlite_synchronous == "normal"
    assert settings.firestore_database == "(default)" and settings.collection_prefix == ""
    assert settings.inline_limit_bytes == 262144 and settings.function_timeout == 540
    assert (settings.gcs_poll_interval, settings.gcs_poll_batch) == (10, 100)
    assert settings.dataflow_endpoint == "https://dataflow.googleapis.com"
    assert (settings.callback_attempts, settings.callback_backoff,
            settings.callback_timeout) == (36, 2, 30)
    named = Settings.from_env({"FUNCTION_FLOW_FIRESTORE_DATABASE": "flows",
                               "FUNCTION_FLOW_WORKERS": "3"})
    assert (named.firestore_database, named.workers) == ("flows", 3)


def test_the_embedded_backend_runs_the_workers_the_setting_asks_for(tmp_path: Path) -> None:
    settings = Settings.from_env({"FUNCTION_FLOW_WORKERS": "3",
                                  "FUNCTION_FLOW_DB": str(tmp_path / "runs.db")})
    backend = backends.from_settings(settings)
    try:
        assert backend.bus.workers == 3
    finally:
        backend.close()


@pytest.mark.parametrize("name, value, message", [
    ("FUNCTION_FLOW_WORKERS", "0", "FUNCTION_FLOW_WORKERS must be a whole number greater "
                                   "than 0, got '0'"),
    ("FUNCTION_FLOW_WORKERS", "-3", "FUNCTION_FLOW_WORKERS must be a whole number"),
    ("FUNCTION_FLOW_WORKERS", "eight", "FUNCTION_FLOW_WORKERS must be a whole number"),
    ("FUNCTION_FLOW_FUNCTION_TIMEOUT", "-5", "FUNCTION_FLOW_FUNCTION_TIMEOUT must be a "
                                             "number of seconds greater than 0, got '-5'"),
    ("FUNCTION_FLOW_FUNCTION_TIMEOUT", "soon", "FUNCTION_FLOW_FUNCTION_TIMEOUT must be a "
                                               "number of seconds"),
    ("FUNCTION_FLOW_HMAC_TOLERANCE", "inf", "FUNCTION_FLOW_HMAC_TOLERANCE must be a number "
                                            "of seconds greater than 0, got 'inf'"),
    ("FUNCTION_FLOW_RUN_TTL_DAYS", "inf", "FUNCTION_FLOW_RUN_TTL_DAYS must be a number of "
                                          "days greater than 0, got 'inf'"),
    ("FUNCTION_FLOW_RUN_TTL_DAYS", "1e7", "FUNCTION_FLOW_RUN_TTL_DAYS must be at most 36,500 "
                                          "days (100 years), got 1e+07"),
    ("FUNCTION_FLOW_DATAFLOW_ENDPOINT", "dataflow.example.com",
     "FUNCTION_FLOW_DATAFLOW_ENDPOINT must be an http(s) URL such as "
     "https://dataflow.googleapis.com, got 'dataflow.example.com'"),
    ("FUNCTION_FLOW_DATAFLOW_ENDPOINT", "ftp://x", "FUNCTION_FLOW_DATAFLOW_ENDPOINT must be"),
])
def test_a_bad_value_is_refused_naming_the_variable(name, value, message) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value).startswith(message)


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text("from function_flow import tasks\n"
                                    "job = tasks.Job('one')\n"
                                    "job.task('a')(lambda task, job: 1)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    ran = subprocess.run([sys.executable, "-m", "function_flow", "run", "wf.py"], cwd=tmp_path,
                         env={**env, "FUNCTION_FLOW_WORKERS": "0"}, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 2 and ran.stderr.splitlines() == [
        "error: FUNCTION_FLOW_WORKERS must be a whole number greater than 0, got '0'"]
    assert not (tmp_path / ".function_flow").exists()


@pytest.mark.parametrize("value, seconds", [("", 30), ("120", 120), ("2.5", 3), ("0.2", 1)])
def test_dev_gives_its_functions_whole_seconds_rounded_up(value, seconds) -> None:
    """functions-framework takes whole seconds: a fraction never stops a function early."""
    assert local_function_timeout({"FUNCTION_FLOW_FUNCTION_TIMEOUT": value}) == seconds


@pytest.mark.parametrize("value", ["-5", "0", "soon", "inf", "nan"])
def test_dev_refuses_a_function_timeout_that_is_not_positive(value) -> None:
    with pytest.raises(DevError, match="FUNCTION_FLOW_FUNCTION_TIMEOUT must be a number of "
                                       "seconds greater than 0"):
        local_function_timeout({"FUNCTION_FLOW_FUNCTION_TIMEOUT": value})
