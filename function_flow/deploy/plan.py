"""What `function-flow deploy` deploys for one workflow file: derived and checked, no I/O.

From the loaded workflow module and its Job: one Cloud Function per entry
point the file defines (start, scheduler, external_event_listener, poller,
and callback and control when present) and per `@remote.function(topic=...)`;
every topic (the Job's two, each remote task's); and the names of
everything else. A remote function written for Function Flow,
`f(event, context)`, is deployed as Function Flow deploys it, with a
Pub/Sub trigger of its own: its topic is created and reported unanswered.
A state machine file (machine.json, asl/files.py) is deployed with every
entry point (its main.py is generated) and the remote functions of
machine.py beside it (derive_machine).
Every name is checked against what Cloud Functions, Pub/Sub, Cloud
Scheduler, Secret Manager and IAM accept, so a bad one is a one-line
PlanError before any command runs.

Event functions (scheduler, external_event_listener, remote functions) are
deployed as HTTP functions behind a push subscription of our own: a
Pub/Sub trigger's subscription belongs to Eventarc and takes no dead-letter
policy. cloud/delivery.py reads the push envelope they then receive.
"""

from __future__ import annotations

import dataclasses
import os
import re
from types import ModuleType
from typing import TYPE_CHECKING, Any

from function_flow.config import MAX_RUN_TTL_DAYS
from function_flow.errors import FunctionFlowError
from function_flow.remote.targets import is_topic_name
from function_flow.store import expiry, indexes
from function_flow.tracing import MODES as TRACING_MODES

if TYPE_CHECKING:
    from function_flow.tasks import Job

#: Entry points every deployed workflow file defines, and how to make each.
REQUIRED_ENTRY_POINTS = {
    "start": "start = job.make_start()",
    "scheduler": "scheduler = job.make_scheduler()",
    "external_event_listener": "external_event_listener = job.make_external_event_listener()",
    "poller": "poller = job.make_poller()",
}
#: Every entry point deployed when the file defines it, in deployment order:
#: callback first, because the others are told its URL.
ENTRY_POINTS = ("callback", "start", "control", "poller", "scheduler",
                "external_event_listener")
#: Function Flow's log sink of finished BigQuery jobs (its README's name).
SINK = "bq_complete_sink"
BIGQUERY_LOG_FILTER = ('resource.type="bigquery_resource" AND '
                       'protoPayload.methodName="jobservice.jobcompleted"')
#: Environment variables deploy sets itself; --env may not set them.
RESERVED_ENV = ("FUNCTION_FLOW_BACKEND", "GOOGLE_CLOUD_PROJECT", "FUNCTION_FLOW_CALLBACK_URL",
                "FUNCTION_FLOW_SCHEDULE_TOPIC", "FUNCTION_FLOW_EVENTS_TOPIC",
                "FUNCTION_FLOW_FIRESTORE_DATABASE", "FUNCTION_FLOW_RUN_TTL_DAYS",
                "FUNCTION_FLOW_HMAC_KEY", "FUNCTION_FLOW_HMAC_PREVIOUS_KEY",
                "FUNCTION_FLOW_TRACING")

