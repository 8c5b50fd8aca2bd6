"""The store `status` and `resume` read: the one the settings select.

The same rules as a run (selection.selected_store): FUNCTION_FLOW_BACKEND,
else Google Cloud when GOOGLE_CLOUD_PROJECT or FIRESTORE_EMULATOR_HOST is
set, else the embedded SQLite file. A cloud store is read once with a short
deadline first, so an emulator that is not running or missing credentials
give one line at once instead of a minute of client retries.
"""

from __future__ import annotations

import os

from function_flow import selection
from function_flow.cli.common import fail
from function_flow.config import Settings
from function_flow.core.records import RunRecord


def open_selected(settings: Settings | None = None) -> selection.SelectedStore:
    """The selected store, checked to answer (a BackendUnavailableError says why not)."""
    selected = selection.selected_store(settings or Settings.from_env())
    selection.check_reachable(selected)
    return selected


def get_run(selected: selection.SelectedStore, run_id: str) -> RunRecord:
    """The run, or one error line naming the store that was read."""
    run = selected.store.get_run(run_id) if selected.store is not None else None
    if run is None:
        fail(f"no run with id {run_id!r} in {selected.description}"
             f"{elsewhere_hint(selected, run_id)}; list runs with function-flow status")
    return run


def elsewhere_hint(selected: selection.SelectedStore, run_id: str) -> str:
    """When Google Cloud was read but the run is in the local file, say so.

    GOOGLE_CLOUD_PROJECT is often set in a developer's shell, which makes
    `status` read Firestore while `function-flow run` always runs locally.
    The local file is cheap to look at; Firestore is not looked at from the
    embedded side (that would need the network).
    """
    if selected.kind != "gcp":
        return ""
    path = Settings.from_env().db_path
    if not os.path.exists(path):
        return ""
    local = selection.selected_store(Settings(backend="embedded", db_path=path))
    try:
        found = local.store is not None and local.store.get_run(run_id) is not None
    except Exception:  # an unreadable local file is not what the user asked about
        found = False
    finally:
        local.close()
    if not found:
        return ""
    return (f" (it is in {local.description}: read it with "
            f"FUNCTION_FLOW_BACKEND=embedded function-flow status {run_id})")
