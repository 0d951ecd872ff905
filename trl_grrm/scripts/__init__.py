"""The training scripts behind ``trl-grrm grpo-mt``, ``sft-mt``, ``sft-judge``, ``rlvr-judge`` and ``grpo-pairwise``.

Each module has, as TRL's ``trl/scripts/*.py``, a ``make_parser(subparsers=None, prog=None)`` returning its
``TrlParser`` (:class:`~trl_grrm.scripts.parsing.GRRMParser`, which adds the nested ``judge`` options), a
``main(script_args, training_args, model_args)`` that trains, and a ``run(argv)`` that parses and trains (what the
command and ``recipes/*.py`` call). :mod:`trl_grrm.scripts.parsing` holds the one command-line convention.
"""
