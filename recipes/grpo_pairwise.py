#!/usr/bin/env python
"""GRPO on chat prompts with a pairwise GRAM-style judge as the reward.

A thin launcher of :mod:`trl_grrm.scripts.grpo_pairwise` (``trl-grrm grpo-pairwise``), kept so that multi-process runs can be started
as ``accelerate launch [--config_file ...] recipes/grpo_pairwise.py [--config CONFIG.yaml] [options]``;
it behaves exactly as ``trl-grrm grpo-pairwise``. See ``trl-grrm grpo-pairwise --help`` for the options.
"""

from trl_grrm.distributed import exit_process
from trl_grrm.scripts.grpo_pairwise import run

if __name__ == "__main__":
    exit_process(run(prog="recipes/grpo_pairwise.py"))
