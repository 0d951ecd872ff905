"""The one answer to the free-port race: a start that failed because the port was taken is retried on a fresh port,
a bounded number of times, for Python callers, subprocess launchers (tests/conftest.py) and `vllm serve`."""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from conftest import run_with_fresh_port
from trl_grrm.testing import ports, vllm_server
from trl_grrm.testing.ports import port_clash_in, retry_with_fresh_port

# A child that binds the port it is given, as `vllm serve` or torchrun's store do, and fails like them when it is taken.
BIND = "import socket, sys; socket.socket().bind(('127.0.0.1', int(sys.argv[1]))); print('bound', sys.argv[1])"


@pytest.fixture
def taken_port():
    """A port some other process holds (listening) for the whole test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def taken_first(monkeypatch, taken_port):
    """Make the next free-port pick return the taken port once (the race, made certain), then free ones."""
    real, picks = ports.free_port, []

    def pick(host: str = "127.0.0.1") -> int:
        picks.append(taken_port if not picks else real(host))
        return picks[-1]

    monkeypatch.setattr(ports, "free_port", pick)
    monkeypatch.setattr(vllm_server, "free_port", pick)
    return picks


def bind(port: int) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    return port


def test_a_taken_port_is_retried_on_a_fresh_one(taken_first, taken_port):
    port = retry_with_fresh_port(bind)
    assert len(taken_first) == 2 and port == taken_first[1] != taken_port


def test_retries_are_bounded_and_the_last_error_is_raised(monkeypatch, taken_port):
    calls = []
    monkeypatch.setattr(ports, "free_port", lambda host="127.0.0.1": calls.append(host) or taken_port)
    with pytest.raises(OSError) as caught:
        retry_with_fresh_port(bind, attempts=3)
    assert caught.value.errno == errno.EADDRINUSE and len(calls) == 3


def test_other_failures_are_not_retried():
    calls = []

    def refused(port: int) -> None:
        calls.append(port)
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    with pytest.raises(ConnectionRefusedError):
        retry_with_fresh_port(refused)
    assert len(calls) == 1


def test_clash_messages_of_the_launchers_are_recognised():
    torchrun = ("torch.distributed.DistNetworkError: The server socket has failed to listen on any local network "
                "address. port: 29500, useIPv6: 0, code: -98, name: EADDRINUSE, message: address already in use")
    uvicorn = "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address in use"
    assert port_clash_in(torchrun) and port_clash_in(uvicorn)
    assert port_clash_in("OSError: [Errno 98] Address already in use")
    assert not port_clash_in("RuntimeError: CUDA out of memory") and not port_clash_in(None)


def test_a_subprocess_that_lost_the_race_is_started_again(taken_first, taken_port):
    proc = run_with_fresh_port(lambda port: [sys.executable, "-c", BIND, str(port)], timeout=60)
    assert proc.stdout.strip() == f"bound {taken_first[1]}" and taken_first[1] != taken_port


def test_a_subprocess_failing_for_another_reason_is_not_retried(taken_first):
    proc = run_with_fresh_port(lambda port: [sys.executable, "-c", "raise SystemExit('no model')"], timeout=60,
                               check=False)  # fmt: skip
    assert proc.returncode == 1 and "no model" in proc.stderr and len(taken_first) == 1


def test_server_start_moves_to_a_fresh_port_when_its_port_was_taken(monkeypatch, taken_first, taken_port, tmp_path):
    # Our own OpenAI-compatible judge server stands in for `vllm serve`: it too is told its port on the command
    # line and exits with "Address already in use" when it cannot bind it.
    def judge_server_command(model_dir, served_model_name, port, host="127.0.0.1", **kwargs):
        return [sys.executable, "-m", "trl_grrm.testing.judge_server", "--host", host, "--port", str(port),
                "--model-name", served_model_name]  # fmt: skip

    monkeypatch.setattr(vllm_server, "vllm_server_command", judge_server_command)
    log_path = tmp_path / "server.log"
    with vllm_server.start_vllm_server("unused", served_model_name="judge", timeout_s=60, log_path=log_path) as url:
        assert url == f"http://127.0.0.1:{taken_first[1]}/v1" and taken_first[1] != taken_port
    log = log_path.read_text()
    assert port_clash_in(log) and f"judge server on {url}" in log  # the first start clashed, the second served


def test_an_explicit_port_is_not_replaced(monkeypatch, taken_port, tmp_path):
    def judge_server_command(model_dir, served_model_name, port, host="127.0.0.1", **kwargs):
        return [sys.executable, "-m", "trl_grrm.testing.judge_server", "--host", host, "--port", str(port)]

    monkeypatch.setattr(vllm_server, "vllm_server_command", judge_server_command)
    with pytest.raises(vllm_server.VLLMServerError, match="exited with code 1[\\s\\S]*[Aa]ddress already in use"):
        with vllm_server.start_vllm_server("unused", port=taken_port, timeout_s=60, log_path=tmp_path / "log"):
            pass  # pragma: no cover - never reached
