"""The pipe between a task body's child process and its parent (see child.py).

Frames are a kind byte and a length, then a pickled payload: the child's
answer (its result or its exception), or a store read it asks the parent
to make, and the parent's reply. Only reads cross: the child never touches
SQLite itself, and a write in the child is refused with advice.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import signal
import struct
import threading
import traceback
from typing import Any

from function_flow.core.values import too_deep

#: Every frame on a pipe: its kind, then the length of its pickled payload.
HEADER = struct.Struct("!cQ")
#: OUTPUT: what the body printed or logged (UTF-8), for its attempt's capture.
CALL, ANSWER, REPLY, OUTPUT = b"C", b"A", b"R", b"O"
#: Store methods a body in a child may call: they only read, and their
#: arguments and results pickle. Each is answered by the parent.
STORE_READS = ("get_run", "get_tasks", "join_progress", "find_tasks", "find_free_slots",
               "list_runs", "get_trigger", "find_watches", "runs_started_before",
               "get_context", "list_context")
#: The run context's writes (job.context): plain arguments, so the parent
#: makes them too. Every store method the parent answers for a child.
STORE_FORWARDED = STORE_READS + ("set_context", "delete_context")
#: Store methods that write: refused in a child (a transaction function is
#: code, which cannot be sent to the parent).
STORE_WRITES = ("transact", "create_run", "delete_run")


class Channel:  # pragma: no cover -- runs in the child
    """The child's end of the store calls: one call at a time, answered by the parent."""

    def __init__(self, up: int, down: int) -> None:
        self.up, self.down = up, down
        self.lock = threading.Lock()  # a body's own threads may read too

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        request = pickle.dumps((name, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            write_all(self.up, frame(CALL, request))
            kind, payload = read_frame(self.down)
        ok, value = pickle.loads(payload)
        if ok:
            return value
        raise value

    def output(self, text: str) -> None:
        """Send what the body wrote to the parent's capture of the attempt
        (core/output.py); as it is written, so a body killed at its timeout
        leaves what it printed until then."""
        data = frame(OUTPUT, text.encode("utf-8", "backslashreplace"))
        with self.lock, contextlib.suppress(OSError):  # the parent is gone: nothing to tell
            write_all(self.up, data)


def read_through_parent(store: Any, channel: Channel) -> None:  # pragma: no cover
    """In the child: the store's reads (and context writes) go to the parent, its
    other writes are refused."""
    for name in STORE_FORWARDED:
        setattr(store, name, functools.partial(channel.call, name))
    for name in STORE_WRITES:
        setattr(store, name, functools.partial(refuse_write, name))
    setattr(store, "close", lambda: None)


def refuse_other_writes() -> None:  # pragma: no cover -- runs in the child
    """In the child: every SQLite store refuses writes, not only the job's.

    `other_job.start()` would write through another job's store: one the
    parent opened, whose writer lock the fork may have copied held (the
    child hung on it), or one opened here, whose run nobody would execute.
    """
    from function_flow.store.sqlite import SqliteStore

    for name in STORE_WRITES:
        setattr(SqliteStore, name, functools.partial(refuse_write, name))


def refuse_write(name: str, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
    call = "job.start()" if name == "create_run" else f"store.{name}()"
    raise RuntimeError(
        f"{call} inside a task body with a timeout: such a body runs in a child "
        "process, which can read runs (job.get_task_result, job.get_arguments) but not "
        "write them; start other runs from a task without a timeout")


def answer_ok(value: Any) -> bytes:  # pragma: no cover -- runs in the child
    try:
        return pickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    except RecursionError:
        return pickle.dumps(("too_deep",))
    except BaseException as exc:  # noqa: B036 -- pickle raises many kinds
        return pickle.dumps(("unpicklable", f"{type(value).__name__} ({exc})"))


def answer_error(exc: BaseException) -> bytes:  # pragma: no cover -- runs in the child
    text = traceback.format_exc()
    try:
        carried = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(carried)  # some exceptions pickle but cannot be rebuilt
    except BaseException:  # noqa: B036 -- fall back to the text alone
        carried = None
    return pickle.dumps(("error", carried, text))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_frame(fd: int) -> tuple[bytes, bytes]:  # pragma: no cover -- runs in the child
    kind, size = HEADER.unpack(read_exactly(fd, HEADER.size))
    return kind, read_exactly(fd, size)


def read_exactly(fd: int, size: int) -> bytes:  # pragma: no cover -- runs in the child
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the parent closed the pipe")
        data += chunk
    return bytes(data)


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class RemoteTraceback(Exception):
    """The traceback of an exception raised by a body in a child process.

    Attached as `__cause__` of the exception raised in the parent, so the
    attempt's recorded error shows where in the body it was raised.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class BodyError(Exception):
    """A body's exception that could not be carried back from its child process.

    Its message is the last line of the body's traceback ("ModuleError: ...").
    """


class BodyDiedError(Exception):
    """The child process running a body ended without answering."""


class UnpicklableResultError(TypeError):
    """A body running in a child process returned a value that pickle cannot carry."""


def outcome(answer: bytes | None, status: int, what: str) -> Any:
    """Return or raise what the body did, from the child's answer."""
    if answer is None:
        raise BodyDiedError(f"{what} ended without an answer: its process {ending(status)}")
    try:
        kind, *rest = pickle.loads(answer)
    except Exception as exc:
        raise BodyError(f"{what}: its answer could not be read back ({exc!r}); "
                        f"its process {ending(status)}") from exc
    if kind == "ok":
        return rest[0]
    if kind == "too_deep":  # deeper than a stored value may be anyway
        raise ValueError(too_deep(f"the result of {what}"))
    if kind == "unpicklable":
        raise UnpicklableResultError(
            f"{what} returned a {rest[0]}, which cannot be sent back from the child "
            "process that runs a task with a timeout; return JSON-compatible data "
            "(dict, list, str, number, bool, None)")
    carried, text = rest
    error: BaseException | None = None
    if carried is not None:
        with contextlib.suppress(Exception):
            error = pickle.loads(carried)
    if not isinstance(error, BaseException):
        lines = text.strip().splitlines()
        error = BodyError(lines[-1] if lines else "the body failed")
    raise error from RemoteTraceback(text)


def ending(status: int) -> str:
    """How a child ended, in words: "exited with code 3", "was killed by SIGKILL"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        hint = " (out of memory?)" if number == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"
