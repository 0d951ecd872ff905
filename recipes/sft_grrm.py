#!/usr/bin/env python
"""Stage 1 of GRRM judge training: SFT cold start.

A thin launcher of :mod:`trl_grrm.scripts.sft_judge` (``trl-grrm sft-judge``), kept so that multi-process runs can be started
as ``accelerate launch [--config_file ...] recipes/sft_grrm.py [--config CONFIG.yaml] [options]``;
it behaves exactly as ``trl-grrm sft-judge``. See ``trl-grrm sft-judge --help`` for the options.
"""

from trl_grrm.distributed import exit_process
from trl_grrm.scripts.sft_judge import run

if __name__ == "__main__":
    exit_process(run(prog="recipes/sft_grrm.py"))
