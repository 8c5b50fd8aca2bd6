"""Fails at import time with a NameError."""

from function_flow import tasks

job = tasks.Job(name="broken")

VALUE = foo  # noqa: F821 - deliberately undefined
