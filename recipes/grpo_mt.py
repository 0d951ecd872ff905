#!/usr/bin/env python
"""GRPO / GSPO training of a translation policy with a GRRM judge as the reward.

A thin launcher of :mod:`trl_grrm.scripts.grpo_mt` (``trl-grrm grpo-mt``), kept so that multi-process runs can be started
as ``accelerate launch [--config_file ...] recipes/grpo_mt.py [--config CONFIG.yaml] [options]``;
it behaves exactly as ``trl-grrm grpo-mt``. See ``trl-grrm grpo-mt --help`` for the options.
"""

from trl_grrm.distributed import exit_process
from trl_grrm.scripts.grpo_mt import run

if __name__ == "__main__":
    exit_process(run(prog="recipes/grpo_mt.py"))