_FUNCTION = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_PROJECT = re.compile(r"(?:[a-z][-a-z0-9.]{0,61}[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}")
_ACCOUNT = re.compile(r"[a-z][-a-z0-9]{4,28}[a-z0-9]")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SCHEDULER_JOB = re.compile(r"[A-Za-z0-9_-]{1,500}")
_DATABASE = re.compile(r"\(default\)|[a-z][-a-z0-9]{2,61}[a-z0-9]")
_LOCATION = re.compile(r"[a-z][-a-z0-9]{1,30}[a-z0-9]")
_RUNTIME = re.compile(r"python3[0-9]{1,2}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CRON_FIELD = re.compile(r"[-*/,0-9A-Za-z]+")


class PlanError(FunctionFlowError):
    """The workflow file or an option cannot be deployed as asked; says why."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Where and how to deploy: the command's options."""

    project: str
    region: str
    runtime: str = "python312"
    service_account: str = "function-flow"
    secret: str = "function-flow-hmac"
    hmac_previous_version: int | None = None
    database: str = "(default)"
    firestore_location: str | None = None
    run_ttl_days: int = 30
    schedule: str = "* * * * *"
    scheduler_job: str | None = None
    max_delivery_attempts: int = 10
    env: tuple[tuple[str, str], ...] = ()
    #: FUNCTION_FLOW_TRACING of the functions; with `gcp`, the SA may write to Cloud Trace.
    tracing: str = "off"


@dataclasses.dataclass(frozen=True)
class Function:
    """One Cloud Function: its name, the entry point of main.py, its topic if pushed."""

    name: str
    entry_point: str
    topic: str | None = None

    @property
    def subscription(self) -> str:
        """The push subscription from `topic` to this function."""
        return f"{self.name}-push"

    @property
    def dead_letter(self) -> str:
        """The dead-letter topic of that subscription (and its pull subscription)."""
        return f"{self.name}-dead-letter"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything one deployment creates, named."""

    workflow: str
    job_name: str
    options: Options
    #: In deployment order: callback first (the others are told its URL).
    functions: tuple[Function, ...]
    #: The Job's schedule and external events topics, then each remote topic.
    topics: tuple[str, ...]
    schedule_topic: str
    events_topic: str
    scheduler_job: str
    #: Remote topics no function of the file answers (deployed elsewhere).
    unanswered: tuple[str, ...] = ()
    #: The Python file whose @remote.function functions are deployed: the workflow
    #: itself, or the one beside a state machine file.
    functions_file: str = ""

    def function(self, entry_point: str) -> Function | None:
        return next((f for f in self.functions if f.entry_point == entry_point), None)

    @property
    def pushed(self) -> tuple[Function, ...]:
        """The functions behind push subscriptions."""
        return tuple(f for f in self.functions if f.topic is not None)

    @property
    def collection_prefix(self) -> str:
        """FUNCTION_FLOW_COLLECTION_PREFIX as --env sets it (the store's collection names)."""
        return dict(self.options.env).get("FUNCTION_FLOW_COLLECTION_PREFIX", "")

    @property
    def collection_groups(self) -> list[str]:
        """The Firestore collection groups the TTL policy covers."""
        return expiry.collection_groups(self.collection_prefix)

    @property
    def composite_indexes(self) -> list[indexes.CompositeIndex]:
        """The composite indexes the store's queries need (store/indexes.py)."""
        return indexes.composite_indexes(self.collection_prefix)

    @property
    def bucket(self) -> str | None:
        """The bucket FUNCTION_FLOW_BUCKET names in --env (`name` or gs://name/prefix)."""
        value = dict(self.options.env).get("FUNCTION_FLOW_BUCKET")
        if not value:
            return None
        return value.removeprefix("gs://").split("/", 1)[0] or None


def function_name(entry_point: str) -> str:
    """The Cloud Functions name of an entry point: `external_event_listener`
    is deployed as `external-event-listener` (2nd gen names take no '_')."""
    return entry_point.replace("_", "-").lower()


def derive(module: ModuleType, job: "Job", path: str, options: Options) -> Plan:
    """The Plan for `job` of the workflow `module` loaded from `path`; PlanError if none."""
    check_options(options)
    missing = [name for name in REQUIRED_ENTRY_POINTS if not callable(getattr(module, name, None))]
    if missing:
        lines = "; ".join(REQUIRED_ENTRY_POINTS[name] for name in missing)
        raise PlanError(f"{path} defines no {', '.join(missing)} at module level: these are "
                        f"the Cloud Functions deployed; add `{lines}`")
    entry_points = [e for e in ENTRY_POINTS if callable(getattr(module, e, None))]
    return _plan(job, path, options, entry_points, _remote_functions(module, path), path)


def derive_machine(job: "Job", companion: ModuleType | None, path: str,
                   options: Options) -> Plan:
    """The Plan for the state machine file `path` (asl/files.py): its main.py is
    generated (deploy/source.py) with every entry point, and its remote functions are
    the @remote.function(topic=...) functions of `companion`, the Python file beside it."""
    check_options(options)
    functions_file = os.path.splitext(path)[0] + ".py"
    answered = _remote_functions(companion, functions_file) if companion is not None else {}
    return _plan(job, path, options, list(ENTRY_POINTS), answered, functions_file)


def _plan(job: "Job", path: str, options: Options, entry_points: list[str],
          answered: dict[str, str], functions_file: str) -> Plan:
    topics_of = {"scheduler": job.schedule_topic,
                 "external_event_listener": job.external_event_topic}
    functions = [Function(function_name(e), e, topics_of.get(e)) for e in entry_points]
    functions += [Function(function_name(name), name, topic) for topic, name in answered.items()]
    _check_functions(functions, functions_file)
    remote_topics = [spec.call.target for spec in _specs(job)
                     if spec.call is not None and spec.call.kind == "pubsub"]
    topics = list(dict.fromkeys([job.schedule_topic, job.external_event_topic,
                                 *remote_topics, *answered]))
    for topic in topics:
        if not is_topic_name(topic):
            raise PlanError(f"{topic!r} (a topic of job {job.name!r}) is not a Pub/Sub topic "
                            "name: 3-255 letters, digits or -._~%+, starting with a letter "
                            "and not with 'goog'")
    _check_calls(job, options, has_callback="callback" in entry_points)
    scheduler_job = options.scheduler_job or f"{job.name}-poller"
    if not _SCHEDULER_JOB.fullmatch(scheduler_job):
        raise PlanError(f"{scheduler_job!r} is not a Cloud Scheduler job name (letters, digits, "
                        "'-' and '_'): name the poller's job with --scheduler-job NAME")
    return Plan(workflow=path, job_name=job.name, options=options, functions=tuple(functions),
                topics=tuple(topics), schedule_topic=job.schedule_topic,
                events_topic=job.external_event_topic,
                scheduler_job=scheduler_job,
                unanswered=tuple(t for t in dict.fromkeys(remote_topics) if t not in answered),
                functions_file=functions_file)


def _specs(job: "Job") -> list[Any]:
    """Every task spec that may call a target: declared tasks, and the templates the
    tasks a run adds are made from (a state machine's Task states, asl/job.py)."""
    return [*job.dag.tasks.values(), *job.dag.templates.values()]


def _remote_functions(module: ModuleType, path: str) -> dict[str, str]:
    """{topic: name} of the file's @remote.function(topic=...) functions."""
    from function_flow.local import remotes

    return remotes.remote_functions(module, path)


def _check_functions(functions: list[Function], path: str) -> None:
    seen: dict[str, str] = {}
    for function in functions:
        if not _FUNCTION.fullmatch(function.name):
            raise PlanError(
                f"{function.entry_point} in {path} would be deployed as the Cloud Function "
                f"{function.name!r}, a name Cloud Functions refuses (1-63 lowercase letters, "
                "digits and '-', starting with a letter, not ending with '-'): rename it")
        if function.name in seen:
            raise PlanError(f"{seen[function.name]} and {function.entry_point} in {path} would "
                            f"both be deployed as the Cloud Function {function.name!r}: "
                            "rename one")
        seen[function.name] = function.entry_point


def _check_calls(job: "Job", options: Options, has_callback: bool) -> None:
    """OpenFaaS tasks need a gateway, and asynchronous ones the callback function."""
    env = dict(options.env)
    for spec in _specs(job):
        call = spec.call
        if call is None or call.kind != "openfaas":
            continue
        if not env.get("FUNCTION_FLOW_OPENFAAS_GATEWAY"):
            raise PlanError(f"task {spec.task_id!r} calls the OpenFaaS function "
                            f"{call.target!r}: pass --env FUNCTION_FLOW_OPENFAAS_GATEWAY=URL")
        if call.asynchronous and not has_callback:
            raise PlanError(f"task {spec.task_id!r} calls {call.target!r} asynchronously, and "
                            "its answer arrives at the callback function: add "
                            "`callback = job.make_callback()`")


def check_options(options: Options) -> None:
    """PlanError for an option value Google Cloud would refuse."""
    checks = [
        (_PROJECT, options.project, "--project", "a Google Cloud project id (6-30 lowercase "
                                                 "letters, digits and '-')"),
        (_REGION, options.region, "--region", "a region such as europe-west1"),
        (_RUNTIME, options.runtime, "--runtime", "a Python runtime such as python312"),
        (_ACCOUNT, options.service_account, "--service-account",
         "a service account id (6-30 lowercase letters, digits and '-')"),
        (_SECRET, options.secret, "--secret", "a Secret Manager name (letters, digits, "
                                              "'-' and '_')"),
        (_DATABASE, options.database, "--database", "(default) or a Firestore database id"),
    ]
    if options.firestore_location is not None:
        checks.append((_LOCATION, options.firestore_location, "--firestore-location",
                       "a Firestore location such as eur3 or europe-west1"))
    for pattern, value, option, what in checks:
        if not pattern.fullmatch(value or ""):
            raise PlanError(f"{option} {value!r} is not {what}")
    fields = options.schedule.split()
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise PlanError(f"--schedule {options.schedule!r} is not a cron schedule of 5 fields "
                        "(Cloud Scheduler's form, e.g. '* * * * *': every minute)")
    if not 5 <= options.max_delivery_attempts <= 100:
        raise PlanError("--max-delivery-attempts must be from 5 to 100 (Pub/Sub's limits), "
                        f"got {options.max_delivery_attempts}")
    if not 1 <= options.run_ttl_days <= MAX_RUN_TTL_DAYS:
        raise PlanError(f"--run-ttl-days must be from 1 to {MAX_RUN_TTL_DAYS:,} (100 years), "
                        f"got {options.run_ttl_days}")
    if options.tracing not in TRACING_MODES:
        raise PlanError(f"--tracing {options.tracing!r} is not one of {', '.join(TRACING_MODES)}")
    if options.hmac_previous_version is not None and options.hmac_previous_version < 1:
        raise PlanError("--hmac-previous-version must be a version number of the secret "
                        f"(1 or more), got {options.hmac_previous_version}")
    for name, value in options.env:
        if not _ENV_NAME.fullmatch(name):
            raise PlanError(f"--env {name}=...: {name!r} is not an environment variable name")
        if name in RESERVED_ENV:
            hint = ": use --tracing MODE (it also installs the exporter)" \
                if name == "FUNCTION_FLOW_TRACING" else ""
            raise PlanError(f"--env {name}=...: deploy sets {name} itself{hint}")
        if "," in value:
            raise PlanError(f"--env {name}=...: the value has a ',', which gcloud's "
                            "--set-env-vars cannot carry; set it on the functions afterwards")
