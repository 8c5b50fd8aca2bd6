"""The gcloud commands of a deployment, in order (a Plan in, steps.py's steps out).

Every step is idempotent: a describe before each create (`Run.unless`), an
update where a resource's settings may have changed, or a command that is
idempotent by nature (`functions deploy`, `add-iam-policy-binding`,
`services enable`, `firestore fields ttls update`). Running the whole list
again converges on the same deployment.

Least privilege: the functions run as a dedicated service account (SA)
holding only
- roles/datastore.user on the project: Firestore, the run state;
- roles/pubsub.publisher on each topic: the scheduler publishes the next
  tasks and remote requests, the poller due timers, remote functions their
  answers (no topic administration);
- roles/secretmanager.secretAccessor on the HMAC secret alone;
- roles/run.invoker on the pushed functions and the poller: push
  subscriptions and Cloud Scheduler call them with OIDC tokens of the SA;
- roles/storage.objectUser on FUNCTION_FLOW_BUCKET's bucket, when --env sets one;
- roles/cloudtrace.agent on the project, with --tracing gcp: the functions
  write their spans to Cloud Trace (a project-wide role: traces have no
  narrower resource).
Nothing is public: every function is deployed --no-allow-unauthenticated.
Pub/Sub's service agent may mint the SA's tokens for the pushes, publish to
the dead-letter topics and acknowledge on the push subscriptions it
dead-letters from; the log sink's writer may publish to the events topic.
"""

from __future__ import annotations

from function_flow.deploy.plan import BIGQUERY_LOG_FILTER, SINK, Function, Plan
from function_flow.deploy.steps import Command, Let, Run, Say, Step, Var, command, word

PROJECT, REGION, SOURCE, SA = Var("PROJECT"), Var("REGION"), Var("SOURCE"), Var("SA")
PROJECT_NUMBER = Var("PROJECT_NUMBER")
#: Pub/Sub's ack deadline maximum: a push may run a task body this long.
ACK_DEADLINE_SECONDS = 600
#: The functions' timeout, FUNCTION_FLOW_FUNCTION_TIMEOUT's default.
FUNCTION_TIMEOUT = "540s"
APIS = ("cloudfunctions.googleapis.com", "run.googleapis.com", "cloudbuild.googleapis.com",
        "artifactregistry.googleapis.com", "pubsub.googleapis.com",
        "firestore.googleapis.com", "cloudscheduler.googleapis.com",
        "secretmanager.googleapis.com", "logging.googleapis.com", "iam.googleapis.com")

#: The API --tracing gcp writes to.
TRACE_API = "cloudtrace.googleapis.com"

_SA_MEMBER = word("serviceAccount:", SA)
_PUBSUB_AGENT = word("serviceAccount:service-", PROJECT_NUMBER,
                     "@gcp-sa-pubsub.iam.gserviceaccount.com")


def url_var(function: Function) -> Var:
    """The variable holding a function's URL: START_URL, POLLER_URL..."""
    return Var(function.name.replace("-", "_").upper() + "_URL")


def gcloud(*words: object) -> Command:
    """A gcloud command of this project (--project last)."""
    return command("gcloud", *words, word("--project=", PROJECT))  # type: ignore[arg-type]


def inputs(plan: Plan) -> list[Let]:
    """The variables every step uses besides PROJECT, REGION and SOURCE."""
    return [Let("SA", word(plan.options.service_account, "@", PROJECT,
                           ".iam.gserviceaccount.com"))]


def steps(plan: Plan) -> list[Step]:
    """Every command of the deployment, in the order they must run."""
    return [*_foundation(plan), *_topics(plan), *_functions(plan), *_pushes(plan),
            *_poller_schedule(plan), *_log_sink(plan), *_summary(plan)]


