"""A free port that another process takes before ours binds it costs a retry, not a start.

processes.free_port finds a port nothing listens on, then closes it; the
server binds it a moment later, and on a busy machine another process can
have bound it in between. Here that other process is this test, holding the
first port the picker hands out: the function (functions-framework, its
gunicorn) and the emulator start again on a fresh port and answer there,
and `function-flow dev`'s stack tells its functions where the callback
function answers after such a restart.
"""

from __future__ import annotations

import socket
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
from functions_stack import wait_for
from openfaas_gateway import Gateway

from function_flow.core.records import RunStatus
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


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("gcloud_available")
def test_the_dev_stack_tells_its_functions_the_callbacks_url_after_it_moved(
        taken, monkeypatch, firestore_emulator, pubsub_emulator, storage_emulator,
        collection_prefix, tmp_path: Path) -> None:
    """callback starts first and the others are told its URL; when its port was
    taken it answers on a fresh one, and the asynchronous answer must go there."""
    from function_flow.local.stack import LocalStack

    source = Path(__file__).resolve().parent / "workflows_gcp" / "openfaas.py"
    suffix = collection_prefix.strip("_-")[-8:]
    password = uuid.uuid4().hex
    monkeypatch.setattr(processes, "free_port", picker(taken))
    with Gateway(user="admin", password=password) as gateway:
        for name in ("score", "render"):
            gateway.register(name, lambda call: {"double": call.json()["result"]["x"] * 2})
        stack = LocalStack(str(source), collection_prefix=collection_prefix,
                           schedule_topic=f"SCHEDULE-{suffix}", events_topic=f"EVENTS-{suffix}",
                           firestore=firestore_emulator, pubsub=pubsub_emulator,
                           storage=storage_emulator, log_path=str(tmp_path / "dev.log"),
                           extra_env={"FUNCTION_FLOW_OPENFAAS_GATEWAY": gateway.url,
                                      "FUNCTION_FLOW_OPENFAAS_PASSWORD": password})
        with stack:
            callback = stack.functions["callback"]
            assert callback.restarts == 1 and callback.port != taken.getsockname()[1]
            run_id = stack.start_run({"x": 4})
            [answer] = wait_for(lambda: gateway.callbacks, "the gateway's callback")
            assert answer.url.startswith(f"{callback.url}openfaas/"), stack.log_tail(60)
            assert answer.status == 200, answer
            run = wait_for(lambda: (r := stack.store.get_run(run_id)).status.is_final and r,
                           "the run to end")
            assert run.status is RunStatus.SUCCEEDED, stack.log_tail(60)


def always(taken: socket.socket) -> tuple[Callable[[], int], list[int]]:
    """free_port that always hands out the taken port, and the ports it handed."""
    handed: list[int] = []

    def free_port() -> int:
        handed.append(taken.getsockname()[1])
        return handed[-1]
    return free_port, handed


def test_a_function_gives_up_after_3_fresh_ports_were_taken_too(taken, monkeypatch,
                                                                tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("def hello(request):\n    return 'hello'\n")
    free_port, handed = always(taken)
    monkeypatch.setattr(processes, "free_port", free_port)
    function = framework.start_function(tmp_path / "main.py", "hello", "http", {},
                                        log_path=str(tmp_path / "hello.log"))
    try:
        with pytest.raises(framework.DevError, match="the hello function exited"):
            framework.wait_until_answering([function], 90)
        assert function.restarts == 3 and len(handed) == 4
    finally:
        function.stop()


def test_an_emulator_gives_up_after_3_fresh_ports_were_taken_too(taken, monkeypatch) -> None:
    free_port, handed = always(taken)
    monkeypatch.setattr(emulators, "free_port", free_port)
    with pytest.raises(emulators.EmulatorError, match="could not bind"):
        emulators.start("storage")
    assert len(handed) == 4  # the first port, then 3 fresh ones
