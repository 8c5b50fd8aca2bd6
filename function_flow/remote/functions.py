"""`remote.function`: a plain function `f(payload, context)` as a remote Cloud Function.

    @remote.function(topic="SCORE_REQUESTS")
    def score(payload, context):
        return model.predict(payload["result"])   # becomes the task's result

Deployed with `--trigger-topic SCORE_REQUESTS`, it parses the request
Function Flow's scheduler sends (every Pub/Sub delivery shape, see
cloud/delivery.py), refuses it unless it is signed (signing.py: it needs
FUNCTION_FLOW_HMAC_KEY, the scheduler's key), calls `f`, and answers on the
external events topic, signed, with Function Flow's `remote_function_resource`
message plus "result": the return value, or the exception as the failure.
A request is acted on once however often Pub/Sub delivers it
(`Store.first_delivery`); when an attempt's answer is lost anyway, the
task's timeout retries it with a new job id.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import traceback
import types
from typing import Any, Callable

from function_flow import tracing
from function_flow.cloud import delivery
from function_flow.cloud.delivery import NotAnEnvelope, Rejected
from function_flow.core.attempts import bounded_error
from function_flow.core.definition import refuse_async
from function_flow.core.values import MAX_MESSAGE_VALUE_BYTES, storable
from function_flow.errors import ConfigurationError, DefinitionError
from function_flow.remote.targets import PubSub, check

logger = logging.getLogger("function_flow.remote")

#: Function Flow's resource type for a remote function's answer.
RESOURCE_TYPE = "remote_function_resource"
#: Status codes of answers: google.rpc's OK, and UNKNOWN for an exception.
OK, FAILED = 0, 2
#: Prefix of the keys under which requests already acted on are remembered.
DELIVERY_KEY_PREFIX = "remote:"

#: Sends an answer: (message as a dict, attributes).
Reply = Callable[[dict[str, Any], dict[str, str]], None]


def answer_message(job_id: str, *, value: Any = None, error: str | None = None
                   ) -> dict[str, Any]:
    """Function Flow's answer for `job_id`, with our "result" on success."""
    status = {"code": FAILED, "message": error} if error is not None \
        else {"code": OK, "message": "ok"}
    message: dict[str, Any] = {"status": status,
                               "resource": {"type": RESOURCE_TYPE,
                                            "labels": {"job_id": job_id}}}
    if error is None:
        message["result"] = value
    return message


