"""Shared fixtures and helpers for the tests: one recipe loader, one subprocess runner, one judge-server fixture and
one free-port helper. Test modules import the helpers with ``from conftest import ...``."""

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
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

__all__ = ["REPO", "dead_url", "free_port", "load_module", "load_recipe", "run_command", "run_with_fresh_port"]


def load_module(path: str | Path, module_name: str) -> ModuleType:
    """Import a Python file that is not in a package (a recipe, a docs hook) once, as ``module_name``."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def load_recipe(name: str) -> ModuleType:
    """Import ``recipes/<name>.py`` (the recipes are scripts, not a package) as module ``recipe_<name>``."""
    return load_module(REPO / "recipes" / f"{name}.py", f"recipe_{name}")


def dead_url() -> str:
    """The base URL of a port nothing listened on a moment ago: a judge server that is down. Should another process
    take the port meanwhile, it is still not an OpenAI server for our model, so the tests' outcome is the same."""
    return f"http://127.0.0.1:{free_port()}/v1"


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
    proc = subprocess.run(list(map(str, command)), cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
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
