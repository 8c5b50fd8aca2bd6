"""`function-flow dashboard`: the web dashboard of the runs the settings select.

It reads the same store as `status` (cli/stores.py): the embedded SQLite
file, or Firestore (or its emulator). It listens on 127.0.0.1 unless
--host says otherwise; its buttons refuse requests from other sites
(dashboard/guard.py), and on a non-loopback host anyone who can reach the
port can press them, which the command says when it starts.
"""

from __future__ import annotations

import socket

import click

from function_flow import selection
from function_flow.cli import progress
from function_flow.cli.common import fail
from function_flow.cli.stores import open_selected
from function_flow.config import Settings


DEFAULT_PORT = 8765


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; anyone who reaches it "
                   "can press the buttons).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT,
              show_default=True, help="Port to listen on (0: any free port).")
@click.option("--file", "files", multiple=True, type=click.Path(dir_okay=False, exists=True),
              metavar="FILE", help="Workflow file whose jobs draw, redrive and approve runs "
                                   "that record none (deployed runs). Repeatable.")
def dashboard(host: str, port: int, files: tuple[str, ...]) -> None:
    """Serve the web dashboard: runs, each run's graph and tasks, live; pause,
    resume, cancel, redrive and approve from the page."""
    from werkzeug.serving import make_server

    from function_flow.dashboard import create_app, guard

    settings = Settings.from_env()
    selected = open_selected(settings)  # an unreachable Firestore is one error line now
    loopback = host in guard.LOOPBACK_NAMES
    app = create_app(lambda: selected.store or selection.selected_store(settings).store,
                     kind=selected.kind, description=selected.description,
                     settings=settings, files=files,
                     allowed_hosts=guard.LOOPBACK_NAMES if loopback else None)
    listening = _listen(host, port)
    server = make_server(host, listening.getsockname()[1], app, threaded=True,
                         fd=listening.fileno())
    out = progress.make_console()
    shown = f"[{host}]" if ":" in host else host
    out.print(f"dashboard of {selected.description} at http://{shown}:{server.port}/ "
              "(Ctrl-C stops it)", markup=False, soft_wrap=True)
    if not loopback:
        out.print(f"note: listening on {host}: anyone who can reach this port can pause, "
                  "cancel and redrive runs", markup=False, soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        selected.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or one error line (werkzeug would exit with a paragraph)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        listening = socket.socket(family, kind, proto)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen(128)
    except OSError as exc:
        listening.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
             "--port (0 picks a free one)")
    return listening
