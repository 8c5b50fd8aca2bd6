"""What a task body prints and logs, captured per attempt.

sys.stdout and sys.stderr belong to the whole process, and several
attempts run at once in one process (the embedded backend's worker
threads, a Cloud Function serving concurrent requests). So output is
routed by a context variable: `capturing()` makes a `Capture` current for
the attempt's thread; `install()` (idempotent) puts a tee in front of
sys.stdout and sys.stderr that writes everything to the real stream as
before (Cloud Logging still sees it) and also to the current capture. A
thread the body starts takes its starter's capture with it (Thread.start
is wrapped once), so do the threads of a pool the body creates. Log records
are captured as they are made (a log record factory), in readable form,
whatever handlers print them; what a logging handler then writes to a
stream is not captured a second time. function_flow's own records below
WARNING are left out.

A capture keeps the last MAX_OUTPUT_CHARS characters and counts what it
dropped: a body that prints megabytes costs a bounded record. Its text is
made valid UTF-8 (lone surrogates, from undecodable bytes, are escaped), so
every store can hold it. A capture stops recording when its attempt ends:
a thread the body left running writes to the real stream only.

Not captured: what is written to the file descriptors directly (a
subprocess's output; pass `capture_output=True` and print it), and log
records the logging configuration drops before they are made (a logger
below its level).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from typing import Any, Callable, Iterator

#: Characters of output kept per attempt: the tail, where the end of the story is.
MAX_OUTPUT_CHARS = 16_000

_LINE = logging.Formatter("%(levelname)s %(name)s: %(message)s")


class Capture:
    """The output of one attempt: the tail of what it wrote, and how much was cut."""

    def __init__(self, labels: dict[str, Any] | None = None,
                 limit: int = MAX_OUTPUT_CHARS) -> None:
        self.labels = labels or {}
        self.limit = limit
        self.open = True
        self.cut = 0
        #: In a body's child process (local/child.py): where writes go instead.
        self.forward: Callable[[str], None] | None = None
        self._parts: list[str] = []
        self._size = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not text or not self.open:
            return
        if self.forward is not None:
            self.forward(text)
            return
        text = safe_text(text)
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            if self._size > 2 * self.limit:
                joined = "".join(self._parts)
                drop = len(joined) - self.limit
                self.cut += drop
                self._parts, self._size = [joined[drop:]], self.limit

    def text(self) -> str:
        """The kept tail, as valid UTF-8 text ("" when the attempt wrote nothing)."""
        with self._lock:
            joined = "".join(self._parts)
            if len(joined) > self.limit:
                drop = len(joined) - self.limit
                self.cut += drop
                joined = joined[drop:]
                self._parts, self._size = [joined], len(joined)
        return joined


def safe_text(text: str) -> str:
    """`text` with what UTF-8 cannot encode (lone surrogates) escaped as \\udcxx."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


_current: contextvars.ContextVar[Capture | None] = contextvars.ContextVar(
    "function_flow_capture", default=None)
_labels: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "function_flow_log_labels", default=None)


def current() -> Capture | None:
    """The capture of the attempt this thread works for, while it is open."""
    capture = _current.get()
    return capture if capture is not None and capture.open else None


def labels() -> dict[str, Any]:
    """Run, task and attempt of what this thread does now, for log lines ({} if none)."""
    capture = current()
    if capture is not None:
        return capture.labels
    return _labels.get() or {}


class capturing:  # noqa: N801 -- used as a function: `with capturing(...) as capture`
    """Capture what this thread (and the threads it starts) print and log.

    A class, not a generator: every attempt enters one, and a body that
    prints nothing should cost next to nothing.
    """

    def __init__(self, run_id: str, task_id: str, attempt: int) -> None:
        self._ids = {"run_id": run_id, "task_id": task_id, "attempt": attempt}

    def __enter__(self) -> Capture:
        install()
        outer = _labels.get()
        self._capture = Capture({**outer, **self._ids} if outer else self._ids)
        self._token = _current.set(self._capture)
        return self._capture

    def __exit__(self, *exc_info: Any) -> None:
        self._capture.open = False
        _current.reset(self._token)


@contextlib.contextmanager
def labelled(**ids: Any) -> Iterator[None]:
    """Label the log lines of this thread (an entry point handling one message)."""
    token = _labels.set({k: v for k, v in ids.items() if v is not None})
    try:
        yield
    finally:
        _labels.reset(token)


def text_of(capture: Capture | str | None) -> tuple[str, int]:
    """(kept text, characters cut) of a capture, or of text already taken from one."""
    if capture is None:
        return "", 0
    if isinstance(capture, str):
        return safe_text(capture), 0
    text = capture.text()
    return text, capture.cut


# --------------------------------------------------------------- the tee


class _Tee:
    """sys.stdout or sys.stderr: the real stream, and the current attempt's capture."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, text: Any) -> int:
        capture = current()
        if capture is not None and isinstance(text, str) and not _from_log_handler():
            capture.write(text)
        try:
            return self._real.write(text)
        except UnicodeEncodeError:  # a lone surrogate: print it escaped, not fail the body
            encoding = getattr(self._real, "encoding", None) or "utf-8"
            return self._real.write(text.encode(encoding, "backslashreplace")
                                    .decode(encoding))

    @property
    def buffer(self) -> Any:
        real = self._real.buffer
        return _BufferTee(real) if current() is not None else real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _BufferTee:
    """sys.stdout.buffer while an attempt is captured: bytes, decoded for the capture."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, data: Any) -> int:
        capture = current()
        if capture is not None and isinstance(data, (bytes, bytearray, memoryview)):
            # Bytes that are not UTF-8 are kept as lone surrogates, stored
            # escaped (\udcff), as os.fsdecode'd text is: nothing is lost.
            capture.write(bytes(data).decode("utf-8", "surrogateescape"))
        return self._real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _from_log_handler() -> bool:
    """Whether the write comes from a logging handler (its record is captured already)."""
    frame = sys._getframe(2)  # 0: here, 1: _Tee.write, 2: its caller
    return isinstance(frame.f_locals.get("self"), logging.Handler)


# ---------------------------------------------------------- installation

_install_lock = threading.Lock()
_patched = False


def install() -> None:
    """Put the tees in front of sys.stdout and sys.stderr (again, if someone replaced
    them), and, once per process, the thread and logging hooks."""
    global _patched
    if _patched and isinstance(sys.stdout, _Tee) and isinstance(sys.stderr, _Tee):
        return  # the usual case, without the lock
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _Tee):
                setattr(sys, name, _Tee(stream))
        if _patched:
            return
        _patched = True
        _wrap_thread_start()
        _wrap_record_factory()


def _wrap_thread_start() -> None:
    start = threading.Thread.start

    def start_in_attempt(self: threading.Thread) -> None:
        capture = current()
        if capture is not None:
            run = self.run

            def run_captured() -> None:
                _current.set(capture)
                run()

            self.run = run_captured  # type: ignore[method-assign]
        start(self)

    threading.Thread.start = start_in_attempt  # type: ignore[method-assign]


def _wrap_record_factory() -> None:
    make = logging.getLogRecordFactory()

    def record_and_capture(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        capture = current()
        if capture is not None and (record.levelno >= logging.WARNING
                                    or not record.name.startswith("function_flow")):
            with contextlib.suppress(Exception):  # a record that cannot format: not ours
                capture.write(_LINE.format(record) + "\n")
        return record

    logging.setLogRecordFactory(record_and_capture)
