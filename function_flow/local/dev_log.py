"""The one log file of a `function-flow dev` stack, each line stamped and tagged.

The stack's own steps (what started where, with which PID, what stopped)
and the output of every function go to one file, in the order they
happened, so a failure can be read from it alone; that is also why the
file stays after the stack stops. Function output arrives from the pump
threads of several processes at once, hence the lock around the handle.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import threading
from typing import IO, Callable


class DevLog:
    """Where the stack and its functions write; `path` is None until `open()`
    when the caller named none (a temporary file is made then).

    on_event: also called with each line the stack itself logs as a step
    (`event`), e.g. to show startup progress on the terminal.
    """

    def __init__(self, path: str | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.on_event = on_event or (lambda line: None)
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        if self.path is None:
            handle, self.path = tempfile.mkstemp(prefix="function-flow-dev-", suffix=".log")
            os.close(handle)
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8", buffering=1)

    def write(self, who: str, line: str) -> None:
        """One line from `who` (a function's name, or "dev"); dropped once closed."""
        stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        with self._lock:
            if self._handle is not None:
                self._handle.write(f"{stamp} {who:<23} {line.rstrip()}\n")

    def event(self, line: str) -> None:
        """A step of the stack itself: logged, and told to `on_event`."""
        self.write("dev", line)
        self.on_event(line)

    def tail(self, lines: int = 30) -> str:
        """The last lines written, also after `close()`; "" when there is no file."""
        if not self.path:
            return ""
        with self._lock:
            if self._handle is not None:
                self._handle.flush()
        try:
            with open(self.path, encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
