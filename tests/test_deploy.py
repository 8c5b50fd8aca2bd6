"""`function-flow deploy`: the commands it prints, the commands it runs, and bad input.

gcloud never reaches the network here: a stand-in (fake_gcloud.py) is first
on PATH and records each argv. The script `--dry-run` prints for the
sample is a snapshot (tests/snapshots/deploy_sample.sh), deploy/deploy.sh is
generated from the same steps, and both pass shellcheck; running the
printed script and running `deploy` itself must make the very same calls,
and deploying twice must succeed (the stand-in refuses to create what
exists). `UPDATE_SNAPSHOTS=1 pytest tests/test_deploy.py` rewrites the
snapshot and deploy/deploy.sh after an intended change.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import fake_gcloud
import terraform_hcl
from function_flow import loader
from function_flow.cli import main
from function_flow.cli.deploy import deploy_script
from function_flow.deploy import commands, plan as planning
from function_flow.store import expiry, indexes

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT = Path(__file__).parent / "snapshots" / "deploy_sample.sh"
DEPLOY_SH = REPO / "deploy" / "deploy.sh"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"
ARGS = ("--project", "my-project", "--region", "europe-west1")
SAMPLE_FUNCTIONS = {"callback", "start", "control", "poller", "scheduler",
                    "external-event-listener", "regional-pricing"}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A directory holding a copy of samples/ (deploy builds .function_flow/ in it)."""
    shutil.copytree(REPO / "samples", tmp_path / "samples",
                    ignore=shutil.ignore_patterns("output", "__pycache__"))
    return tmp_path


