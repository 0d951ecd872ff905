"""``trl-grrm sft-mt``: SFT cold start of the translation policy on reasoning-translation data, with TRL's SFTTrainer.

The data has the columns ``src_text``, ``src_lang``, ``trg_lang`` and ``response`` (an analysis that ends with the
translation in a code block, e.g. ``double7/TowerBlocks-MT-CoT-ZhEn``). Each row becomes the same ``codeblock-think``
user prompt the GRPO recipe uses, answered by the response (``trl_grrm.data.mt_builders.build_mt_sft_dataset``);
the loss is on the response only (prompt-completion format)::

    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/sft_mt.py --config recipes/configs/sft_mt.yaml

    # anything small, e.g. on a CPU:
    python recipes/sft_mt.py --model_name_or_path PATH --dataset_name data.jsonl --output_dir out --max_steps 10

Then train with ``trl-grrm grpo-mt --model_name_or_path <output_dir>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, get_peft_config  # noqa: E402

from trl_grrm.data import to_prompt_completion  # noqa: E402
from trl_grrm.data.mt_builders import build_mt_sft_dataset, load_mt_rows  # noqa: E402
from trl_grrm.formats.mt import MT_PROMPT_TEMPLATES  # noqa: E402
from trl_grrm.distributed import end_training, exit_process
from trl_grrm.scripts.parsing import GRRMParser, check_expected_processes  # noqa: E402

HELP = "SFT cold start of the translation policy on reasoning-translation data."


@dataclass
class SFTMTScriptArguments(ScriptArguments):
    """``dataset_name``: local .jsonl/.json/.parquet/.csv file, folder or hub id with src_text, src_lang, trg_lang and
    the response column."""

    prompt_style: str = field(
        default="codeblock-think",
        metadata={"help": f"MT prompt style, one of {sorted(MT_PROMPT_TEMPLATES)}; use the one GRPO will use."},
    )
    response_column: str = field(default="response", metadata={"help": "Column holding the assistant response."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    expected_num_processes: int | None = field(
        default=None,
        metadata={"help": "Fail fast unless launched on this many processes: the config's global batch assumes it."},
    )
    accelerate_config: str | None = field(
        default=None, metadata={"help": "The accelerate config this config is meant to be launched with."}
    )
    loss_on_prompt: bool = field(
        default=False,
        metadata={"help": "Also train on the prompt tokens (default: loss on the response only)."},
    )

    def __post_init__(self) -> None:
        if self.prompt_style not in MT_PROMPT_TEMPLATES:
            raise ValueError(f"prompt_style must be one of {sorted(MT_PROMPT_TEMPLATES)}, got {self.prompt_style!r}")


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> GRRMParser:
    """``TrlParser((SFTMTScriptArguments, SFTConfig, ModelConfig))``; ``use_cpu`` defaults to true without a GPU."""
    import torch

    dataclass_types = (SFTMTScriptArguments, SFTConfig, ModelConfig)
    if subparsers is not None:
        parser = subparsers.add_parser("sft-mt", help=HELP, dataclass_types=dataclass_types)
    else:
        parser = GRRMParser(dataclass_types, nested={}, prog=prog)
    if not torch.cuda.is_available():
        parser.set_defaults(use_cpu=True)
    return parser


def main(script_args: SFTMTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> int:
    """Build the SFT conversations and train with ``trl.SFTTrainer``."""
    if model_args.model_name_or_path is None:
        raise SystemExit("sft-mt needs --model_name_or_path (e.g. Qwen/Qwen2.5-7B)")
    if script_args.dataset_name is None:
        raise SystemExit("sft-mt needs --dataset_name (e.g. double7/TowerBlocks-MT-CoT-ZhEn or a local file)")
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    check_expected_processes(script_args.expected_num_processes, training_args.world_size, training_args)
    rows = load_mt_rows(script_args.dataset_name, split=script_args.dataset_train_split,
                        config=script_args.dataset_config)
    dataset = build_mt_sft_dataset(rows, style=script_args.prompt_style, response_column=script_args.response_column,
                                   max_rows=script_args.max_train_samples)
    if not script_args.loss_on_prompt:
        dataset = to_prompt_completion(dataset)
    trainer = SFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.accelerator.print(f"[sft_mt] {len(dataset)} SFT examples, prompt style {script_args.prompt_style!r}")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # OUTPUT_DIR/trainer_state.json: every logged metric, step by step
    if trainer.accelerator.is_main_process:
        trainer.create_model_card(model_name=os.path.basename(os.path.normpath(training_args.output_dir)),
                                  dataset_name=script_args.dataset_name, tags=["trl-grrm", "translation", "sft"])
        print(f"[sft_mt] done. Model and model card (README.md): {os.path.abspath(training_args.output_dir)}")
    end_training(trainer)
    return 0


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (and its ``--config`` YAML) and train."""
    return main(*make_parser(prog=prog).parse_args_and_config(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    exit_process(run())
