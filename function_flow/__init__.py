"""function_flow: serverless DAG workflows on Google Cloud, and on one machine.

    from function_flow import tasks, futures
"""

from function_flow import futures, tasks
from function_flow.core.graph import Backoff
from function_flow.errors import DefinitionError, FunctionFlowError

__version__ = "0.1.0"

__all__ = ["tasks", "futures", "Backoff", "DefinitionError", "FunctionFlowError",
           "__version__"]
