#!/usr/bin/env python
"""SFT cold start of the translation policy on reasoning-translation data.

A thin launcher of :mod:`trl_grrm.scripts.sft_mt` (``trl-grrm sft-mt``), kept so that multi-process runs can be started
as ``accelerate launch [--config_file ...] recipes/sft_mt.py [--config CONFIG.yaml] [options]``;
it behaves exactly as ``trl-grrm sft-mt``. See ``trl-grrm sft-mt --help`` for the options.
"""

from trl_grrm.distributed import exit_process
from trl_grrm.scripts.sft_mt import run

if __name__ == "__main__":
    exit_process(run(prog="recipes/sft_mt.py"))
