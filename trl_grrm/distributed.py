"""The few collectives the reward function needs, as no-ops outside ``torch.distributed``."""

from __future__ import annotations

from typing import Any


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
    ``end_training()``, which destroys the group only where there is one. A rank that exits with gloo's threads
    still attached tears them down during interpreter finalisation, which was seen to abort a finished 2-process run.
    """
    if hasattr(trainer, "end"):
        trainer.end()
    else:
        trainer.accelerator.end_training()
