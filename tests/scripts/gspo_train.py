"""Short real GSPOTrainer run on the tiny offline model; launched by tests/test_gspo_trainer.py in a subprocess.

Works single-process and under ``accelerate launch --config_file accelerate_configs/cpu_zero3.yaml`` (parameters
are gathered around the before/after snapshots, which ZeRO-3 partitions). Rank 0 writes a JSON summary.

Example:
    python tests/scripts/gspo_train.py --model /tmp/tiny --output_dir /tmp/out --result /tmp/out/r.json --vllm
    accelerate launch --config_file accelerate_configs/cpu_zero3.yaml tests/scripts/gspo_train.py \
        --model /tmp/tiny --output_dir /tmp/out --result /tmp/out/result.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from trl_grrm.distributed import end_training, exit_process  # noqa: E402
from trl_grrm.trainers import GSPOConfig, GSPOTrainer  # noqa: E402

PROMPTS = ["Hello there", "Translate: cat", "Count to three", "Say hi", "Name a colour", "Spell dog"]


def distinct_chars(completions: list, **kwargs) -> list[float]:
    """Number of distinct characters: varies between samples, so advantages are non-zero."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(len(set(t))) for t in texts]


def gathered(model: torch.nn.Module):
    """Full parameters under ZeRO-3 (a collective: every rank must enter), a no-op otherwise."""
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()))
    return contextlib.nullcontext()


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with gathered(model):
        return {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--max_steps", type=int, default=4)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--vllm", action="store_true", help="generate with vLLM in colocate mode")
    cli = parser.parse_args()

    vllm_kwargs = {}
    if cli.vllm:
        vllm_kwargs = dict(
            use_vllm=True,
            vllm_mode="colocate",
            vllm_max_model_length=256,
            # Per-token correction weights: the case where GSPO's per-token gradient path differs from a broadcast.
            vllm_importance_sampling_mode="token_truncate",
        )
    args = GSPOConfig(
        output_dir=cli.output_dir,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        gradient_accumulation_steps=2,
        # 4 micro-batches per generation and 2 per optimiser step: the second step reuses stale samples.
        steps_per_generation=4,
        max_steps=cli.max_steps,
        learning_rate=1e-2,
        logging_steps=1,
        gradient_checkpointing=False,
        seed=0,
        **vllm_kwargs,
    )
    peft_config = None
    if cli.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = GSPOTrainer(
        model=cli.model,
        reward_funcs=distinct_chars,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
        peft_config=peft_config,
    )
    before = snapshot(trainer.model)
    trainer.train()
    after = snapshot(trainer.accelerator.unwrap_model(trainer.model))

    changed = sorted(n for n in before if not torch.equal(before[n], after[n]))
    if trainer.accelerator.is_main_process:
        logs = [h for h in trainer.state.log_history if "loss" in h]
        result = {
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "trainable": sorted(before),
            "changed": changed,
            "losses": [h["loss"] for h in logs],
            "logs": logs,
            "all_finite": all(math.isfinite(h["loss"]) for h in logs),
        }
        with open(cli.result, "w") as f:
            json.dump(result, f)
    # Every rank leaves the process group before the interpreter exits (a no-op on 1 process), as the recipes do.
    trainer.accelerator.wait_for_everyone()
    end_training(trainer)


if __name__ == "__main__":
    main()
    exit_process(0)
