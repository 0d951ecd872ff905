"""Step time of GSPOTrainer's loss over GRPOTrainer's sequence-level loss, on the same model and batch.

Both trainers load the same tiny offline model; one batch is generated once and reused, made off-policy so the
clipping path runs. Each repeat times ``compute_loss`` + backward for both trainers in alternating order (so drift
in machine load hits both), and the script prints the median GSPO/GRPO ratio. Generation, rewards and the optimiser
are shared code and identical for both, so they are left out: this is the part the override can slow down.

Example:
    python benchmarks/gspo_step.py --repeats 15 --batch 16 --completion-length 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from trl_grrm.testing import build_tiny_chat_model  # noqa: E402
from trl_grrm.trainers import GSPOConfig, GSPOTrainer  # noqa: E402


def distinct_chars(completions: list, **kwargs) -> list[float]:
    return [float(len(set(c))) for c in completions]


def make_trainer(kind: str, model_dir: str, out: str, cli: argparse.Namespace):
    common = dict(
        output_dir=out,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=cli.batch,
        num_generations=cli.num_generations,
        max_completion_length=cli.completion_length,
        gradient_checkpointing=False,
        importance_sampling_level="sequence",
        loss_type="grpo",
        epsilon=3e-4,
        epsilon_high=4e-4,
        scale_rewards="none",
        seed=0,
    )
    dataset = Dataset.from_dict({"prompt": ["Hello there", "Translate: cat", "Count to three", "Say hi"]})
    if kind == "grpo":
        args = GRPOConfig(**common)
        return GRPOTrainer(model=model_dir, reward_funcs=distinct_chars, args=args, train_dataset=dataset)
    return GSPOTrainer(
        model=model_dir,
        reward_funcs=distinct_chars,
        args=GSPOConfig(**common, sft_coef=cli.sft_coef),
        train_dataset=dataset,
    )


def make_batch(trainer: GRPOTrainer, cli: argparse.Namespace) -> dict:
    trainer.model.train()
    prompts = ["Hello there", "Translate: cat", "Count to three", "Say hi"]
    rows = [{"prompt": prompts[i % len(prompts)]} for i in range(cli.batch // cli.num_generations)]
    rows = [row for row in rows for _ in range(cli.num_generations)]
    torch.manual_seed(0)
    inputs = trainer._generate_and_score_completions(rows)
    with torch.no_grad():
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, inputs["completion_ids"].size(1)
        )
    # Alternate rows just outside and inside the clip window, so both branches of the clipped objective run.
    shift = torch.tensor([2e-3 if i % 2 else 1e-4 for i in range(logps.size(0))])
    inputs["old_per_token_logps"] = logps - shift[:, None]
    return inputs


def time_steps(trainer: GRPOTrainer, inputs: dict, steps: int) -> float:
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, inputs)
        trainer.accelerator.backward(loss)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds, each times both trainers")
    parser.add_argument("--steps", type=int, default=5, help="loss+backward calls per trainer per round")
    parser.add_argument("--batch", type=int, default=16, help="completions per micro-batch")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=64)
    parser.add_argument("--sft-coef", type=float, default=0.1, help="GSPO's auxiliary NLL weight (paper: 0.1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps timings steady)")
    parser.add_argument("--model", default=None, help="model folder; default: build the tiny offline model")
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = cli.model or str(build_tiny_chat_model(os.path.join(tmp, "tiny")))
        grpo = make_trainer("grpo", model_dir, os.path.join(tmp, "grpo"), cli)
        gspo = make_trainer("gspo", model_dir, os.path.join(tmp, "gspo"), cli)
        inputs = make_batch(gspo, cli)  # GSPOTrainer's batch adds the NLL normaliser, which GRPOTrainer ignores
        tokens = int(inputs["completion_mask"].sum())

        for trainer in (grpo, gspo):  # warm-up: allocator, autograd graph caches
            time_steps(trainer, inputs, 2)
        grpo_times, gspo_times, ratios = [], [], []
        for repeat in range(cli.repeats):
            order = (grpo, gspo) if repeat % 2 == 0 else (gspo, grpo)
            timed = {id(t): time_steps(t, inputs, cli.steps) for t in order}
            grpo_times.append(timed[id(grpo)])
            gspo_times.append(timed[id(gspo)])
            ratios.append(timed[id(gspo)] / timed[id(grpo)])

    print(
        f"batch {cli.batch} x {inputs['completion_ids'].size(1)} completion tokens ({tokens} counted), "
        f"{cli.repeats} repeats x {cli.steps} steps, {cli.threads} thread(s), sft_coef={cli.sft_coef}"
    )
    print(f"GRPOTrainer (sequence level) loss+backward: median {statistics.median(grpo_times) * 1e3:.2f} ms")
    print(f"GSPOTrainer                  loss+backward: median {statistics.median(gspo_times) * 1e3:.2f} ms")
    print(f"median ratio GSPO/GRPO: {statistics.median(ratios):.3f}  (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
