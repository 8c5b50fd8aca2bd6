"""What each function of `function-flow dev` serves: the entry points of one Job.

Deployed, the workflow file itself is the function's source and defines
`scheduler = job.make_scheduler()` and friends. `function-flow dev` takes
any workflow file, which need not define them and may hold several jobs
(`--job NAME`), so its functions serve a small generated module instead
(ENTRY_MODULE, written to a temporary directory by dev_functions.py) that
builds the six entry points from the Job the environment names.
"""

from __future__ import annotations

import os
from typing import Any, Callable

ENTRY_MODULE = '''"""Entry points of `function-flow dev` (generated; deleted when it stops)."""
from function_flow.local import entry

start, scheduler, external_event_listener, poller, callback, control = entry.entry_points()
'''


def entry_points() -> tuple[Callable[..., Any], ...]:
    """start, scheduler, external_event_listener, poller, callback and control of the
    dev workflow.

    Runs inside each functions-framework process: loads
    FUNCTION_FLOW_DEV_SOURCE the way the CLI does and builds the functions
    from its Job (FUNCTION_FLOW_DEV_JOB), on the GCP backend that the
    environment configures.
    """
    from function_flow import loader, log_format

    log_format.install(default="text")  # the dev log file; FUNCTION_FLOW_LOG_FORMAT=json
    job = loader.load_job(os.environ["FUNCTION_FLOW_DEV_SOURCE"],
                          os.environ.get("FUNCTION_FLOW_DEV_JOB") or None)
    return (job.make_start(), job.make_scheduler(), job.make_external_event_listener(),
            job.make_poller(), job.make_callback(), job.make_control())


def default_log_path(run_id: str) -> str:
    """Where `function-flow dev` writes the functions' logs for a run."""
    return os.path.join(".function_flow", f"dev-{run_id}.log")