def _foundation(plan: Plan) -> list[Step]:
    o = plan.options
    database = word("--database=", o.database)
    found: list[Step] = [
        Run("enable the APIs a deployment uses",
            gcloud("services", "enable", *APIS, *([TRACE_API] if o.tracing == "gcp" else []))),
        Run("the project number names Pub/Sub's service agent",
            command("gcloud", "projects", "describe", PROJECT, "--format=value(projectNumber)"),
            capture=PROJECT_NUMBER.name),
        Run("the functions' own service account",
            gcloud("iam", "service-accounts", "create", o.service_account,
                   f"--display-name=function_flow {plan.job_name}"),
            unless=gcloud("iam", "service-accounts", "describe", SA)),
        Run("Firestore holds the run state: the one project-wide role",
            command("gcloud", "projects", "add-iam-policy-binding", PROJECT,
                    word("--member=", *_SA_MEMBER), "--role=roles/datastore.user",
                    "--condition=None")),
        *([Run("the functions write their spans to Cloud Trace (--tracing gcp)",
               command("gcloud", "projects", "add-iam-policy-binding", PROJECT,
                       word("--member=", *_SA_MEMBER), "--role=roles/cloudtrace.agent",
                       "--condition=None"))] if o.tracing == "gcp" else []),
        Run("the Firestore database",
            gcloud("firestore", "databases", "create", database,
                   word("--location=", o.firestore_location or REGION),
                   "--type=firestore-native"),
            unless=gcloud("firestore", "databases", "describe", database)),
    ]
    for group in plan.collection_groups:
        found += [
            Run(f"old runs expire: TTL policy on {group}.expire_at",
                gcloud("firestore", "fields", "ttls", "update", "expire_at",
                       f"--collection-group={group}", "--enable-ttl", database, "--async")),
            Run("no index on it: nothing queries it, and an index of ever later times is "
                "a write hotspot",
                gcloud("firestore", "indexes", "fields", "update", "expire_at",
                       f"--collection-group={group}", "--disable-indexes", database,
                       "--async"))]
    for index in plan.composite_indexes:
        found.append(Run(
            f"the filtered lists of runs, newest first, need an index: {index.describe()}",
            gcloud("firestore", "indexes", "composite", "create",
                   f"--collection-group={index.collection_group}", "--query-scope=collection",
                   *(f"--field-config=field-path={path},order={order.lower()}"
                     for path, order in index.fields), database, "--async"),
            exists_if="ALREADY_EXISTS"))
    found += [
        Run("the HMAC key that signs function_flow's messages, generated once",
            gcloud("secrets", "create", o.secret, "--replication-policy=automatic",
                   "--data-file=-"),
            unless=gcloud("secrets", "describe", o.secret), secret_input=True),
        Run("only the functions read the key",
            gcloud("secrets", "add-iam-policy-binding", o.secret,
                   word("--member=", *_SA_MEMBER), "--role=roles/secretmanager.secretAccessor")),
    ]
    if plan.bucket:
        found.append(Run("large results and arguments go to FUNCTION_FLOW_BUCKET",
                         gcloud("storage", "buckets", "add-iam-policy-binding",
                                f"gs://{plan.bucket}", word("--member=", *_SA_MEMBER),
                                "--role=roles/storage.objectUser")))
    return found


def _topics(plan: Plan) -> list[Step]:
    found: list[Step] = []
    for topic in plan.topics:
        found += [
            Run(f"topic {topic}", gcloud("pubsub", "topics", "create", topic),
                unless=gcloud("pubsub", "topics", "describe", topic)),
            Run(f"the functions publish to {topic}",
                gcloud("pubsub", "topics", "add-iam-policy-binding", topic,
                       word("--member=", *_SA_MEMBER), "--role=roles/pubsub.publisher")),
        ]
    return found


