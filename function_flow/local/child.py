"""Run a task body in a forked child process, and kill it at its timeout.

The embedded backend's executor (`ports.Executor`). A body whose task has a
timeout runs in a child forked from the worker thread; at the timeout the
child's whole process group is killed with SIGKILL and reaped before the
attempt is failed, so a retry never starts while an earlier attempt of the
same task is still running. Bodies without a timeout run in the worker
thread itself, as before, and pay nothing.

The child is a copy of this process, so the body sees the workflow's
globals and imports exactly as a thread would, with no pickling of the
body or its arguments. What comes back crosses a pipe: the pickled return
value, or the exception with its formatted traceback. Changes the body
makes to this process's memory (a module global, a cache) stay in the child.

Forking a process that has threads copies only the forking thread; all
memory is copied as it was, locks included. So the child uses nothing that
the other threads may have been using at that instant:

- the store is read through the parent: in the child, the store's read
  methods (what `job.get_task_result` and `job.get_arguments` call) send
  the call over a pipe, and the waiting worker thread answers it with its
  own connection. The child never touches SQLite itself: the SQLite
  library's mutexes and its per-file lock state are process-wide, and a
  child forked while another worker thread was inside SQLite blocked
  forever on its first query, about one fork in five under load. The
  run context's writes (`job.context.set`) go the same way; other writes
  (`transact`, `create_run`, `delete_run`) raise in the child;
- nor does the child free the SQLite objects it inherited, which takes the
  same mutexes (see `_fork`: the collector is paused across the fork and
  what the child inherited is frozen, never collected there);
- the bus and the engine are never used in the child: the parent records
  the outcome;
- logging re-initialises its locks in the child (at-fork handlers);
- a lock that another thread held at the instant of the fork (a buffered
  stream being written, a library's own lock) stays held in the child
  forever; a child that blocks on one never answers and is killed at the
  timeout like any body that hangs, and the attempt is retried.

The child ends with os._exit: no atexit handler runs twice, and buffers of
this process copied into the child are not written a second time (they are
flushed before the fork; the child flushes only what its body wrote).
Its stdout and stderr are this process's file descriptors; what the body
prints and logs also goes up the pipe as it is written, into its attempt's
capture in the parent (core/output.py), so a body killed at its timeout
leaves what it printed until then.

On Linux the child also dies with SIGKILL when the thread that forked it
ends (the whole program killed, or exiting), so no body outlives its
program and runs alongside the attempt a later `function-flow resume`
starts. Processes the body started in its group are killed with it at
the timeout, or when it ends, or, by a watcher process in the group
(`child_death.watch_group`), when the program is killed; those it moved to a session
of their own (`start_new_session=True`) are its own business.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import signal
import sqlite3
import sys
import threading
import time
import traceback
from typing import Any, Callable

from function_flow.core import output
from function_flow.local import child_death
from function_flow.local.child_pipe import (ANSWER, CALL, HEADER, OUTPUT, REPLY,
                                            STORE_FORWARDED, STORE_READS, STORE_WRITES,
                                            BodyDiedError, BodyError, Channel,
                                            RemoteTraceback, UnpicklableResultError,
                                            answer_error, answer_ok, frame, outcome,
                                            read_through_parent, refuse_other_writes,
                                            write_all)

#: Exit code of a child whose answer could not be written.
_NO_ANSWER = 70
class ChildProcessExecutor:
    """Runs a body with a timeout in a forked child it kills at that timeout.

    `store`: the store whose reads a body in the child makes through this
    process (see the module docstring); None if bodies never read one.
    Thread-safe: each worker thread forks and waits for its own child.
    """

    stops_bodies = True

    def __init__(self, store: Any = None) -> None:
        self.store = store

    def run(self, body: Callable[[], Any], timeout: float | None, what: str) -> Any:
        if not timeout:
            return body()
        deadline = time.monotonic() + timeout
        for stream in (sys.stdout, sys.stderr):
            # What this process buffered must not be written by the child too.
            with contextlib.suppress(Exception):
                stream.flush()
        up_read, up_write = os.pipe()        # child -> parent: calls, the answer
        down_read, down_write = os.pipe()    # parent -> child: replies to calls
        parent = os.getpid()
        try:
            pid = _fork(self.store)
        except BaseException:
            for fd in (up_read, up_write, down_read, down_write):
                os.close(fd)
            raise
        if pid == 0:  # pragma: no cover -- the child; coverage cannot follow it
            os.close(up_read)
            os.close(down_write)
            _child(body, up_write, down_read, parent, self.store)
        os.close(up_write)
        os.close(down_read)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # the child does it too: whichever runs first
        try:
            answer, status = _Parent(pid, up_read, down_write, self.store,
                                     output.current()).wait(deadline)
        except BaseException:  # noqa: B036 -- a Ctrl-C in the main thread: no orphan
            _kill_group(pid)
            _reap(pid)
            raise
        finally:
            os.close(up_read)
            os.close(down_write)
        if status is None:
            raise TimeoutError(f"{what} was stopped at its timeout of {timeout:g} s")
        return outcome(answer, status, what)


# -------------------------------------------------------------------- fork

#: One fork at a time: the garbage collector is paused around each.
_FORK_LOCK = threading.Lock()
#: In a child: SQLite objects copied from the parent, kept from being freed.
_inherited: list[Any] = []


def _fork(store: Any) -> int:
    """os.fork, so that the child frees no SQLite object of the parent.

    Freeing one (closing a connection, finalizing a statement) takes
    SQLite's process-wide mutexes, which another thread may have held at
    the instant of the fork: the child would block forever. It happens in
    two ways. The garbage collector frees connections the parent had not
    collected yet (seen: a test's child hung in sqlite3_free); so the
    collector is paused across the fork and the child freezes what it
    inherited (gc.freeze: never collected there) before it runs again,
    for what the body allocates. And CPython frees the other threads'
    state as the child starts, and the store drops its connections there,
    closing the thread-local connections of `store`; so these are
    referenced across the fork (found from the store's own objects, not by
    a scan of the heap, which would keep other threads' temporaries alive:
    a cursor that outlives its statement makes that thread's COMMIT fail).
    """
    keep = _connections_of(store)
    with _FORK_LOCK:
        collecting = gc.isenabled()
        gc.disable()
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid == 0:  # pragma: no cover -- the child
                _inherited[:] = keep
                gc.freeze()
            if collecting:
                gc.enable()
        return pid


def _connections_of(root: Any, depth: int = 6, most: int = 10_000) -> list[Any]:
    """The SQLite connections `root` holds (its thread-locals included), by referents."""
    if root is None:
        return []
    found: list[Any] = []
    seen = {id(root)}
    level = [root]
    for _ in range(depth):
        following = []
        for obj in gc.get_referents(*level):
            if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type)):
                continue
            seen.add(id(obj))
            if isinstance(obj, sqlite3.Connection):
                found.append(obj)
            elif len(seen) < most:
                following.append(obj)
        level = following
        if not level:
            break
    return found


# ------------------------------------------------------------------- child


def _child(body: Callable[[], Any], up: int, down: int, parent: int,
           store: Any) -> None:  # pragma: no cover -- runs in the child
    """Run the body, write the answer, _exit. Never returns into the worker's code."""
    code = _NO_ANSWER
    try:
        os.setpgid(0, 0)
        if not child_death.die_with_parent(parent):
            os._exit(_NO_ANSWER)  # the parent died before that took effect
        child_death.watch_group(os.getpid(), (up, down))
        channel = Channel(up, down)
        refuse_other_writes()
        if store is not None:
            read_through_parent(store, channel)
        capture = output.current()  # the attempt's, copied by the fork: send it on
        if capture is not None:
            capture.forward = channel.output
        try:
            answer = answer_ok(body())
        except BaseException as exc:  # noqa: B036 -- every failure of the body is its answer
            answer = answer_error(exc)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        write_all(up, frame(ANSWER, answer))
        code = 0
    except BaseException:  # noqa: B036 -- nothing may escape into the worker's loop
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        os._exit(code)


# ------------------------------------------------------------------ parent


class _Parent:
    """The worker thread's side: serve the child's store calls, read its answer, reap it.

    Other children forked at the same moment may hold copies of our pipes'
    ends, so the end of a frame is known from its length and the end of the
    child from its exit, never from a pipe's end of file.
    """

    def __init__(self, pid: int, up: int, down: int, store: Any,
                 capture: output.Capture | None = None) -> None:
        self.pid, self.up, self.down, self.store = pid, up, down, store
        self.capture = capture
        self.received = bytearray()
        self.answer: bytes | None = None
        os.set_blocking(up, False)
        os.set_blocking(down, False)

    def wait(self, deadline: float) -> tuple[bytes | None, int | None]:
        """(answer or None, wait status), or (None, None) when the deadline came first.

        In that case the child's group has been killed and the child reaped.
        """
        exited = _exit_watch(self.pid)
        try:
            while True:
                if self.answer is None:
                    self._receive(deadline)
                if _has_exited(self.pid):
                    if self.answer is None:  # it may have written all just before exiting
                        self._receive(deadline)
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    _kill_group(self.pid)
                    status = _reap(self.pid)
                    # An answer that arrived in time counts, even if its
                    # process had not quite exited yet.
                    return (self.answer, status) if self.answer is not None else (None, None)
                watched = [exited] if exited is not None else []
                if self.answer is None:
                    watched.append(self.up)
                # Without a pidfd, look at the child again every 50 ms.
                pause = remaining if exited is not None else min(remaining, 0.05)
                _poll(watched, select.POLLIN, pause)
        finally:
            if exited is not None:
                os.close(exited)
        # It exited (a zombie until reaped): nothing can take its group id yet.
        _kill_group(self.pid)  # processes it left behind in its group
        return self.answer, _reap(self.pid)

    def _receive(self, deadline: float) -> None:
        """Read what the pipe holds now; serve whole calls; keep the answer."""
        while True:
            try:
                chunk = os.read(self.up, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.received += chunk
        while len(self.received) >= HEADER.size:
            kind, size = HEADER.unpack_from(self.received)
            end = HEADER.size + size
            if len(self.received) < end:
                return
            payload = bytes(self.received[HEADER.size:end])
            del self.received[:end]
            if kind == ANSWER:
                self.answer = payload
                return
            if kind == CALL:
                self._serve(payload, deadline)
            elif kind == OUTPUT and self.capture is not None:
                self.capture.write(payload.decode("utf-8", "replace"))

    def _serve(self, request: bytes, deadline: float) -> None:
        try:
            name, args, kwargs = pickle.loads(request)
            if name not in STORE_FORWARDED or self.store is None:
                raise RuntimeError(f"store.{name}() cannot be called from a child process")
            reply = pickle.dumps((True, getattr(self.store, name)(*args, **kwargs)),
                                 protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # the store's error is the body's to see
            try:
                reply = pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                reply = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        self._send(frame(REPLY, reply), deadline)

    def _send(self, data: bytes, deadline: float) -> None:
        """Write a reply, unless the child is gone or the deadline comes first."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.down, view):]
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or _has_exited(self.pid):
                return
            _poll([self.down], select.POLLOUT, min(remaining, 0.05))


def _poll(fds: list[int], events: int, timeout: float) -> None:
    """Wait until one of `fds` is ready or `timeout` seconds pass (poll: any fd number)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, events)
    with contextlib.suppress(InterruptedError):
        poller.poll(max(0, int(timeout * 1000) + 1))


def _exit_watch(pid: int) -> int | None:
    """A file descriptor readable once `pid` has exited (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its group id stays reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by someone else (a waitpid(-1) elsewhere)
        return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # setpgid lost a race: at least the child itself
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _reap(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0


__all__ = ["ChildProcessExecutor", "RemoteTraceback", "BodyError", "BodyDiedError",
           "UnpicklableResultError", "STORE_READS", "STORE_WRITES"]
