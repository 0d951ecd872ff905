#!/usr/bin/env python
"""Stage 2 of GRRM judge training: RLVR with GSPO and the ranking reward.

A thin launcher of :mod:`trl_grrm.scripts.rlvr_judge` (``trl-grrm rlvr-judge``), kept so that multi-process runs can be started
as ``accelerate launch [--config_file ...] recipes/rlvr_grrm.py [--config CONFIG.yaml] [options]``;
it behaves exactly as ``trl-grrm rlvr-judge``. See ``trl-grrm rlvr-judge --help`` for the options.
"""

from trl_grrm.distributed import exit_process
from trl_grrm.scripts.rlvr_judge import run

if __name__ == "__main__":
    exit_process(run(prog="recipes/rlvr_grrm.py"))
