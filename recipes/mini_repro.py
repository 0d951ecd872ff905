#!/usr/bin/env python
"""The GRRM pipeline in miniature, end to end on a CPU.

A thin launcher of :mod:`trl_grrm.scripts.reproduce_mini` (``trl-grrm reproduce-mini``); it behaves exactly as that
command. See ``trl-grrm reproduce-mini --help`` for the options.
"""

import sys

from trl_grrm.scripts.reproduce_mini import run

if __name__ == "__main__":
    sys.exit(run(prog="recipes/mini_repro.py"))
