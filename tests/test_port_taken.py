"""A free port that another process takes before ours binds it costs a retry, not a start.

processes.free_port finds a port nothing listens on, then closes it; the
server binds it a moment later, and on a busy machine another process can
have bound it in between. Here that other process is this test, holding the
first port the picker hands out: the function (functions-framework, its
gunicorn) and the emulator start again on a fresh port and answer there.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from function_flow.local import emulators, framework, processes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def taken() -> Iterator[socket.socket]:
    """A port of 127.0.0.1 bound and listening (it never answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def picker(taken: socket.socket) -> Callable[[], int]:
    """free_port, but the first port it hands out is the taken one."""
    real, handed = processes.free_port, []

    def free_port() -> int:
        handed.append(taken.getsockname()[1] if not handed else real())
        return handed[-1]
    return free_port


def test_a_function_whose_port_was_taken_starts_on_a_fresh_one(taken, monkeypatch,
                                                               tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("def hello(request):\n    return 'hello'\n")
    monkeypatch.setattr(processes, "free_port", picker(taken))
    log_path = str(tmp_path / "hello.log")
    function = framework.start_function(tmp_path / "main.py", "hello", "http", {},
                                        log_path=log_path)
    try:
        assert function.port == taken.getsockname()[1]
        framework.wait_until_answering([function], 60)
        assert function.restarts == 1 and function.port != taken.getsockname()[1]
        with urllib.request.urlopen(function.url, timeout=10) as answer:
            assert answer.read() == b"hello"
        assert "Connection in use" in function.log()  # the first child said why
    finally:
        function.stop()


def test_an_emulator_whose_port_was_taken_starts_on_a_fresh_one(taken,
                                                                monkeypatch) -> None:
    monkeypatch.setattr(emulators, "free_port", picker(taken))
    emulator = emulators.start("storage")  # the quickest to start
    try:
        assert emulator.host != f"127.0.0.1:{taken.getsockname()[1]}"
        with urllib.request.urlopen(f"http://{emulator.host}/", timeout=10) as answer:
            assert answer.status == 200
    finally:
        emulator.stop()
