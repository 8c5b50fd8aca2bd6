"""function_flow: serverless DAG workflows on Google Cloud, and on one machine.

    from function_flow import tasks, futures
"""

from function_flow import futures, tasks
from function_flow.core.graph import Backoff
from function_flow.errors import DefinitionError, FunctionFlowError


def _version() -> str:
    """The installed distribution's version: pyproject.toml is its one source.

    A deployment's source directory carries the package without installing
    it; deploy/source.py writes the distribution's metadata beside it, so the
    answer is the same there.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("function-flow-orchestrator")
    except PackageNotFoundError:  # a bare checkout on PYTHONPATH, never installed
        return "0+unknown"


__version__ = _version()

__all__ = ["tasks", "futures", "Backoff", "DefinitionError", "FunctionFlowError",
           "__version__"]
