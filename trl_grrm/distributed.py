"""The few collectives the reward function needs, as no-ops outside ``torch.distributed``; and how a training script
leaves its process group and exits."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any, NoReturn

# Set by end_training when the process left a gloo (CPU) process group: exit_process then skips the interpreter's
# module teardown, during which gloo's worker threads were seen to abort the process (see exit_process).
_left_gloo_group = False


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def process_index() -> int:
    """This process's rank (0 when not distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if _initialized() else 0


def num_processes() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if _initialized() else 1


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank. Every rank must call it, the same number of times.

    Example:
        >>> all_gather_objects({"rank": 0})
        [{'rank': 0}]
    """
    if not _initialized() or num_processes() == 1:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def end_training(trainer: Any) -> None:
    """Finish a script's trainer so every process leaves the process group before the interpreter exits.

    transformers >= 5.18 has ``Trainer.end()`` (trackers, then the group); older ones get accelerate's
    ``end_training()``, which destroys the group only where there is one. Scripts then end with :func:`exit_process`.
    """
    global _left_gloo_group
    if _initialized():
        import torch.distributed as dist

        _left_gloo_group = _left_gloo_group or dist.get_backend() == "gloo"
    if hasattr(trainer, "end"):
        trainer.end()
    else:
        trainer.accelerator.end_training()


def exit_process(code: int | None = 0) -> NoReturn:
    """End a script's process with exit status ``code``, as ``sys.exit(code)`` does.

    Except after :func:`end_training` left a gloo (CPU) process group: then the process waits for its non-daemon
    threads, runs every ``atexit`` handler (log handlers flushed, vLLM engines shut down ...), flushes stdout and
    stderr, and ends with ``os._exit(code)``, skipping only the interpreter's final teardown of modules. Leaving the
    group does not stop gloo's worker threads while DeepSpeed still holds the group; one that frees a finished
    collective's tensors after that teardown began needs the GIL, is ended by Python, and takes the process down
    (``terminate called without an active exception``, SIGABRT) after a complete, saved run.

    Example:
        >>> exit_process(0)  # not distributed: the same as sys.exit(0)
        Traceback (most recent call last):
        SystemExit: 0
    """
    if not _left_gloo_group:
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the handlers a normal exit runs; os._exit runs none
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
