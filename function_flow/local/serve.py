"""`python -m function_flow.local.serve ARGS`: the functions-framework command, fixed.

Runs functions-framework's own command line (`functions_framework._cli`,
same options as the `functions-framework` script) after correcting one
method, so local functions can have a request timeout without losing
HTTP keep-alive:

With CLOUD_RUN_TIMEOUT_SECONDS and THREADED_TIMEOUT_ENABLED=true,
functions-framework (3.10.2) serves through its own gthread worker,
GThreadWorkerWithTimeoutSupport, whose handle_request drops the return
value of gunicorn's, which says whether to keep the connection alive. So
every request closes its connection, and gunicorn (27) closes it
gracefully in the worker's only event-loop thread, waiting up to 2 s for
the peer to close its side. The Pub/Sub emulator's Java push client never
does, so a worker served one push every 2 s: 40 pushes to a CloudEvent
function took 76 s instead of 0.6 s. The replacement below is the same
method that returns that value.
"""

from __future__ import annotations

from typing import Any


def keep_alive_with_request_timeout() -> None:
    """Make functions-framework's timeout worker return gunicorn's keep-alive verdict."""
    try:
        from functions_framework._http import gunicorn as ff_gunicorn
        from functions_framework.request_timeout import ThreadingTimeout
        from gunicorn.workers.gthread import ThreadWorker
    except ImportError:  # another layout: leave it as it is
        return
    worker = getattr(ff_gunicorn, "GThreadWorkerWithTimeoutSupport", None)
    if worker is None:
        return

    def handle_request(self: Any, req: Any, conn: Any) -> Any:
        # TIMEOUT_SECONDS is read when called, as the original does: the
        # application sets it after this module is imported.
        with ThreadingTimeout(ff_gunicorn.TIMEOUT_SECONDS):
            return ThreadWorker.handle_request(self, req, conn)

    worker.handle_request = handle_request


def main() -> None:
    keep_alive_with_request_timeout()
    from functions_framework._cli import _cli

    _cli(prog_name="functions-framework")


if __name__ == "__main__":
    main()
