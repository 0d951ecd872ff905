"""Shared fixtures and helpers for the tests: one recipe loader, one subprocess runner, one judge-server fixture and
one free-port helper. Test modules import the helpers with ``from conftest import ...``."""

import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType

# No model hub here or in CI: everything loads from folders the tests build.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Subprocesses (accelerate, torchrun, DeepSpeed's ninja build of its CPU comm op) must find the tools installed
# beside this interpreter even when the virtual environment is not activated, as in `.venv/bin/python -m pytest`.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

import pytest  # noqa: E402

from trl_grrm.testing import build_tiny_chat_model  # noqa: E402
from trl_grrm.testing.judge_server import JudgeServer  # noqa: E402
from trl_grrm.testing.ports import free_port, port_clash_in, retry_with_fresh_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "dead_url", "free_port", "load_module", "load_recipe", "process_name", "run_command",
           "run_with_fresh_port", "sigterm_once_running"]


def load_module(path: str | Path, module_name: str) -> ModuleType:
    """Import a Python file that is not in a package (a recipe, a docs hook) once, as ``module_name``."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


#: recipes/<file>.py -> the package script it launches (trl_grrm.scripts.<module>).
RECIPE_MODULES = {"grpo_mt": "grpo_mt", "sft_mt": "sft_mt", "sft_grrm": "sft_judge", "rlvr_grrm": "rlvr_judge",
                  "grpo_pairwise": "grpo_pairwise"}


def load_recipe(name: str) -> ModuleType:
    """The package script behind ``recipes/<name>.py`` (``trl_grrm.scripts.<module>``; the recipe files only call
    its ``run``). ``name`` may be the recipe file's name or the script module's."""
    return importlib.import_module(f"trl_grrm.scripts.{RECIPE_MODULES.get(name, name)}")


def dead_url() -> str:
    """The base URL of a port nothing listened on a moment ago: a judge server that is down. Should another process
    take the port meanwhile, it is still not an OpenAI server for our model, so the tests' outcome is the same."""
    return f"http://127.0.0.1:{free_port()}/v1"


def _stop_tree(child: subprocess.Popen) -> None:
    """SIGTERM first: torchrun/accelerate start each rank in a session of its own and stop them only when they are
    asked to stop themselves; SIGKILL for whatever of the launcher's group is left after 30 s."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def process_name(process) -> str:
    """A psutil process's name, or "" once it has ended."""
    import psutil

    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


@contextlib.contextmanager
def sigterm_once_running(command: Sequence[str], log: Path, running: str, after_s: float) -> Iterator[list]:
    """Start ``command`` in a session of its own (output to ``log``), and ``after_s`` after a descendant named
    ``running`` appears (600 s at most) send it alone SIGTERM, as ``kill``, ``timeout`` or a job scheduler do; assert
    that it exits with 128 + SIGTERM. Yields its descendants as they were at the SIGTERM; whatever is left of its
    process group, orphans included, is killed when the block ends."""
    import psutil

    with open(log, "w") as out:
        command_process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def descendants() -> list:
        try:
            return psutil.Process(command_process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    try:
        deadline = time.time() + 600
        while running not in {process_name(process) for process in descendants()}:
            assert command_process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(after_s)
        at_sigterm = descendants()
        command_process.send_signal(signal.SIGTERM)
        assert command_process.wait(timeout=120) == 128 + signal.SIGTERM
        yield at_sigterm
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command_process.pid, signal.SIGKILL)


def run_command(
    command: Sequence[str],
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a command as a user would (the repo on ``PYTHONPATH``, one OpenMP thread per process, offline hub), and
    with ``check`` assert that it exited 0, showing the end of its output if not. ``env`` adds to ``os.environ``."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}  # fmt: skip
    # Own session: on a timeout the launcher's whole tree goes (subprocess.run would kill only the launcher, leaving
    # torchrun/accelerate ranks and vLLM engine processes running to starve and fail the tests after this one).
    with subprocess.Popen(list(map(str, command)), cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as child:  # fmt: skip
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_tree(child)
            stdout, stderr = child.communicate()
            raise AssertionError(f"timed out after {timeout} s: {' '.join(map(str, command))}\n"
                                 + stdout[-3000:] + stderr[-6000:]) from None  # fmt: skip
        except BaseException:  # Ctrl-C in pytest: stop the tree too, instead of waiting for it
            _stop_tree(child)
            raise
    proc = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def run_with_fresh_port(
    command: Callable[[int], Sequence[str]], port_env: str | None = None, **run_kwargs
) -> subprocess.CompletedProcess:
    """:func:`run_command` for launchers that must be given a port (torchrun's master port, accelerate's main process
    port, or ``MASTER_PORT`` via ``port_env``): a run that failed because the port was taken meanwhile is started
    again on a fresh port (3 starts at most)."""
    check = run_kwargs.pop("check", True)
    env = run_kwargs.pop("env", None) or {}

    def start(port: int) -> subprocess.CompletedProcess:
        port_vars = {port_env: str(port)} if port_env else {}
        return run_command(command(port), env={**env, **port_vars}, check=False, **run_kwargs)

    proc = retry_with_fresh_port(start, clashed=lambda p: p.returncode != 0 and port_clash_in(p.stdout + p.stderr))
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random Qwen2 chat model + tokenizer folder, usable as policy or judge by TRL, transformers and vLLM."""
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture
def judge_server():
    """A local GRRM judge server on a port the OS picked; it stops by itself after 15 minutes at the latest."""
    with JudgeServer(port=0, stop_after_s=900) as running:
        yield running