@pytest.fixture
def gcloud(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The stand-in gcloud's environment, and its log."""
    log = tmp_path / "gcloud.log"
    return fake_gcloud.install(tmp_path / "bin", log, tmp_path / "state"), log


def flow(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    return subprocess.run([sys.executable, "-m", "function_flow", *args], cwd=cwd,
                          env={**full, **env}, capture_output=True, text=True, timeout=100,
                          stdin=subprocess.DEVNULL)


def argvs(log: Path) -> list[list[str]]:
    return [call["argv"] for call in fake_gcloud.calls(log)]


def shellcheck(path: Path) -> None:
    result = subprocess.run([terraform_hcl.shellcheck(), "--shell=bash", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def matches_file(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, \
        f"{path.relative_to(REPO)} is out of date: UPDATE_SNAPSHOTS=1 pytest {__file__}"


def body(script: str) -> str:
    """A script's steps: everything after its first blank line."""
    return script.split("\n\n", 1)[1]


def test_dry_run_prints_the_snapshot_and_deploy_sh_has_the_same_steps(sample, gcloud) -> None:
    env, log = gcloud
    result = flow(sample, "deploy", "samples/main.py", *ARGS, "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert argvs(log) == []  # a dry run runs no gcloud command
    assert (sample / ".function_flow/deploy/sample_job/main.py").is_file()
    matches_file(SNAPSHOT, result.stdout)
    job = loader.load_job(str(REPO / "samples" / "main.py"))
    plan = planning.derive(loader.load_module(str(REPO / "samples" / "main.py")), job,
                           "samples/main.py", planning.Options("my-project", "europe-west1"))
    steps = [*commands.inputs(plan), *commands.steps(plan)]
    matches_file(DEPLOY_SH, deploy_script(plan, steps, "samples/main.py",
                                          ".function_flow/deploy/sample_job",
                                          "deploy/deploy.sh"))
    assert body(DEPLOY_SH.read_text()) == body(result.stdout)
    assert os.access(DEPLOY_SH, os.X_OK)
    shellcheck(SNAPSHOT)
    shellcheck(DEPLOY_SH)


def test_deploy_runs_what_the_script_runs_and_deploying_again_converges(sample, gcloud,
                                                                        tmp_path) -> None:
    env, log = gcloud
    printed = flow(sample, "deploy", "samples/main.py", *ARGS, "--dry-run", env=env)
    (tmp_path / "printed.sh").write_text(printed.stdout)
    scripted = subprocess.run(["bash", str(tmp_path / "printed.sh")], cwd=sample,
                              env={**os.environ, **env}, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=100)
    assert scripted.returncode == 0, scripted.stderr
    by_script = fake_gcloud.calls(log)
    log.unlink()
    shutil.rmtree(tmp_path / "state")

    first = flow(sample, "deploy", "samples/main.py", *ARGS, env=env)
    assert first.returncode == 0, first.stderr
    calls = fake_gcloud.calls(log)
    assert calls == by_script  # the same argv lists, in the same order, the same input
    assert "start a run: POST its arguments as JSON to https://start-" in first.stderr

    deployed = {a[2] for a in argvs(log) if a[:2] == ["functions", "deploy"]}
    assert deployed == SAMPLE_FUNCTIONS
    for argv in argvs(log):
        assert not {"allUsers", "allAuthenticatedUsers"} & {p.split(":")[-1] for a in argv
                                                             for p in a.split("=")}, argv
        if argv[:2] == ["functions", "deploy"]:
            assert {"--gen2", "--trigger-http", "--no-allow-unauthenticated",
                    "--service-account=function-flow@my-project.iam.gserviceaccount.com",
                    "--set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest"} \
                <= set(argv), argv
    pushes = [a for a in argvs(log) if a[:3] == ["pubsub", "subscriptions", "create"]
              and a[3].endswith("-push")]
    assert {(a[3], a[4]) for a in pushes} == {
        ("scheduler-push", "--topic=SCHEDULE"),
        ("external-event-listener-push", "--topic=SCHEDULE_EXTERNAL_EVENTS"),
        ("regional-pricing-push", "--topic=PRICING_REQUESTS")}
    for push in pushes:
        name = push[3][:-len("-push")]
        assert f"--push-endpoint={fake_gcloud.url_of(name)}" in push  # the captured URL
        assert f"--dead-letter-topic={name}-dead-letter" in push
        assert "--push-auth-service-account=function-flow@my-project.iam.gserviceaccount.com" \
            in push and "--max-delivery-attempts=10" in push
    ttls = {a[5] for a in argvs(log) if a[:4] == ["firestore", "fields", "ttls", "update"]}
    assert ttls == {f"--collection-group={g}" for g in expiry.collection_groups()}
    unindexed = {a[5] for a in argvs(log) if a[:5] == ["firestore", "indexes", "fields",
                                                       "update", "expire_at"]}
    assert unindexed == ttls
    secret, = [c for c in calls if c["argv"][:2] == ["secrets", "create"]]
    assert secret["stdin"] >= 32
    scheduled, = [a for a in argvs(log) if a[:4] == ["scheduler", "jobs", "create", "http"]]
    assert f"--uri={fake_gcloud.url_of('poller')}" in scheduled
    assert "--oidc-service-account-email=function-flow@my-project.iam.gserviceaccount.com" \
        in scheduled
    assert ["pubsub", "topics", "add-iam-policy-binding", "SCHEDULE_EXTERNAL_EVENTS",
            f"--member={fake_gcloud.writer_of('bq_complete_sink')}",
            "--role=roles/pubsub.publisher", "--project=my-project"] in argvs(log)

    log.unlink()
    again = flow(sample, "deploy", "samples/main.py", *ARGS, env=env)
    assert again.returncode == 0, again.stderr  # nothing is created twice
    # A composite index has no name to describe: its create is refused as existing.
    composite = ["firestore", "indexes", "composite", "create"]
    assert not [a for a in argvs(log) if "create" in a and a[:4] != composite]
    for index in indexes.composite_indexes():
        assert f"need an index: {index.describe()}: exists" in again.stderr
    # The three push subscriptions, the scheduler job and the sink are updated instead.
    assert sum(1 for a in argvs(log) if "update" in a and "fields" not in a) == 5
    assert sum(1 for a in argvs(log) if a[:2] == ["functions", "deploy"]) == \
        len(SAMPLE_FUNCTIONS)  # deploying a function is idempotent by nature


def test_a_failing_command_stops_the_deployment_in_one_line(sample, gcloud) -> None:
    env, log = gcloud
    result = flow(sample, "deploy", "samples/main.py", *ARGS,
                  env={**env, "FAKE_GCLOUD_FAIL": "functions deploy start"})
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: functions deploy start failed"), last
    assert "deploying again continues from there" in last
    assert argvs(log)[-1][:3] == ["functions", "deploy", "start"]  # nothing ran after it


# ------------------------------------------------------------------ bad input

WORKFLOW = """
from function_flow import remote, tasks
job = tasks.Job(name={name!r}, schedule_topic={topic!r})
job.task(task_id="a")(lambda task, job: 1)
{entry_points}
"""
ENTRY_POINTS = """
start = job.make_start()
scheduler = job.make_scheduler()
external_event_listener = job.make_external_event_listener()
poller = job.make_poller()
"""


@pytest.fixture(autouse=True)
def cli_logging():
    """`main()` in this process adds a log handler each time: take it off again."""
    handlers = list(logging.getLogger("function_flow").handlers)
    yield
    logging.getLogger("function_flow").handlers[:] = handlers


@pytest.fixture
def deploy_in(tmp_path: Path, gcloud, monkeypatch, capsys):
    """Run `function-flow deploy` in this process; returns (exit code, stdout, stderr)."""
    env, log = gcloud
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)

    def deploy(*args: str, workflow: str | None = None) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main(["deploy", *args])
        out, err = capsys.readouterr()
        assert argvs(log) == []  # the error came before any command
        assert not (tmp_path / ".function_flow").exists()  # and before the build
        return exited.value.code, out, err

    return deploy


def write(tmp_path: Path, stem: str, name: str = "wf", topic: str = "SCHEDULE",
          entry_points: str = ENTRY_POINTS, extra: str = "") -> str:
    path = tmp_path / f"{stem}.py"
    path.write_text(WORKFLOW.format(name=name, topic=topic, entry_points=entry_points) + extra)
    return str(path)


def assert_one_error_line(result: tuple[int, str, str], *fragments: str) -> None:
    code, out, err = result
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_is_one_error_line_before_any_command(deploy_in, tmp_path) -> None:
    good = write(tmp_path, "deploy_good")
    assert_one_error_line(deploy_in(good, "--region", "europe-west1"),
                          "Missing option '--project'")
    assert_one_error_line(deploy_in(good, "--project", "my-project"),
                          "Missing option '--region'")
    assert_one_error_line(deploy_in(good, "--project", "My Project", "--region", "europe-west1"),
                          "--project 'My Project' is not a Google Cloud project id")
    assert_one_error_line(deploy_in(good, *ARGS[:2], "--region", "Europe"),
                          "--region 'Europe' is not a region")
    nojob = tmp_path / "deploy_nojob.py"
    nojob.write_text("x = 1\n")
    assert_one_error_line(deploy_in(str(nojob), *ARGS), "defines no Job")
    bare = write(tmp_path, "deploy_bare", entry_points="")
    assert_one_error_line(deploy_in(bare, *ARGS),
                          "defines no start, scheduler, external_event_listener, poller",
                          "poller = job.make_poller()")
    long_name = "f" * 64
    remote = write(tmp_path, "deploy_long_remote", extra=(
        f"\n@remote.function(topic='DEPLOY_LONG_TOPIC')\ndef {long_name}(payload, context):"
        "\n    return 1\n"))
    assert_one_error_line(deploy_in(remote, *ARGS), f"{long_name} in", "Cloud Functions refuses")
    twice = write(tmp_path, "deploy_twice", extra=(
        "\n@remote.function(topic='DEPLOY_TWICE')\ndef first(payload, context):\n    return 1\n"
        "\n@remote.function(topic='DEPLOY_TWICE')\ndef second(payload, context):\n    return 2\n"
        "\nalias = first\n"))  # the same function under another name is no second one
    assert_one_error_line(deploy_in(twice, *ARGS),
                          "first and second in", "both answer the topic 'DEPLOY_TWICE'")
    assert_one_error_line(deploy_in(write(tmp_path, "deploy_goog", topic="goog-schedule"),
                                    *ARGS), "'goog-schedule'", "not a Pub/Sub topic name")
    assert_one_error_line(deploy_in(write(tmp_path, "deploy_spaced", name="sales report"),
                                    *ARGS), "'sales report-poller' is not a Cloud Scheduler job",
                          "--scheduler-job")
    assert_one_error_line(deploy_in(good, *ARGS, "--env", "FUNCTION_FLOW_BACKEND=embedded"),
                          "deploy sets FUNCTION_FLOW_BACKEND itself")
    assert_one_error_line(deploy_in(good, *ARGS, "--max-delivery-attempts", "3"),
                          "from 5 to 100")
    assert_one_error_line(deploy_in(good, *ARGS, "--run-ttl-days", "10000000"),
                          "--run-ttl-days must be from 1 to 36,500 (100 years)")
    assert_one_error_line(deploy_in(good, *ARGS, "--env", "FUNCTION_FLOW_TRACING=gcp"),
                          "deploy sets FUNCTION_FLOW_TRACING itself: use --tracing MODE")
    assert_one_error_line(deploy_in(good, *ARGS, "--tracing", "jaeger"), "--tracing")


def test_the_upload_of_a_file_not_named_main_py(tmp_path: Path) -> None:
    """main.py imports the entry points from the workflow's own module (so helper
    modules importing it share its Job); the directory's requirements are merged."""
    from function_flow.deploy import source

    folder = tmp_path / "flows"
    (folder / "data").mkdir(parents=True)
    (folder / "pipeline.py").write_text(WORKFLOW.format(name="wf", topic="SCHEDULE",
                                                        entry_points=ENTRY_POINTS))
    (folder / "data" / "rows.csv").write_text("a,b\n")
    (folder / "requirements.txt").write_text("# ours\npandas>=2\nfunction-flow-orchestrator\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "pipeline.cpython-311.pyc").write_bytes(b"")
    built = source.build(str(folder / "pipeline.py"), str(tmp_path / "upload"),
                         ["start", "poller"])
    assert (built / "main.py").read_text().splitlines()[-1] == \
        "from pipeline import start, poller  # noqa: F401"
    assert (built / "pipeline.py").is_file() and (built / "data" / "rows.csv").is_file()
    assert (built / "function_flow" / "deploy" / "source.py").is_file()
    assert not (built / "__pycache__").exists()
    requirements = (built / "requirements.txt").read_text().splitlines()
    assert [r for r in requirements if not r.startswith("#")] == \
        [*source.runtime_requirements(), "pandas>=2"]  # the vendored package is not listed
    # Built again, it is replaced; a directory it did not build is never replaced.
    assert source.build(str(folder / "pipeline.py"), str(built), ["start"]) == built
    (folder / "main.py").write_text("")
    with pytest.raises(source.SourceError, match="has a main.py of its own"):
        source.build(str(folder / "pipeline.py"), str(tmp_path / "other"), ["start"])
    (tmp_path / "mine").mkdir()
    with pytest.raises(source.SourceError, match="was not built by function-flow deploy"):
        source.build(str(folder / "main.py"), str(tmp_path / "mine"), ["start"])


def test_a_remote_topic_the_file_does_not_answer_is_created_and_reported(
        tmp_path: Path, monkeypatch, capsys) -> None:
    path = write(tmp_path, "deploy_unanswered", extra=(
        "job.task(task_id='r', deps=['a'], remote_topic='DEPLOY_ELSEWHERE')(lambda task, job: 1)\n"
        "scheduler = job.make_scheduler()\n"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["deploy", path, *ARGS, "--dry-run"])
    script = capsys.readouterr().out
    assert exited.value.code == 0
    assert "gcloud pubsub topics create DEPLOY_ELSEWHERE" in script
    assert "regional" not in script and "-push --topic=DEPLOY_ELSEWHERE" not in script
    assert "no @remote.function in " + path + " answers the topic DEPLOY_ELSEWHERE" in script
    # The Job's topics reach every function: a remote function answers on the events topic.
    assert "FUNCTION_FLOW_SCHEDULE_TOPIC=SCHEDULE,FUNCTION_FLOW_EVENTS_TOPIC=" \
           "SCHEDULE_EXTERNAL_EVENTS" in script


def test_tracing_gcp_sets_the_mode_installs_the_exporter_and_grants_cloud_trace(
        tmp_path: Path, monkeypatch, capsys) -> None:
    from function_flow.tracing import PACKAGES

    path = write(tmp_path, "deploy_traced")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["deploy", path, *ARGS, "--dry-run", "--tracing", "gcp",
              "--env", "FUNCTION_FLOW_BUCKET=my-bucket"])
    script = capsys.readouterr().out
    assert exited.value.code == 0
    deploys = [line for line in script.split("\n\n") if "gcloud functions deploy" in line]
    assert deploys and all("FUNCTION_FLOW_TRACING=gcp" in d for d in deploys)
    assert "cloudtrace.googleapis.com" in script
    assert '--member=serviceAccount:"${SA}" \\\n    --role=roles/cloudtrace.agent' in script
    requirements = (tmp_path / ".function_flow/deploy/wf/requirements.txt").read_text()
    listed = {line.split(">")[0].split("=")[0] for line in requirements.splitlines()}
    assert set(PACKAGES["gcp"]) <= listed
    # The role table of deploy/README.md is every role the service account gets.
    granted = {word.removeprefix("--role=") for word in script.split()
               if word.startswith("--role=")}
    if "functions add-invoker-policy-binding" in script:
        granted.add("roles/run.invoker")
    agents = {"roles/iam.serviceAccountTokenCreator", "roles/pubsub.subscriber"}
    readme = (REPO / "deploy" / "README.md").read_text()
    table = {row.split("|")[1].strip() for row in readme.splitlines()
             if row.startswith("| roles/")}
    assert table == granted - agents

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["deploy", path, *ARGS, "--dry-run"])
    untraced = capsys.readouterr().out
    assert "FUNCTION_FLOW_TRACING" not in untraced and "cloudtrace" not in untraced
    assert "opentelemetry-sdk" not in (tmp_path / ".function_flow/deploy/wf/requirements.txt"
                                       ).read_text()

    # otlp installs the OTLP/HTTP exporter, console only the SDK; neither touches Cloud Trace.
    extra = {line.split(">")[0]: line for line in tomllib.loads(
        (REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tracing"]}
    for mode in ("otlp", "console"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["deploy", path, *ARGS, "--dry-run", "--tracing", mode])
        script = capsys.readouterr().out
        assert exited.value.code == 0 and f"FUNCTION_FLOW_TRACING={mode}" in script
        assert "cloudtrace" not in script
        lines = (tmp_path / ".function_flow/deploy/wf/requirements.txt").read_text().splitlines()
        traced = [line for line in lines if line.startswith("opentelemetry-")
                  and not line.startswith("opentelemetry-api")]
        assert traced == [extra[name] for name in PACKAGES[mode]], (mode, traced)


# ------------------------------------------------------------ state machines

MACHINE_FUNCTIONS = {"callback", "start", "control", "poller", "scheduler",
                     "external-event-listener", "score"}
#: Run in a fresh interpreter whose only path entry is the upload: the deployed
#: main.py's start runs an execution of the bundled JSON on the embedded backend.
DEPLOYED_RUN = """
import json, flask, main, function_flow
with flask.Flask("t").test_request_context(json={"input": {"name": "ada"}}):
    body, status = main.start(flask.request)
main.job.wait(body["run_id"], timeout=60)
outcome = main.job.outcome(body["run_id"])
print(json.dumps({"package": function_flow.__file__, "status": outcome.status,
                  "output": outcome.output, "job": type(main.job).__name__,
                  "callable": [n for n in ("start", "scheduler", "external_event_listener",
                               "poller", "callback", "control", "score")
                               if callable(getattr(main, n, None))]}))
"""


def test_a_state_machine_deploys_its_entry_points_and_remote_functions(
        tmp_path: Path, gcloud, monkeypatch, capsys) -> None:
    """machine.json with machine.py beside it: every entry point and the companion's
    @remote.function are Cloud Functions, and the upload runs the bundled definition."""
    env, log = gcloud
    folder = tmp_path / "machines"
    folder.mkdir()
    for name in ("scored.json", "scored.py"):
        shutil.copy(REPO / "tests" / "workflows" / "asl" / name, folder / name)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "machines/scored.json", *ARGS, "--dry-run"])
    script = capsys.readouterr().out
    assert exited.value.code == 0 and argvs(log) == []
    assert set(re.findall(r"gcloud functions deploy (\S+)", script)) == MACHINE_FUNCTIONS
    topics = re.findall(r"gcloud pubsub topics create (\S+)", script)
    assert [t for t in topics if not t.endswith("-dead-letter")] == \
        ["SCHEDULE", "SCHEDULE_EXTERNAL_EVENTS", "ASL_DEV_SCORE"]
    assert set(re.findall(r"subscriptions create (\S+-push) \\\n\s+--topic=(\S+)", script)) == {
        ("scheduler-push", "SCHEDULE"), ("external-event-listener-push",
                                         "SCHEDULE_EXTERNAL_EVENTS"),
        ("score-push", "ASL_DEV_SCORE")}
    assert "scored-poller" in script  # the poller's Cloud Scheduler job, named by the job
    assert "SOURCE=.function_flow/deploy/scored\n" in script  # the upload, named by the file

    # A remote Task state nothing beside the machine answers: its topic is created, reported.
    (tmp_path / "solo").mkdir()
    (tmp_path / "solo" / "solo.json").write_text(json.dumps({"StartAt": "R", "States": {
        "R": {"Type": "Task", "Resource": "pubsub:DEPLOY_ELSEWHERE", "End": True}}}))
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "solo/solo.json", *ARGS, "--dry-run"])
    script = capsys.readouterr().out
    assert exited.value.code == 0
    assert "gcloud pubsub topics create DEPLOY_ELSEWHERE" in script
    assert "no @remote.function in solo/solo.py answers the topic DEPLOY_ELSEWHERE" in script

    with pytest.raises(SystemExit) as exited:
        main(["deploy", "machines/scored.json", *ARGS, "--build-only", "--source-dir", "up"])
    assert exited.value.code in (0, None)
    built = tmp_path / "up"
    assert {"scored.json", "scored.py", "main.py"} <= {p.name for p in built.iterdir()}
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("FUNCTION_FLOW_") and k != "PYTHONPATH"}
    ran = subprocess.run([sys.executable, "-c", DEPLOYED_RUN], cwd=tmp_path, timeout=100,
                         env={**clean, "PYTHONPATH": str(built), "FUNCTION_FLOW_BACKEND":
                              "embedded", "FUNCTION_FLOW_DB": str(tmp_path / "runs.db")},
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["package"].startswith(str(built))  # the vendored package, not the checkout
    assert seen["job"] == "StateMachine"
    assert seen["status"] == "SUCCEEDED" and seen["output"] == {
        "name": "ada", "greeting": "hello ada", "score": {"letters": 3}}
    assert seen["callable"] == ["start", "scheduler", "external_event_listener", "poller",
                                "callback", "control", "score"]


def test_an_invalid_state_machine_is_one_error_line_naming_the_state(deploy_in,
                                                                     tmp_path) -> None:
    machine = tmp_path / "broken.json"
    machine.write_text('{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nope"}}}')
    assert_one_error_line(deploy_in(str(machine), *ARGS, "--dry-run"),
                          "invalid state machine in", "state 'A'", "'Nope'")
    (tmp_path / "notjson.json").write_text("{nope")
    assert_one_error_line(deploy_in(str(tmp_path / "notjson.json"), *ARGS), "is not JSON")
    (tmp_path / "m").mkdir()  # main.json's companion would be the deployed main.py
    (tmp_path / "m" / "main.json").write_text('{"StartAt": "A", "States": {"A": {"Type": '
                                              '"Pass", "End": true}}}')
    (tmp_path / "m" / "main.py").write_text("RESOURCES = {}\n")
    assert_one_error_line(deploy_in(str(tmp_path / "m" / "main.json"), *ARGS, "--dry-run"),
                          "has a main.py of its own", "generated for main.json")


def test_the_readmes_gcloud_commands_by_hand_take_only_real_flags() -> None:
    """README, "Running on Google Cloud": each command deploys a function of
    the sample by its Python name, a 2nd-gen name without '_', with flags
    `gcloud functions deploy --help` lists, the HMAC key, and nothing public."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.fail("the Google Cloud CLI is needed (make test checks it is installed)")
    helped = subprocess.run([gcloud, "functions", "deploy", "--help"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PAGER": "cat"})
    known = set(re.findall(r"--\[?(?:no-)?\]?([a-z][a-z0-9-]*)", helped.stdout))
    assert {"gen2", "entry-point", "trigger-topic", "set-secrets"} <= known, helped.stderr
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Running on Google Cloud"):text.index("### What bad input gets")]
    flags = re.search(r'FLAGS="(.*?)"', section, re.DOTALL).group(1)
    commands_ = re.findall(r"^gcloud functions deploy (\S+) \$FLAGS (.*?)(?:  #.*)?$",
                           section, re.MULTILINE)
    module = loader.load_module(str(REPO / "samples" / "main.py"))
    assert len(commands_) == 7
    for name, rest in commands_:
        given = re.findall(r"--([a-z0-9-]+)", flags + " " + rest)
        assert set(given) - {"gen2", "no-allow-unauthenticated"} <= known, (name, given)
        assert "_" not in name and "allow-unauthenticated" not in given, name
        entry = re.search(r"--entry-point=(\w+)", rest).group(1)
        assert name == entry.replace("_", "-")
        assert callable(getattr(module, entry, None)), entry  # the sample defines it
    assert "--set-secrets=FUNCTION_FLOW_HMAC_KEY=function-flow-hmac:latest" in flags