def _env(plan: Plan, function: Function) -> Command:
    o = plan.options
    pairs: list[tuple[str, tuple]] = [
        ("FUNCTION_FLOW_BACKEND", ("gcp",)), ("GOOGLE_CLOUD_PROJECT", (PROJECT,)),
        # The Job's topics: remote functions answer on the events topic they name.
        ("FUNCTION_FLOW_SCHEDULE_TOPIC", (plan.schedule_topic,)),
        ("FUNCTION_FLOW_EVENTS_TOPIC", (plan.events_topic,)),
        ("FUNCTION_FLOW_FIRESTORE_DATABASE", (o.database,)),
        ("FUNCTION_FLOW_RUN_TTL_DAYS", (str(o.run_ttl_days),))]
    if o.tracing != "off":
        pairs.append(("FUNCTION_FLOW_TRACING", (o.tracing,)))
    callback = plan.function("callback")
    if callback is not None and function is not callback:
        pairs.append(("FUNCTION_FLOW_CALLBACK_URL", (url_var(callback),)))
    pairs += [(name, (value,)) for name, value in o.env]
    parts: list = ["--set-env-vars="]
    for i, (name, value) in enumerate(pairs):
        parts += [("," if i else "") + name + "=", *value]
    secrets = f"--set-secrets=FUNCTION_FLOW_HMAC_KEY={o.secret}:latest"
    if o.hmac_previous_version is not None:
        secrets += f",FUNCTION_FLOW_HMAC_PREVIOUS_KEY={o.secret}:{o.hmac_previous_version}"
    return (word(*parts), (secrets,))


def _functions(plan: Plan) -> list[Step]:
    found: list[Step] = []
    for function in plan.functions:
        how = f"pushed from {function.topic}" if function.topic else "HTTP"
        found.append(Run(
            f"{function.entry_point} ({how}), not public",
            gcloud("functions", "deploy", function.name, "--gen2", word("--region=", REGION),
                   f"--runtime={plan.options.runtime}", word("--source=", SOURCE),
                   f"--entry-point={function.entry_point}", "--trigger-http",
                   "--no-allow-unauthenticated", word("--service-account=", SA),
                   f"--timeout={FUNCTION_TIMEOUT}", *_env(plan, function))))
        found.append(Run(f"the URL of {function.name}",
                         gcloud("functions", "describe", function.name, "--gen2",
                                word("--region=", REGION), "--format=value(serviceConfig.uri)"),
                         capture=url_var(function).name))
    poller = plan.function("poller")
    for function in (*plan.pushed, *([poller] if poller else [])):
        found.append(Run(f"the service account's OIDC tokens may invoke {function.name}",
                         gcloud("functions", "add-invoker-policy-binding", function.name,
                                word("--region=", REGION), word("--member=", *_SA_MEMBER))))
    return found


def _pushes(plan: Plan) -> list[Step]:
    """Our own push subscription per event function, with a dead-letter topic."""
    if not plan.pushed:
        return []
    found: list[Step] = [
        Run("Pub/Sub's service agent signs the pushes' OIDC tokens",
            gcloud("iam", "service-accounts", "add-iam-policy-binding", SA,
                   word("--member=", *_PUBSUB_AGENT),
                   "--role=roles/iam.serviceAccountTokenCreator"))]
    o = plan.options
    for function in plan.pushed:
        dead = function.dead_letter
        assert function.topic is not None
        found += [
            Run(f"dead-letter topic of {function.subscription}",
                gcloud("pubsub", "topics", "create", dead),
                unless=gcloud("pubsub", "topics", "describe", dead)),
            Run("Pub/Sub's service agent dead-letters there",
                gcloud("pubsub", "topics", "add-iam-policy-binding", dead,
                       word("--member=", *_PUBSUB_AGENT), "--role=roles/pubsub.publisher")),
            Run("dead-lettered messages are kept for a week, to be read and redriven",
                gcloud("pubsub", "subscriptions", "create", dead, f"--topic={dead}",
                       "--message-retention-duration=7d", "--expiration-period=never"),
                unless=gcloud("pubsub", "subscriptions", "describe", dead)),
        ]
        push = ("--push-auth-service-account=", SA)
        settings = (word("--push-endpoint=", url_var(function)), word(*push),
                    f"--ack-deadline={ACK_DEADLINE_SECONDS}", f"--dead-letter-topic={dead}",
                    f"--max-delivery-attempts={o.max_delivery_attempts}",
                    "--min-retry-delay=10s", "--max-retry-delay=600s",
                    "--expiration-period=never")
        found += [
            Run(f"{function.topic} -> {function.name}: retried with backoff, then "
                "dead-lettered",
                gcloud("pubsub", "subscriptions", "create", function.subscription,
                       f"--topic={function.topic}", *settings),
                unless=gcloud("pubsub", "subscriptions", "describe", function.subscription),
                update=gcloud("pubsub", "subscriptions", "update", function.subscription,
                              *settings)),
            Run("Pub/Sub's service agent acknowledges what it dead-letters",
                gcloud("pubsub", "subscriptions", "add-iam-policy-binding",
                       function.subscription, word("--member=", *_PUBSUB_AGENT),
                       "--role=roles/pubsub.subscriber")),
        ]
    return found


