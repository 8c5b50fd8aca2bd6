"""The errors of a state machine: Step Functions' names, and definition errors.

A state's failure is an `AslError` with an ASL error name (what Retry and
Catch match) and a cause. Runtime failures the language itself detects
(a path that selects nothing, a bad timestamp) are `States.Runtime`, as on
AWS, with a cause that names the state and says what to fix.
"""

from __future__ import annotations

from function_flow.errors import DefinitionError

ALL = "States.ALL"
RUNTIME = "States.Runtime"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
BRANCH_FAILED = "States.BranchFailed"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
ITEM_READER_FAILED = "States.ItemReaderFailed"
EXCEEDED_TOLERATED_FAILURE = "States.ExceedToleratedFailureThreshold"
PERMISSIONS = "States.Permissions"
DATA_LIMIT = "States.DataLimitExceeded"

#: Errors States.ALL does not match (AWS: "a retrier or catcher on States.ALL
#: won't catch States.Runtime errors").
NOT_MATCHED_BY_ALL = frozenset({RUNTIME, DATA_LIMIT})


class AslError(Exception):
    """A state failed with an ASL `error` name and a `cause`.

    `catchable` is False for the failures AWS never hands to a Catch (a
    States.Runtime raised by OutputPath, case 145 of the corpus).
    """

    def __init__(self, error: str, cause: str | None = None, *,
                 catchable: bool = True) -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause
        self.catchable = catchable


class PathError(Exception):
    """A JSONPath selected nothing, or is not one this language accepts."""


class AslDefinitionError(DefinitionError):
    """A state machine definition that cannot run; names the state."""

    def __init__(self, message: str, state: str | None = None) -> None:
        super().__init__(message, state)
        self.state = state


def runtime(state: str, what: str, *, catchable: bool = True) -> AslError:
    """A States.Runtime failure of `state`, with AWS's wording around `what`."""
    return AslError(RUNTIME, f"An error occurred while executing the state {state!r}. {what}",
                    catchable=catchable)
