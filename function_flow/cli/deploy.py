"""`function-flow deploy FILE.py|MACHINE.json --project P --region R [--dry-run]`.

Loads the workflow as `run` does, derives the deployment (deploy/plan.py,
where every name is checked, so a bad one is one `error:` line before any
command runs), builds the upload directory (deploy/source.py), then runs
the gcloud commands (deploy/runner.py), or with --dry-run prints them as
a bash script (deploy/script.py) that does the same.
"""

from __future__ import annotations

import os

import click

from function_flow import loader
from function_flow.asl.files import companion
from function_flow.cli.common import fail, load_job
from function_flow.deploy import commands, plan as planning, script, source
from function_flow.deploy.runner import DeployError, run_steps
from function_flow.deploy.steps import Step
from function_flow.errors import FunctionFlowError
from function_flow.tasks import Job


def default_source_dir(job_name: str) -> str:
    return os.path.join(".function_flow", "deploy", job_name)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--project", required=True, help="Google Cloud project id.")
@click.option("--region", required=True, help="Region of the functions, e.g. europe-west1.")
@click.option("--dry-run", is_flag=True,
              help="Print the gcloud commands as a bash script instead of running them "
                   "(the source directory is built all the same).")
@click.option("--build-only", is_flag=True, help="Only build the source directory.")
@click.option("--job", "job_name", metavar="NAME", help="Job to deploy when FILE defines several.")
@click.option("--source-dir", metavar="DIR",
              help="Where to build the uploaded directory [.function_flow/deploy/JOB].")
@click.option("--runtime", default="python312", show_default=True)
@click.option("--service-account", default="function-flow", show_default=True,
              help="Id of the functions' own service account (created if missing).")
@click.option("--secret", default="function-flow-hmac", show_default=True,
              help="Secret Manager secret of the HMAC key (created if missing).")
@click.option("--hmac-previous-version", type=int, metavar="N",
              help="While rotating the key: version N of the secret is also accepted "
                   "(FUNCTION_FLOW_HMAC_PREVIOUS_KEY).")
@click.option("--database", default="(default)", show_default=True, help="Firestore database.")
@click.option("--firestore-location", metavar="LOCATION",
              help="Where a new Firestore database goes [the region].")
@click.option("--run-ttl-days", type=int, default=30, show_default=True,
              help="Firestore deletes a run this many days after it started.")
@click.option("--schedule", default="* * * * *", show_default=True,
              help="Cloud Scheduler's schedule of the poller.")
@click.option("--scheduler-job", metavar="NAME", help="Cloud Scheduler job [JOB-poller].")
@click.option("--max-delivery-attempts", type=int, default=10, show_default=True,
              help="Deliveries of a message before it goes to the dead-letter topic.")
@click.option("--tracing", type=click.Choice(planning.TRACING_MODES), default="off",
              show_default=True,
              help="Where the functions send their spans (FUNCTION_FLOW_TRACING): gcp is "
                   "Cloud Trace (the service account gets roles/cloudtrace.agent); the "
                   "upload installs the SDK and exporter.")
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="Another environment variable of the functions. Repeatable.")
def deploy(file: str, project: str, region: str, dry_run: bool, build_only: bool,
           job_name: str | None, source_dir: str | None,
           env_pairs: tuple[str, ...], **settings: object) -> None:
    """Deploy FILE to Cloud Functions (2nd gen): every entry point and remote
    function it defines, their topics, push subscriptions with dead-letter
    topics, the poller's Cloud Scheduler job, Firestore with a TTL policy,
    the BigQuery log sink, a service account and the HMAC secret."""
    job = load_job(file, job_name)
    env = []
    for pair in env_pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--env {pair!r} must look like KEY=VALUE")
        env.append((name, value))
    try:
        options = planning.Options(project=project, region=region, env=tuple(env),
                                   **settings)  # type: ignore[arg-type]
        plan = derive(file, job, options)
        directory = source_dir or default_source_dir(job.name)
        built = source.build(file, directory, [f.entry_point for f in plan.functions],
                             tracing=options.tracing)
    except FunctionFlowError as exc:
        fail(str(exc))
    click.echo(f"built {directory} ({_count(built)} files) from {file}", err=True)
    if build_only:
        return
    steps = [*commands.inputs(plan), *commands.steps(plan)]
    if dry_run:
        click.echo(dry_run_script(plan, steps, file, directory), nl=False)
        return
    try:
        run_steps(steps, {"PROJECT": project, "REGION": region, "SOURCE": directory},
                  lambda line: click.echo(line, err=True))
    except DeployError as exc:
        fail(str(exc))


def derive(file: str, job: Job, options: planning.Options) -> planning.Plan:
    """The plan of a workflow file, or of a state machine file (.json): its remote
    functions are in the Python file beside it, and main.py is generated."""
    if file.endswith(".json"):
        beside = companion(file)
        return planning.derive_machine(job, loader.load_module(beside) if beside else None,
                                       file, options)
    return planning.derive(loader.load_module(file), job, file, options)


def dry_run_script(plan: planning.Plan, steps: list[Step], file: str, directory: str) -> str:
    """The script --dry-run prints: the inputs as assignments, then every step."""
    header = [f"function-flow deploy {file} --project {plan.options.project} --region "
              f"{plan.options.region}: job {plan.job_name}, as a script.",
              f"{directory} (the upload) was built by that command."]
    inputs = [f"{name}={script.render_word((value,))}" for name, value in
              (("PROJECT", plan.options.project), ("REGION", plan.options.region),
               ("SOURCE", directory))]
    return script.render(steps, header, inputs)


def deploy_script(plan: planning.Plan, steps: list[Step], file: str, directory: str,
                  name: str) -> str:
    """A script `name PROJECT REGION` doing what `deploy FILE` does (deploy/deploy.sh):
    run from the repository's root, it builds the upload with --build-only first."""
    usage = f"usage: {name} PROJECT REGION"
    header = [f"Deploys {file} (job {plan.job_name}) to Cloud Functions 2nd gen: the steps of",
              f"`function-flow deploy {file} --project PROJECT --region REGION`.",
              usage[0].upper() + usage[1:] + " (needs gcloud and function-flow).",
              "Generated from the command list `deploy` runs; tests/test_deploy.py checks it",
              "(UPDATE_SNAPSHOTS=1 rewrites it). deploy/README.md explains each step."]
    inputs = [f'PROJECT="${{1:?{usage}}}"', f'REGION="${{2:?{usage}}}"',
              f"SOURCE={script.render_word((directory,))}",
              'cd "$(dirname "$0")/.."',
              f'function-flow deploy {file} --project "$PROJECT" --region "$REGION" '
              "--build-only"]
    return script.render(steps, header, inputs)


def _count(directory: object) -> int:
    return sum(len(files) for _, _, files in os.walk(str(directory)))
