"""The ``trl-grrm`` command: ``trl-grrm <command> [options]``, as TRL's ``trl <command>``.

Training commands (each a module of :mod:`trl_grrm.scripts` with ``make_parser`` / ``main`` / ``run``, the same code
``recipes/*.py`` launch) and tools (``eval-ranking``, ``eval-mt``, ``prepare-mt``). Every command takes
``--config file.yaml`` and flags in one convention, TRL's: option names with underscores (``--max_new_tokens``);
judge options nest under ``judge`` (a ``judge:`` mapping in the YAML, or ``--judge.model``, ``--judge.backend`` ...;
see :mod:`trl_grrm.scripts.parsing`).

A command runs in this process; for several processes launch the recipe file (``accelerate launch
recipes/grpo_mt.py ...``) or the module (``accelerate launch -m trl_grrm.scripts.grpo_mt ...``).

Example:
    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: trl-grrm <command> [options]
    ...
    0
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

from trl_grrm.distributed import exit_process

# command -> (module, entry point taking (argv, prog) or (argv), one-line description). The descriptions are here,
# not read from the modules, so that `trl-grrm --help` imports neither torch nor trl.
TRAINING_COMMANDS: dict[str, tuple[str, str]] = {
    "grpo-mt": ("trl_grrm.scripts.grpo_mt", "GRPO / GSPO of a translation policy with a GRRM judge reward (the paper's MT recipe)."),
    "sft-mt": ("trl_grrm.scripts.sft_mt", "SFT cold start of the translation policy on reasoning-translation data."),
    "sft-judge": ("trl_grrm.scripts.sft_judge", "SFT cold start of a GRRM judge on ranking data (judge training, stage 1)."),
    "rlvr-judge": ("trl_grrm.scripts.rlvr_judge", "RLVR of a GRRM judge with GSPO and the ranking reward (judge training, stage 2)."),
    "grpo-pairwise": ("trl_grrm.scripts.grpo_pairwise", "GRPO on chat prompts with a pairwise GRAM-style judge reward."),
    "reproduce-mini": ("trl_grrm.scripts.reproduce_mini", "The GRRM pipeline in miniature, trained end to end on a CPU, with results and plots."),
}
TOOL_COMMANDS: dict[str, tuple[str, str]] = {
    "eval-ranking": ("trl_grrm.evaluation.ranking", "Measure a judge's ranking accuracy on a ranking dataset."),
    "prepare-mt": ("trl_grrm.data.mt_builders", "Build MT RL / SFT datasets (with Cross-Lingual Augmentation)."),
    "eval-mt": ("trl_grrm.evaluation.mt", "Translate a test set with a model and score it (BLEU, chrF++, ...)."),
}
COMMANDS: dict[str, tuple[str, str]] = {**TRAINING_COMMANDS, **TOOL_COMMANDS}


def usage() -> str:
    """The text of ``trl-grrm --help``: every command with its description."""
    width = max(map(len, COMMANDS))

    def lines(commands: dict[str, tuple[str, str]]) -> str:
        return "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in commands.items())

    return (
        "usage: trl-grrm <command> [options]\n\n"
        f"training commands (recipes):\n{lines(TRAINING_COMMANDS)}\n\n"
        f"tools:\n{lines(TOOL_COMMANDS)}\n\n"
        "Every command takes --config file.yaml; flags use underscores (--output_dir), judge options nest under\n"
        "judge (--judge.model, --judge.backend ..., or a `judge:` mapping in the YAML). `trl-grrm <command> --help`\n"
        "lists a command's options."
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``trl-grrm <command> [options]``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(usage())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\ntrl-grrm: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    if name in TRAINING_COMMANDS:
        return module.run(rest, prog=f"trl-grrm {name}") or 0
    return module.main(rest) or 0


def console_main() -> NoReturn:
    """The ``trl-grrm`` console command: :func:`main` on ``sys.argv``, then its exit status."""
    exit_process(main())


if __name__ == "__main__":
    console_main()
