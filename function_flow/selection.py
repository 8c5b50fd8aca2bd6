"""The store the settings select, opened to read runs, and whether it answers.

For the command line and the dashboard: `selected_store` opens the store
`backends.from_settings` would use, by the same rules, without a job or a bus
(`status` and `resume` read runs wherever they are), and `check_reachable` /
`check_topic` read it once with a short deadline, so an emulator that is not
running is one clear error in seconds rather than a minute of the clients'
retries (owners.py says whether the process executing an embedded run still
runs).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from function_flow.backends import describe_embedded, describe_firestore, firestore_store
from function_flow.config import Settings
from function_flow.core.ports import Store
from function_flow.errors import ConfigurationError


class BackendUnavailableError(ConfigurationError):
    """The store or bus the settings select cannot be reached or used.

    The message names the backend and what to do; retrying at once would
    not help (nothing listens, no credentials, no such topic).
    """


#: How long the first read of a cloud store (or the first look at a topic)
#: may take before the backend counts as unreachable. The clients' own
#: default is a minute of retries, far too long for a command line.
PROBE_TIMEOUT_SECONDS = 5.0


@dataclasses.dataclass
class SelectedStore:
    """The store the settings select, opened to read runs without a workflow."""

    kind: str
    #: None when the embedded database file does not exist (yet): no run
    #: was ever made there, and reading must not create it.
    store: Store | None
    description: str

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def selected_store(settings: Settings) -> SelectedStore:
    """The store `from_settings` would use, by the same rules, without a job or a bus.

    For `function-flow status` and `resume`: so the runs of a deployment (or
    of `function-flow dev`) can be listed wherever they are. Makes no
    network call; see `check_reachable`.
    """
    if settings.backend == "gcp":
        return SelectedStore("gcp", firestore_store(settings), describe_firestore(settings))
    path = settings.db_path
    if not os.path.exists(path):
        where = f" in {os.getcwd()}" if not os.path.isabs(path) else ""
        return SelectedStore("embedded", None, (
            f"{describe_embedded(path)} (no such file{where}: run this where the workflow "
            "ran, or set FUNCTION_FLOW_DB to its store)"))
    from function_flow.store.sqlite import SqliteStore

    return SelectedStore("embedded", SqliteStore(path), describe_embedded(path))


def check_reachable(selected: SelectedStore,
                    timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Read the store once with a short deadline; raise BackendUnavailableError if it fails.

    The embedded store needs no check (its own errors name the file).
    """
    if selected.kind != "gcp" or selected.store is None:
        return
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_errors

    store: Any = selected.store
    where = selected.description
    try:
        runs = store.client.collection(f"{store.prefix}runs")
        runs.limit(1).get(retry=None, timeout=timeout)
    except ConfigurationError as exc:  # no credentials (FirestoreStore.client says so)
        raise BackendUnavailableError(f"cannot read {where}: {exc}") from exc
    except auth_errors.GoogleAuthError as exc:
        raise BackendUnavailableError(
            f"cannot read {where}: the credentials were refused ({_first_line(exc)}); "
            "run `gcloud auth application-default login`") from exc
    except gexc.GoogleAPIError as exc:
        raise BackendUnavailableError(
            f"cannot read {where}: {_why(exc, timeout)}; {_firestore_advice(exc)}") from exc


def check_topic(bus: Any, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Check that the gcp bus's topic exists and something subscribes to it.

    Publishing to a topic nobody subscribes to loses the messages: the
    deployed scheduler would never see them. Raises BackendUnavailableError.
    """
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_errors

    if os.environ.get("FIRESTORE_EMULATOR_HOST") and not os.environ.get("PUBSUB_EMULATOR_HOST"):
        raise BackendUnavailableError(
            "FIRESTORE_EMULATOR_HOST is set but PUBSUB_EMULATOR_HOST is not: set it to the "
            "Pub/Sub emulator the functions are pushed from (function-flow dev prints it)")
    try:
        path = bus.topic_path
        publisher = bus.publisher
        publisher.get_topic(request={"topic": path}, retry=None, timeout=timeout)
    except gexc.NotFound as exc:
        raise BackendUnavailableError(
            f"the Pub/Sub topic {path} does not exist, so no deployed scheduler listens "
            "on it: deploy the workflow (or start function-flow dev), or set "
            "FUNCTION_FLOW_SCHEDULE_TOPIC to the topic its scheduler listens on") from exc
    except auth_errors.GoogleAuthError as exc:
        raise BackendUnavailableError(
            f"no usable Google Cloud credentials for Pub/Sub ({_first_line(exc)}): run "
            "`gcloud auth application-default login`, or set PUBSUB_EMULATOR_HOST to use "
            "the emulator") from exc
    except gexc.GoogleAPIError as exc:
        where = os.environ.get("PUBSUB_EMULATOR_HOST")
        place = f"the Pub/Sub emulator at {where}" if where else "Pub/Sub"
        raise BackendUnavailableError(
            f"cannot reach {place} (topic {path}): {_why(exc, timeout)}") from exc
    try:
        subscriptions = list(publisher.list_topic_subscriptions(
            request={"topic": path}, retry=None, timeout=timeout))
    except gexc.GoogleAPIError:
        return  # may publish but not list (a narrow role): publishing will tell
    if not subscriptions:
        raise BackendUnavailableError(
            f"nothing subscribes to the Pub/Sub topic {path}, so no deployed scheduler "
            "would receive the run's messages: deploy the workflow (or start "
            "function-flow dev), or set FUNCTION_FLOW_SCHEDULE_TOPIC to the topic its "
            "scheduler listens on")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _why(exc: BaseException, timeout: float) -> str:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.DeadlineExceeded):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, gexc.ServiceUnavailable) and "refused" in str(exc).lower():
        return "nothing listens there (connection refused)"
    return _first_line(exc)


def _firestore_advice(exc: BaseException) -> str:
    from google.api_core import exceptions as gexc

    emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if emulator:
        return (f"is the emulator running? Start it (function-flow dev, or gcloud emulators "
                f"firestore start --host-port={emulator}), or unset FIRESTORE_EMULATOR_HOST "
                "to read Firestore itself")
    if isinstance(exc, gexc.PermissionDenied):
        return ("check that your credentials may read Firestore in that project "
                "(roles/datastore.viewer) and that GOOGLE_CLOUD_PROJECT is right")
    if isinstance(exc, gexc.NotFound):
        return ("check GOOGLE_CLOUD_PROJECT and FUNCTION_FLOW_FIRESTORE_DATABASE "
                "(that database does not exist)")
    return "check your network connection and GOOGLE_CLOUD_PROJECT"
