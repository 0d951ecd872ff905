"""The ``trl-grrm`` command: ``trl-grrm <command> [options]``; each command lives in its own module."""

from __future__ import annotations

import importlib
import sys

# command -> (module with a `main(argv)` function, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval-ranking": ("trl_grrm.evaluation.ranking", "Measure a judge's ranking accuracy on a ranking dataset."),
    "prepare-mt": ("trl_grrm.data.mt_builders", "Build MT RL / SFT datasets (with Cross-Lingual Augmentation)."),
    "eval-mt": ("trl_grrm.evaluation.mt", "Translate a test set with a model and score it (BLEU, chrF++, ...)."),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: trl-grrm <command> [options]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
