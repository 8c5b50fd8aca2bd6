"""A Job with no tasks: nothing to run, so it is a definition error."""

from function_flow import tasks

job = tasks.Job(name="empty")