class RemoteFunction:
    """A Cloud Function (any Pub/Sub delivery shape) that runs `func` once per request."""

    def __init__(self, func: Callable[[dict[str, Any], Any], Any],
                 topic: str | None = None) -> None:
        self.func = func
        #: The topic whose requests it answers; hosted locally under it.
        self.topic = topic
        functools.update_wrapper(self, func)
        self._reply: Reply | None = None
        self._store: Any = None

    def __call__(self, event: Any, context: Any = None) -> Any:
        """The entry point, deployed: answers on the external events topic."""
        try:
            data, attributes = delivery.signed_pubsub_payload(event, context)
            payload = delivery.parse_json(data, "remote request")
            job_id = job_id_of(payload)
        except ConfigurationError as exc:  # no key: redelivered once it is set
            return delivery.not_done(event, self.__name__, exc)
        except NotAnEnvelope as exc:
            logger.warning("%s: bad request: %s", self.__name__, exc)
            return {"error": str(exc)}, 400
        except (Rejected, ValueError) as exc:
            logger.warning("%s: request rejected and acknowledged: %s", self.__name__, exc)
            return delivery.acknowledge(event, "rejected")
        try:
            outcome = self.answer(payload, attributes,
                                  context or types.SimpleNamespace(attributes=attributes),
                                  self._deployed_reply(), self._deployed_store())
        except Exception as exc:
            return delivery.not_done(event, f"{self.__name__}: job {job_id}", exc)
        return delivery.acknowledge(event, outcome)

    def answer(self, payload: dict[str, Any], attributes: dict[str, str], context: Any,
               reply: Reply, store: Any) -> str:
        """Act on one request: call `func` unless this job id was seen, reply.

        `store` remembers job ids (None: no deduplication). Returns
        "answered" or "duplicate".
        """
        job_id = job_id_of(payload)
        run_id = attributes.get("run_id", "")
        key = DELIVERY_KEY_PREFIX + job_id
        with tracing.serving(self.__name__, attributes, job_id) as span:  # the send span's child
            if store is not None and not store.first_delivery(key, run_id):
                logger.info("%s: job %s already answered; duplicate acknowledged",
                            self.__name__, job_id)
                span.set_attribute(tracing.OUTCOME, "duplicate")
                return "duplicate"
            try:
                value = storable(f"the result of {self.__name__}()",
                                 self.func(payload, context), limit=MAX_MESSAGE_VALUE_BYTES)
                message = answer_message(job_id, value=value)
            except Exception as exc:  # the function's own error: it is the task's failure
                tracing.record_error(exc)
                error = bounded_error(traceback.format_exc())
                logger.warning("%s: job %s failed:\n%s", self.__name__, job_id, error)
                message = answer_message(job_id, error=error)
            try:
                reply(message, {"run_id": run_id, "job_id": job_id})
            except BaseException:
                # Unanswered: a redelivery must be able to act on it again.
                if store is not None:
                    store.forget_delivery(key)
                raise
            logger.info("%s: job %s of run %s answered (%s)", self.__name__, job_id,
                        run_id or "?", "failed" if message["status"]["code"] else "ok")
        return "answered"

    # ------------------------------------------------------------ deployed

    def _deployed_reply(self) -> Reply:
        """Publish answers on the external events topic the settings name."""
        if self._reply is None:
            from function_flow.backends import project_for
            from function_flow.bus.pubsub import Topic
            from function_flow.config import Settings

            from function_flow.signing import Keys

            settings = Settings.from_env()
            tracing.configure(settings)  # a remote function builds no backend
            topic = Topic(settings.events_topic or "SCHEDULE_EXTERNAL_EVENTS",
                          project_for(settings), create=False,
                          keys=Keys.from_settings(settings))

            def publish(message: dict[str, Any], attributes: dict[str, str]) -> None:
                topic.publish(json.dumps(message).encode(), attributes,
                              f"the answer to job {attributes.get('job_id')}")

            self._reply = publish
        return self._reply

    def _deployed_store(self) -> Any:
        """The store the settings select (Firestore, deployed), for job ids seen."""
        if self._store is None:
            from function_flow import selection
            from function_flow.config import Settings

            self._store = selection.selected_store(Settings.from_env()).store
        return self._store


def job_id_of(payload: Any) -> str:
    """The request's job id; ValueError when it is not a request at all."""
    if not isinstance(payload, dict):
        raise ValueError(f"a remote request is a JSON object, got {delivery.kind_of(payload)}")
    job_id = payload.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("the remote request has no job_id string")
    return job_id


def function(func: Callable[..., Any] | None = None, *, topic: str | None = None) -> Any:
    """Make `func(payload, context)` a remote Cloud Function (see module docstring).

    Usable as `@remote.function`, `@remote.function(topic="T")` or
    `handler = remote.function(f, topic="T")`. With a topic, the embedded
    backend and `function-flow dev` host it for the tasks that send there.
    """
    if topic is not None:
        check(PubSub(topic))  # ValueError for a name Pub/Sub would refuse

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        from function_flow.cloud.functions import log_like_a_cloud_function
        from function_flow.remote import hosting

        check_callable(f)
        log_like_a_cloud_function()
        remote = RemoteFunction(f, topic)

        # A plain function, because functions-framework (and so Cloud
        # Functions) serves nothing else; it carries its RemoteFunction.
        @tracing.flushed
        @functools.wraps(f)
        def entry_point(event: Any, context: Any = None) -> Any:
            return remote(event, context)

        entry_point.remote_function = remote  # type: ignore[attr-defined]
        if topic is not None:
            hosting.host(topic, entry_point)
        return entry_point

    return wrap(func) if func is not None else wrap


def check_callable(func: Any) -> None:
    """DefinitionError now, naming the function, for one that cannot be called
    as func(payload, context): it failed only when a task first called it."""
    name = getattr(func, "__name__", repr(func))
    if not callable(func):
        raise DefinitionError(f"a remote function must be a function taking (payload, "
                              f"context), got {func!r}")
    refuse_async("a remote function", func, None)
    try:
        inspect.signature(func).bind(None, None)
    except TypeError as exc:
        raise DefinitionError(f"remote function {name}() must take two arguments, "
                              f"(payload, context): {exc}") from None
    except ValueError:  # a builtin without a signature: it is called as it is
        pass


def remote_function_of(function: Any) -> RemoteFunction | None:
    """The RemoteFunction behind an entry point `function()` made, else None."""
    remote = getattr(function, "remote_function", None)
    return remote if isinstance(remote, RemoteFunction) else None
