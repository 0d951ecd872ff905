"""Train a tiny policy with GRPOTrainer and the GRRM reward function (judge: a local OpenAI-compatible server).

Launched by tests/test_grpo_distributed.py under torchrun with 1 or 2 processes.
usage: grpo_with_judge.py MODEL_DIR JUDGE_BASE_URL OUTPUT_DIR
"""

import json
import os
import sys

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from trl_grrm import GroupRelativeRewardFunction
from trl_grrm.distributed import end_training, exit_process
from trl_grrm.formats import build_mt_prompt


def dataset(sources):
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": build_mt_prompt(s, "en", "de")}] for s in sources],
        "src_text": sources,
        "src_lang": ["en"] * len(sources),
        "trg_lang": ["de"] * len(sources),
    })


def main():
    model_dir, base_url, output_dir = sys.argv[1:4]
    judge = GroupRelativeRewardFunction(
        judge_model="judge", backend="openai", base_url=base_url, extractor="full",
        audit_log_path=f"{output_dir}/judge_audit.jsonl",
    )
    args = GRPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=3 if int(os.environ.get("WORLD_SIZE", "1")) == 2 else 4,
        num_generations=2,
        # On 2 processes a batch of 3 splits one group of 2 across them, in eval as in training.
        per_device_eval_batch_size=3 if int(os.environ.get("WORLD_SIZE", "1")) == 2 else 2,
        max_completion_length=8,
        max_steps=3,
        eval_strategy="steps",
        eval_steps=3,
        logging_steps=1,
        log_completions=True,
        num_completions_to_print=0,
        learning_rate=0.05,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        seed=7,
    )
    train = dataset([f"Sentence number {i} is here." for i in range(12)])
    evaluation = dataset([f"Evaluation sentence {i}." for i in range(3)])
    trainer = GRPOTrainer(model=model_dir, reward_funcs=[judge], args=args, train_dataset=train,
                          eval_dataset=evaluation)
    trainer.train()
    if trainer.accelerator.is_main_process:
        with open(f"{output_dir}/log_history.json", "w") as handle:
            json.dump(trainer.state.log_history, handle)
    # Every rank leaves the process group before the interpreter exits (a no-op on 1 process), as the recipes do.
    trainer.accelerator.wait_for_everyone()
    end_training(trainer)


if __name__ == "__main__":
    main()
    exit_process(0)
