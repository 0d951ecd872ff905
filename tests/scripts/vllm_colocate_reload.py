"""Reload new weights into an in-process (colocate) vLLM engine as TRL does; check that vLLM then computes with them.

Builds ``vllm.LLM`` with ``distributed_executor_backend="external_launcher"`` as TRL's colocate mode does, reads the
prompt log-probs of a fixed token sequence, pushes perturbed weights one tensor at a time with
``model.load_weights([(name, tensor)])`` (TRL's ``sync_weights``), and reads them again. transformers computes the
same log-probs for the original and the perturbed model independently. Launched by tests/test_vllm_cpu.py.

Example:
    python tests/scripts/vllm_colocate_reload.py --model /tmp/tiny --result /tmp/r.json [--no_hook]
"""

from __future__ import annotations

import argparse
import json
import os
import traceback
from types import SimpleNamespace


def hf_prompt_logprobs(model, ids: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    return [float(logprobs[i, ids[i + 1]]) for i in range(len(ids) - 1)]


def vllm_prompt_logprobs(llm, ids: list[int]) -> list[float]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    out = llm.generate(TokensPrompt(prompt_token_ids=ids), SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
    return [entry[tok].logprob for entry, tok in zip(out.prompt_logprobs[1:], ids[1:])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--no_hook", action="store_true", help="build the engine without trl_grrm's CPU hook")
    cli = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from trl_grrm.testing.ports import free_port

    # What TRL's colocate mode sets before building the engine. A launcher that retries on a port clash passes
    # MASTER_PORT (tests/conftest.py run_with_fresh_port); otherwise take one that is free now.
    port = os.environ.get("MASTER_PORT") or str(free_port())
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    if not cli.no_hook:
        from trl_grrm.vllm_cpu import prepare_vllm_colocate

        prepare_vllm_colocate(SimpleNamespace(use_vllm=True, vllm_mode="colocate"))
    from vllm import LLM

    ids = [5, 17, 42, 99, 7, 300, 11, 64, 250, 3, 128, 77]
    policy = AutoModelForCausalLM.from_pretrained(cli.model, dtype=torch.float32)
    hf_before = hf_prompt_logprobs(policy, ids)
    # A large, deterministic change of every weight, so that stale weights anywhere (a linear layer or the tied
    # lm_head) show in the log-probs.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    hf_after = hf_prompt_logprobs(policy, ids)

    llm = LLM(
        model=cli.model, dtype="float32", max_model_len=256, enforce_eager=True, seed=0,
        distributed_executor_backend="external_launcher", max_num_batched_tokens=4096,
    )  # fmt: skip
    vllm_before = vllm_prompt_logprobs(llm, ids)
    result = {"hf_before": hf_before, "hf_after": hf_after, "vllm_before": vllm_before}
    try:
        model = llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, param in policy.named_parameters():
            model.load_weights([(name, param.data)])
        llm.reset_prefix_cache()
        result["vllm_after"] = vllm_prompt_logprobs(llm, ids)
    except Exception as exc:  # reported to the test, which asserts on it
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-2000:]
    with open(cli.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
