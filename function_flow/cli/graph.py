"""`graph`: print the task graph of a workflow file (rendering is in graphs.py)."""

from __future__ import annotations

import click

from function_flow.cli import graphs
from function_flow.cli.common import load_job


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--job", "job_name", metavar="NAME", help="Job to draw when FILE defines several.")
@click.option("--format", "fmt", type=click.Choice(graphs.FORMATS), default="text",
              show_default=True, help="text for a terminal, mermaid or dot for diagrams.")
def graph(file: str, job_name: str | None, fmt: str) -> None:
    """Print the task graph of a workflow FILE."""
    job = load_job(file, job_name)
    definition = getattr(job, "definition", None)  # a state machine: its states
    if definition is not None:
        from function_flow.asl import files

        click.echo(files.render(definition, fmt))
        return
    click.echo(graphs.render(job.dag, fmt))
