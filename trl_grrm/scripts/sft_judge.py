# Copyright the trl-grrm authors. Licensed under the Apache License, Version 2.0.
"""``trl-grrm sft-judge``: stage 1 of GRRM judge training: SFT cold start with TRL's ``SFTTrainer``.

Reads a ranking dataset (columns ``src_text``, ``src_lang``, ``trg_lang``, ``mt_texts``, ``scores``, ``analysis``;
e.g. ``double7/TowerBlocks-MT-Ranking``), turns every group into one judge conversation with
:func:`trl_grrm.data.build_judge_sft_dataset` (user: the GQM prompt, candidates in stored order; assistant: the
annotator's analysis, then ``### Final Ranking:`` and ``### Scores:`` derived from the labels) and fine-tunes the
judge on it. By default the conversations are split into prompt and completion so that only the judge's answer
is trained on (``--prompt_completion false`` trains on the whole conversation).

Usage:

    # 2 nodes x 8 GPUs (run on each node with its --machine_rank), the paper's settings:
    accelerate launch --config_file accelerate_configs/zero3_multinode.yaml \\
        --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR \\
        recipes/sft_grrm.py --config recipes/configs/sft_grrm_full.yaml

    # LoRA, any number of GPUs (keep per_device x accumulation x processes = 64):
    accelerate launch recipes/sft_grrm.py --config recipes/configs/sft_grrm_lora.yaml

    # any key of the YAML can be overridden on the command line:
    python recipes/sft_grrm.py --config recipes/configs/sft_grrm_full.yaml --dataset_name data/ranking.jsonl \\
        --expected_num_processes 1 --max_steps 10

``dataset_name`` is a local file (.parquet/.jsonl/.json/.csv), a folder with ``<split>.parquet|jsonl|json`` or a
hub dataset id.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from trl_grrm.data import build_judge_sft_dataset, to_prompt_completion
from trl_grrm.evaluation.ranking import load_ranking_dataset
from trl_grrm.distributed import end_training, exit_process
from trl_grrm.scripts.parsing import GRRMParser, RankingDataScriptArguments, check_expected_processes


@dataclass
class JudgeSFTScriptArguments(RankingDataScriptArguments):
    """:class:`~trl_grrm.scripts.parsing.RankingDataScriptArguments` plus the judge SFT recipe's own."""

    missing_analysis: str = field(
        default="skip", metadata={"help": "Rows without an analysis: 'skip' them or raise an 'error'."}
    )
    prompt_completion: bool = field(
        default=True,
        metadata={"help": "Split each conversation into prompt and completion so the loss covers only the judge's "
                  "answer (as the GRRM SFT did); false trains on the whole conversation."},
    )  # fmt: skip


HELP = "SFT cold start of a GRRM judge on ranking data (stage 1 of judge training)."


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> GRRMParser:
    """The recipe's ``TrlParser``: (script arguments, ``SFTConfig``, ``ModelConfig``)."""
    dataclass_types = (JudgeSFTScriptArguments, SFTConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("sft-judge", help=HELP, dataclass_types=dataclass_types)
    return GRRMParser(dataclass_types, nested={}, prog=prog)


def build_split(name: str, split: str, config: str | None, limit: int | None, script_args):
    ranking = load_ranking_dataset(name, split=split, config=config)
    if limit is not None:
        ranking = ranking.select(range(min(limit, len(ranking))))
    conversations = build_judge_sft_dataset(ranking, missing_analysis=script_args.missing_analysis)
    if not len(conversations):
        raise SystemExit(f"{name} ({split}) gave no SFT conversation: does it have an 'analysis' column with text?")
    return to_prompt_completion(conversations) if script_args.prompt_completion else conversations


def main(script_args, training_args, model_args) -> None:
    if not script_args.dataset_name:
        raise SystemExit("--dataset_name is required (a ranking dataset: file, folder or hub id)")
    check_expected_processes(script_args.expected_num_processes, training_args.world_size, training_args)
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs

    train_dataset = build_split(
        script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config,
        script_args.max_train_samples, script_args,
    )  # fmt: skip
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = build_split(
            script_args.eval_dataset_name or script_args.dataset_name, script_args.dataset_test_split,
            None if script_args.eval_dataset_name else script_args.dataset_config, script_args.max_eval_samples,
            script_args,
        )  # fmt: skip

    trainer = SFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    global_batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    trainer.accelerator.print(f"judge SFT: {len(train_dataset)} conversations, global batch "
                              f"{global_batch * trainer.accelerator.num_processes}")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"judge saved to {training_args.output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    end_training(trainer)


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (and its ``--config`` YAML) and train."""
    main(*make_parser(prog=prog).parse_args_and_config(list(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    exit_process(run())
