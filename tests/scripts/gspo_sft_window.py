"""One GSPO accumulation window split over 2 processes; launched by tests/test_gspo_trainer.py under torchrun.

Each rank builds a real GSPOTrainer, takes its half of a fixed 8-row batch, counts the positive sequences with the
trainer's own cross-process count, computes the loss and its gradient, and averages the gradients over the
processes as DDP does. Rank 0 saves them for the test to compare with the 1-process layouts.

Example:
    torchrun --nproc_per_node 2 tests/scripts/gspo_sft_window.py --model /tmp/tiny --batch b.pt --result g.pt \
        --output_dir /tmp/out
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from datasets import Dataset  # noqa: E402

from trl_grrm.distributed import end_training, exit_process  # noqa: E402
from trl_grrm.trainers import GSPOConfig, GSPOTrainer  # noqa: E402


def constant_reward(completions: list, **kwargs) -> list[float]:
    return [0.0] * len(completions)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", required=True, help="torch.save'd dict of the 8-row batch tensors")
    parser.add_argument("--result", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--sft_coef", type=float, default=1.0)
    cli = parser.parse_args()

    args = GSPOConfig(
        output_dir=cli.output_dir,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        gradient_accumulation_steps=1,
        sft_coef=cli.sft_coef,
        model_init_kwargs={"dtype": "float32"},  # float32 throughout, as the test's 1-process layouts
        bf16=False,
        seed=0,
    )
    trainer = GSPOTrainer(
        model=cli.model,
        reward_funcs=constant_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}),
    )
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    assert world == 2, f"expected 2 processes, got {world}"
    full = torch.load(cli.batch)
    rows = slice(rank * 4, rank * 4 + 4)
    inputs = {key: value[rows] for key, value in full.items()}
    inputs["num_pos_seqs_in_batch"] = trainer._count_positive_sequences(inputs)

    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1
    trainer.compute_loss(model, inputs).backward()
    grads = {}
    for name, param in model.named_parameters():
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        grads[name] = grad / world  # DDP averages gradients over processes
    if trainer.accelerator.is_main_process:
        torch.save({"grads": grads, "num_pos_seqs_in_batch": inputs["num_pos_seqs_in_batch"]}, cli.result)
    # Every rank leaves the process group before the interpreter exits, as the recipes do.
    trainer.accelerator.wait_for_everyone()
    end_training(trainer)


if __name__ == "__main__":
    main()
    exit_process(0)
