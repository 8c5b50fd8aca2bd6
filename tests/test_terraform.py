"""terraform/: formatted, and what its README promises.

The module cannot be `terraform validate`d here (no provider download;
terraform/validate.sh does it elsewhere). These tests read its HCL instead,
hold the README's role, input and output tables to it, and let Terraform
itself evaluate the variables' validations and the locals that decide the
topology (tests/terraform_hcl.py says how, without any provider).
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

import terraform_hcl as tf
from function_flow.store import expiry
from terraform_hcl import block, dynamic

MODULE = tf.load(tf.MODULE_DIR)
README = (tf.MODULE_DIR / "README.md").read_text(encoding="utf-8")
CORE = ["start", "scheduler", "external_event_listener", "poller", "callback", "control"]
#: Function Flow's log router filter (its README, "Deployment").
FUNCTION_FLOW_FILTER = ('resource.type="bigquery_resource" AND '
                        'protoPayload.methodName="jobservice.jobcompleted"')
#: The member expressions of iam.tf, by the account name the README's table uses.
MEMBERS = {
    "${local.runtime_member}": "runtime",
    "${local.invoker_member}": "invoker",
    "${local.build_member}": "build",
    "${local.pubsub_agent_member}": "pubsub_agent",
    "${local.sink_writer_member}": "sink_writer",
    "${each.value.member}": "caller",
}
#: The sample's deployment (examples/basic): one remote function.
SAMPLE = {"project": "my-project", "region": "europe-west1", "source_archive": "/tmp/source.zip",
          "remote_functions": {"regional_pricing": {"topic": "PRICING_REQUESTS"}},
          "invokers": {"start": ["group:ops@example.com"], "control": ["user:me@example.com"]}}


def test_terraform_fmt_check() -> None:
    result = tf.run(["fmt", "-check", "-recursive", "-diff", str(tf.MODULE_DIR)], tf.ROOT)
    assert result.returncode == 0, (
        "terraform fmt -check -recursive terraform/ failed; run `terraform fmt -recursive "
        f"terraform/`:\n{result.stdout}{result.stderr}")


def test_scripts_pass_shellcheck() -> None:
    import subprocess

    scripts = sorted(str(path) for path in tf.MODULE_DIR.rglob("*.sh"))
    assert scripts, "terraform/validate.sh is missing"
    result = subprocess.run([tf.shellcheck(), *scripts], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_functions_are_2nd_gen_http_functions_from_one_source() -> None:
    assert not MODULE.of_type("google_cloudfunctions_function"), "1st gen function"
    functions = MODULE.of_type("google_cloudfunctions2_function")
    assert list(functions) == ["function"]
    function = functions["function"]
    assert function["for_each"] == "${local.functions}"
    # No Eventarc trigger: its subscription could not take a dead-letter policy.
    assert "event_trigger" not in function
    build = block(function, "build_config")
    assert build["entry_point"] == "${each.value.entry_point}"
    source = block(block(build, "source"), "storage_source")
    assert source == {"bucket": "${local.source_bucket}", "object": "${local.source_object}"}
    service = block(function, "service_config")
    assert service["service_account_email"] == "${google_service_account.runtime.email}"
    assert service["environment_variables"] == "${local.environment}"
    secrets = dynamic(service, "secret_environment_variables")
    assert secrets["for_each"] == "${each.value.hmac ? local.hmac_variables : {}}"
    assert block(secrets, "content")["secret"] == "${local.hmac_secret_id}"
    assert MODULE.locals["default_entry_points"] == {name: name for name in CORE}
    assert MODULE.locals["core_topics"] == {"scheduler": "${var.schedule_topic}",
                                            "external_event_listener": "${var.events_topic}"}
    defaults = {name: MODULE.variables[name].get("default") for name in
                ("schedule_topic", "events_topic", "poller_schedule", "hmac_key_version")}
    assert defaults == {"schedule_topic": "SCHEDULE", "events_topic": "SCHEDULE_EXTERNAL_EVENTS",
                        "poller_schedule": "* * * * *", "hmac_key_version": "latest"}


def test_every_push_subscription_has_oidc_retries_and_a_dead_letter_topic() -> None:
    subscriptions = MODULE.of_type("google_pubsub_subscription")
    pushing = {name: body for name, body in subscriptions.items() if "push_config" in body}
    assert list(pushing) == ["push"]
    push = pushing["push"]
    assert push["for_each"] == "${local.event_functions}"
    assert push["topic"] == "${google_pubsub_topic.topic[each.value.topic].id}"
    config = block(push, "push_config")
    assert config["push_endpoint"] == "${local.function_url[each.key]}"
    assert block(config, "oidc_token") == {
        "service_account_email": "${google_service_account.invoker.email}",
        "audience": "${local.function_url[each.key]}"}
    assert block(push, "dead_letter_policy") == {
        "dead_letter_topic": "${google_pubsub_topic.dead_letter[each.key].id}",
        "max_delivery_attempts": "${var.max_delivery_attempts}"}
    assert set(block(push, "retry_policy")) == {"minimum_backoff", "maximum_backoff"}
    # One dead-letter topic per push subscription, and a subscription keeping its messages.
    assert MODULE.resource("google_pubsub_topic", "dead_letter")["for_each"] == "${local.event_functions}"
    keeper = subscriptions["dead_letter"]
    assert keeper["for_each"] == "${local.event_functions}"
    assert keeper["topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    # Pub/Sub's agent may forward (publisher on each dead-letter topic) and
    # acknowledge (subscriber on each push subscription).
    publisher = MODULE.resource("google_pubsub_topic_iam_member", "pubsub_agent_dead_letter_publisher")
    subscriber = MODULE.resource("google_pubsub_subscription_iam_member", "pubsub_agent_push_subscriber")
    assert (publisher["for_each"], publisher["topic"]) == (
        "${local.event_functions}", "${google_pubsub_topic.dead_letter[each.key].name}")
    assert (subscriber["for_each"], subscriber["subscription"]) == (
        "${local.event_functions}", "${google_pubsub_subscription.push[each.key].name}")


def test_poller_job_calls_the_poller_with_an_oidc_token() -> None:
    job = MODULE.resource("google_cloud_scheduler_job", "poller")
    assert job["schedule"] == "${var.poller_schedule}"
    target = block(job, "http_target")
    assert target["uri"] == '${local.function_url["poller"]}'
    assert block(target, "oidc_token")["service_account_email"] == \
        "${google_service_account.invoker.email}"
    invoker = MODULE.resource("google_cloud_run_service_iam_member", "invoker")
    assert invoker["for_each"] == "${local.invoked_functions}"


def test_firestore_ttl_policy_on_expire_at() -> None:
    ttl = MODULE.of_type("google_firestore_field")
    assert list(ttl) == ["expire_at"]
    field = ttl["expire_at"]
    assert (field["field"], field["collection"]) == ("expire_at", "${each.key}")
    assert "ttl_config" in field and field["database"] == "${local.firestore_database}"
    assert "`expire_at`" in README


def test_bigquery_log_sink_publishes_to_the_events_topic() -> None:
    sink = MODULE.resource("google_logging_project_sink", "bigquery")
    assert sink["destination"] == \
        "pubsub.googleapis.com/${google_pubsub_topic.topic[var.events_topic].id}"
    assert sink["unique_writer_identity"] is True
    assert MODULE.variables["log_sink_filter"]["default"].replace('\\"', '"') == FUNCTION_FLOW_FILTER
    grant = MODULE.resource("google_pubsub_topic_iam_member", "sink_writer_publisher")
    assert (grant["topic"], grant["role"], grant["member"]) == (
        "${google_pubsub_topic.topic[var.events_topic].name}", "roles/pubsub.publisher",
        "${local.sink_writer_member}")
    assert "writer_identity" in MODULE.locals["sink_writer_member"]


def test_nothing_is_public() -> None:
    for directory in (tf.MODULE_DIR, tf.EXAMPLE_DIR):
        text = tf.load(directory).everything_but_variables()
        for public in ("allUsers", "allAuthenticatedUsers"):
            assert public not in text, f"{public} in {directory}"
    authoritative = [key for key in MODULE.resources if key[0].endswith(("_iam_binding", "_iam_policy"))]
    assert not authoritative, f"authoritative IAM replaces others' access: {authoritative}"


def _grants() -> set[tuple[str, str, str]]:
    grants = set()
    for (resource_type, name), body in MODULE.resources.items():
        if resource_type.endswith("_iam_member"):
            assert body["member"] in MEMBERS, f"{resource_type}.{name}: unknown member {body['member']}"
            grants.add((MEMBERS[body["member"]], body["role"], resource_type))
    return grants


def test_roles_are_exactly_the_readme_table() -> None:
    documented = {(row[0], row[1], row[3]) for row in tf.table(README, "Roles")}
    assert _grants() == documented
    project_wide = {(MEMBERS[body["member"]], body["role"])
                    for body in MODULE.of_type("google_project_iam_member").values()}
    assert project_wide == {("runtime", "roles/datastore.user"), ("build", "roles/run.builder"),
                            ("runtime", "roles/cloudtrace.agent")}
    assert MODULE.resource("google_project_iam_member", "runtime_cloudtrace_agent")["count"] \
        == '${var.tracing == "gcp" ? 1 : 0}'
    accounts = {name: MODULE.locals[f"{name}_member"] for name in ("runtime", "invoker", "build")}
    assert "google_service_account.runtime.email" in accounts["runtime"]
    assert "google_service_account.invoker.email" in accounts["invoker"]
    assert "google_service_account.build[0].email" in accounts["build"]
    assert "@gcp-sa-pubsub.iam.gserviceaccount.com" in MODULE.locals["pubsub_agent_member"]
    for resource_type in ("google_pubsub_topic_iam_member", "google_cloud_run_service_iam_member"):
        for name, body in MODULE.of_type(resource_type).items():
            target = body.get("topic") or body.get("service")
            assert target.startswith(("${google_pubsub_topic.", "${google_cloudfunctions2_function.")), \
                f"{resource_type}.{name} is granted on {target}"


def test_references_resolve_and_every_variable_is_used() -> None:
    text = MODULE.everything_but_variables()
    used = set(tf.VAR_REF.findall(text))
    declared = set(MODULE.variables)
    assert used == declared, f"unused: {declared - used}, undeclared: {used - declared}"
    in_validations = set(tf.VAR_REF.findall(json.dumps(MODULE.variables)))
    assert in_validations <= declared
    assert set(tf.LOCAL_REF.findall(text)) == set(MODULE.locals), "undefined or unused locals"
    for pattern, declared_refs in ((tf.RESOURCE_REF, MODULE.resources), (tf.DATA_REF, MODULE.data),
                                   (tf.EPHEMERAL_REF, MODULE.ephemeral)):
        for reference in set(pattern.findall(text)):
            assert reference in declared_refs, f"reference to undeclared {'.'.join(reference)}"
    for name, body in MODULE.variables.items():
        assert body.get("description") and body.get("type"), f"variable {name}"


def test_readme_documents_every_variable_and_output() -> None:
    assert [row[0] for row in tf.table(README, "Inputs")] == list(MODULE.variables)
    assert [row[0] for row in tf.table(README, "Outputs")] == list(MODULE.outputs)
    assert {"start_url", "function_urls", "schedule_topic", "events_topic",
            "service_account_email"} <= set(MODULE.outputs)
    for name, body in MODULE.outputs.items():
        assert body.get("description") and body.get("value"), f"output {name}"
    assert MODULE.outputs["start_url"]["value"] == '${local.function_url["start"]}'


def test_example_uses_the_module_with_declared_variables_only() -> None:
    example = tf.load(tf.EXAMPLE_DIR)
    assert list(example.modules) == ["function_flow"]
    call = example.modules["function_flow"]
    assert call["source"] == "../.."
    arguments = set(call) - {"source", "version", "providers", "depends_on", "count", "for_each"}
    assert arguments <= set(MODULE.variables), f"undeclared: {arguments - set(MODULE.variables)}"
    required = {name for name, body in MODULE.variables.items() if "default" not in body}
    assert required <= arguments
    text = example.everything_but_variables()
    assert set(tf.VAR_REF.findall(text)) == set(example.variables)
    assert set(re.findall(r"module\.function_flow\.(\w+)", text)) <= set(MODULE.outputs)


# ------------------------------------------- Terraform evaluates, offline


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tf.scratch(tmp_path_factory.mktemp("terraform"))


def test_topology_as_terraform_computes_it(scratch: pathlib.Path) -> None:
    names = ["functions", "function_names", "event_functions", "topics", "invoked_functions",
             "caller_grants", "callback_url", "hmac_variables", "ttl_collection_groups"]
    sample = tf.evaluate(scratch, SAMPLE, names)
    assert set(sample["functions"]) == {*CORE, "regional_pricing"}
    assert sample["functions"]["regional_pricing"] == {
        "entry_point": "regional_pricing", "topic": "PRICING_REQUESTS", "hmac": True}
    # The topic-triggered functions: each gets a push subscription and a dead-letter topic.
    assert {name: f["topic"] for name, f in sample["event_functions"].items()} == {
        "scheduler": "SCHEDULE", "external_event_listener": "SCHEDULE_EXTERNAL_EVENTS",
        "regional_pricing": "PRICING_REQUESTS"}
    assert sorted(sample["topics"]) == ["PRICING_REQUESTS", "SCHEDULE", "SCHEDULE_EXTERNAL_EVENTS"]
    assert sorted(sample["invoked_functions"]) == sorted([*sample["event_functions"], "poller"])
    assert sample["function_names"]["external_event_listener"] == "external-event-listener"
    assert sorted(sample["caller_grants"]) == ["control user:me@example.com",
                                               "start group:ops@example.com"]
    assert sample["callback_url"] == "https://europe-west1-my-project.cloudfunctions.net/callback"
    assert sample["hmac_variables"] == {"FUNCTION_FLOW_HMAC_KEY": "latest"}
    # The same groups the store stamps with expire_at (store/expiry.py).
    assert sample["ttl_collection_groups"] == expiry.collection_groups()

    other = tf.evaluate(scratch, dict(
        SAMPLE, name_prefix="sales-", collection_prefix="ff_", hmac_previous_key_version="3",
        entry_points={"callback": None, "start": "begin"}, remote_functions={}), names)
    assert set(other["functions"]) == set(CORE) - {"callback"}
    assert other["functions"]["start"]["entry_point"] == "begin"
    assert other["function_names"]["scheduler"] == "sales-scheduler"
    assert other["callback_url"] is None
    assert other["hmac_variables"] == {"FUNCTION_FLOW_HMAC_KEY": "latest",
                                       "FUNCTION_FLOW_HMAC_PREVIOUS_KEY": "3"}
    assert other["ttl_collection_groups"] == expiry.collection_groups("ff_")


def test_the_functions_get_the_ttl_that_makes_the_store_write_expire_at() -> None:
    main_tf = (tf.ROOT / "terraform" / "main.tf").read_text()
    assert "var.run_ttl ? { FUNCTION_FLOW_RUN_TTL_DAYS = tostring(var.run_ttl_days) } : {}" \
        in main_tf
    # The mode tracing.configure reads, and the API the gcp exporter writes to.
    assert 'var.tracing == "off" ? {} : { FUNCTION_FLOW_TRACING = var.tracing }' in main_tf
    assert 'var.tracing == "gcp" ? ["cloudtrace.googleapis.com"] : []' in main_tf


@pytest.mark.parametrize("change, message", [
    ({}, ""),
    ({"invokers": {"start": ["allUsers"]}}, "never public"),
    ({"invokers": {"control": ["allAuthenticatedUsers"]}}, "never public"),
    ({"remote_functions": {"f": {"topic": "SCHEDULE"}}}, "a topic of its own"),
    ({"remote_functions": {"a": {"topic": "T_ONE"}, "b": {"topic": "T_ONE"}}}, "a topic of its own"),
    ({"remote_functions": {"poller": {"topic": "T_ONE"}}}, "cannot be named like"),
    ({"remote_functions": {"pricing_": {"topic": "T_ONE"}}}, "not ending with '_'"),
    ({"run_ttl_days": 100000}, "at most 36500 (100 years)"),
    ({"remote_functions": {"f": {"topic": "googthing"}}}, "Pub/Sub topic name"),
    ({"schedule_topic": "1bad"}, "Pub/Sub topic name"),
    ({"entry_points": {"poller": None}}, "cannot be left out"),
    ({"entry_points": {"control": None}}, "invokers keys must be functions the module deploys"),
    ({"invokers": {"regional_pricing": ["user:me@example.com"], "nope": []}}, "invokers keys must"),
    ({"entry_points": {"start": "not-python"}}, "Python identifier"),
    ({"source_archive": None}, "exactly one of source_archive and source_object"),
    ({"source_bucket": "b", "source_object": "o.zip"}, "exactly one of source_archive"),
    ({"timeout_seconds": 900}, "600 (Pub/Sub's longest ack deadline)"),
    ({"region": "Europe West"}, "region must be"),
    ({"tracing": "jaeger"}, "tracing must be off, gcp (Cloud Trace), otlp or console"),
], ids=lambda value: json.dumps(value)[:40] if isinstance(value, dict) else None)
def test_variable_validation(scratch: pathlib.Path, change: dict, message: str) -> None:
    errors = tf.plan_errors(scratch, dict(SAMPLE, **change))
    if not message:
        assert errors == ""
    else:
        assert message in errors, errors