def _poller_schedule(plan: Plan) -> list[Step]:
    poller = plan.function("poller")
    assert poller is not None
    url = url_var(poller)
    settings = (word("--location=", REGION), f"--schedule={plan.options.schedule}",
                word("--uri=", url), "--http-method=POST", word("--oidc-service-account-email=",
                                                                SA),
                word("--oidc-token-audience=", url), f"--attempt-deadline={FUNCTION_TIMEOUT}")
    return [Run("Cloud Scheduler calls the poller (timers, expired leases, lost messages)",
                gcloud("scheduler", "jobs", "create", "http", plan.scheduler_job, *settings,
                       "--time-zone=Etc/UTC"),
                unless=gcloud("scheduler", "jobs", "describe", plan.scheduler_job,
                              word("--location=", REGION)),
                update=gcloud("scheduler", "jobs", "update", "http", plan.scheduler_job,
                              *settings))]


def _log_sink(plan: Plan) -> list[Step]:
    """Function Flow's deployment step: finished BigQuery jobs reach the listener."""
    destination = word("pubsub.googleapis.com/projects/", PROJECT, f"/topics/{plan.events_topic}")
    settings = (destination, f"--log-filter={BIGQUERY_LOG_FILTER}")
    writer = Var("SINK_WRITER")
    return [
        Run("finished BigQuery jobs are logged to the external events topic",
            gcloud("logging", "sinks", "create", SINK, *settings),
            unless=gcloud("logging", "sinks", "describe", SINK),
            update=gcloud("logging", "sinks", "update", SINK, *settings)),
        Run("the sink's writer identity",
            gcloud("logging", "sinks", "describe", SINK, "--format=value(writerIdentity)"),
            capture=writer.name),
        Run(f"the sink may publish to {plan.events_topic}",
            gcloud("pubsub", "topics", "add-iam-policy-binding", plan.events_topic,
                   word("--member=", writer), "--role=roles/pubsub.publisher")),
    ]


def _summary(plan: Plan) -> list[Step]:
    start = plan.function("start")
    assert start is not None
    token = " with an identity token (gcloud auth print-identity-token)"
    said: list[Step] = [Say(word(f"deployed job {plan.job_name}; start a run: POST its "
                                 "arguments as JSON to ", url_var(start), token))]
    control = plan.function("control")
    if control is not None:
        said.append(Say(word('pause, resume or cancel a run: POST {"action": ..., "run_id": '
                             '...} to ', url_var(control), token)))
    for topic in plan.unanswered:
        said.append(Say(word(f"no @remote.function in {plan.functions_file or plan.workflow} "
                             f"answers the topic {topic}: deploy the function that does "
                             f"(--trigger-topic {topic}; it answers on {plan.events_topic})")))
    return said
