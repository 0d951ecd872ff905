"""One command-line convention for every ``trl-grrm`` command, and the nested ``judge:`` options.

The convention is TRL's: flags are the option names with underscores (``--max_new_tokens``, ``--output_dir``), every
command takes ``--config file.yaml`` whose keys are the same names (the command line overrides the file), and the
judge is one nested :class:`~trl_grrm.engines.JudgeConfig`: a ``judge:`` mapping in the YAML, or dotted flags
``--judge.model grrm --judge.backend openai --judge.temperature 0``. The evaluation commands still accept the
hyphenated spellings of their flags (``--max-new-tokens``) they had before.

* :class:`GRRMParser` is ``trl.TrlParser`` plus nested dataclass options (the training scripts).
* :func:`add_nested_arguments` and :func:`parse_with_config` give a plain ``argparse`` command (``eval-ranking``,
  ``eval-mt``, ``prepare-mt``) the same ``--config`` file and ``judge`` options.

Example:
    >>> import argparse
    >>> from trl_grrm.engines import JudgeConfig
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--max_rows", type=int, default=None)
    >>> add_nested_arguments(parser, "judge", JudgeConfig)
    >>> args = parse_with_config(parser, ["--max-rows", "3", "--judge.model", "grrm", "--judge.base_url", "http://h/v1"],
    ...                          nested={"judge": JudgeConfig})
    >>> args.max_rows, args.judge.model, args.judge.backend
    (3, 'grrm', 'openai')
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trl import ScriptArguments, TrlParser

from ..engines.config import LEGACY_JUDGE_KEYS, JudgeConfig

#: The nested option groups of the training scripts: prefix -> dataclass.
NESTED: dict[str, type] = {"judge": JudgeConfig}


def _string_to_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _optional(convert):
    """``convert``, with ``none`` / ``null`` read as ``None`` (to unset an option a config file set)."""

    def parse(value: str):
        return None if isinstance(value, str) and value.lower() in ("none", "null") else convert(value)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _base_type(annotation: Any) -> Any:
    """``int`` for ``int | None``, ``list`` for ``list[str] | None``, ``dict`` for ``dict[str, Any]`` ..."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is not None:
        return origin
    return annotation


class _ListAction(argparse.Action):
    """``nargs="+"`` values; a repeated flag adds to the list (``--judge.base_url A --judge.base_url B``), while
    the first one replaces what a config file set."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        seen = getattr(namespace, "_lists_given", set())
        current = list(getattr(namespace, self.dest, None) or []) if self.dest in seen else []
        seen.add(self.dest)
        setattr(namespace, "_lists_given", seen)
        setattr(namespace, self.dest, current + list(values))


def add_nested_arguments(parser: argparse.ArgumentParser, prefix: str, cls: type) -> None:
    """Add ``--<prefix>.<field>`` flags for every field of the dataclass ``cls`` (in their own help group).

    The flags' destinations are ``<prefix>.<field>`` and they default to unset (``argparse.SUPPRESS``), so only the
    options given end up in the namespace, where :func:`pop_nested` collects them.
    """
    group = parser.add_argument_group(
        f"{prefix} options ({cls.__name__}: a `{prefix}:` mapping in the --config YAML, or --{prefix}.<option>)"
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _base_type(hints[f.name])
        kwargs: dict[str, Any] = dict(dest=f"{prefix}.{f.name}", default=argparse.SUPPRESS,
                                      help=f.metadata.get("help"))
        if kind is bool:
            kwargs.update(type=_string_to_bool, nargs="?", const=True, metavar="BOOL")
        elif kind is list:
            kwargs.update(nargs="+", action=_ListAction)
        elif kind is dict:
            kwargs.update(type=json.loads, metavar="JSON")
        elif kind in (int, float):
            kwargs.update(type=_optional(kind))
        else:
            kwargs.update(type=_optional(str))
        kwargs.setdefault("metavar", f.name.upper())
        group.add_argument(f"--{prefix}.{f.name}", **kwargs)


def pop_nested(namespace: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """Remove the ``<prefix>.<field>`` entries from ``namespace`` and return them as ``{field: value}``."""
    if hasattr(namespace, "_lists_given"):
        delattr(namespace, "_lists_given")
    values = {}
    for key in list(vars(namespace)):
        if key.startswith(prefix + "."):
            values[key[len(prefix) + 1 :]] = getattr(namespace, key)
            delattr(namespace, key)
    return values


def merge_nested(base: Any, dotted: Mapping[str, Any]) -> dict[str, Any] | Any:
    """``base`` (a mapping, a JSON string, a dataclass or ``None``) with the ``dotted`` options laid over it."""
    if not dotted:
        return base
    if isinstance(base, str):
        base = json.loads(base) if base.strip() else None
    if dataclasses.is_dataclass(base):
        base = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return {**(base or {}), **dotted}


def flatten_config(config: Mapping[str, Any], nested: Mapping[str, type]) -> dict[str, Any]:
    """A YAML config with its nested mappings (``judge: {model: x}``) spelt as dotted keys (``judge.model``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in nested and isinstance(value, Mapping):
            flat.update({f"{key}.{sub}": sub_value for sub, sub_value in value.items()})
        else:
            flat[key] = value
    return flat


def legacy_judge_error(names: Sequence[str]) -> ValueError | None:
    """A ``ValueError`` naming the new spelling of the old flat judge options among ``names``, or ``None``."""
    renamed = [(name, LEGACY_JUDGE_KEYS[name]) for name in names if name in LEGACY_JUDGE_KEYS]
    renamed += [(name, name[len("judge_"):]) for name in names if name not in LEGACY_JUDGE_KEYS
                and name.startswith("judge_") and name[len("judge_"):] in {f.name for f in dataclasses.fields(JudgeConfig)}]
    if "judge_kwargs" in names:
        renamed.append(("judge_kwargs", "<option>"))
    if not renamed:
        return None
    spelled = ", ".join(f"{old} -> judge.{new} (--judge.{new}, or `{new}:` under `judge:` in YAML)" for old, new in renamed)
    hint = (" (judge_kwargs: engine, sampling and retry options go under `judge:`, other reward config fields under "
            "reward_kwargs)") if "judge_kwargs" in names else ""
    return ValueError(f"the judge options are one nested `judge` config now; renamed: {spelled}{hint}")


def _option_names(tokens: Sequence[str]) -> list[str]:
    return [t[2:].split("=", 1)[0].replace("-", "_") for t in tokens if t.startswith("--")]


class GRRMParser(TrlParser):
    """``trl.TrlParser`` whose dataclasses may hold nested option groups (``judge``: a :class:`JudgeConfig`).

    A script dataclass declares the group as a field ``judge: dict | str | None`` and turns it into the dataclass in
    its ``__post_init__`` (``JudgeConfig.from_value``). The parser adds ``--judge.<option>`` flags, and merges them
    over the field's value (the YAML ``judge:`` mapping, or a JSON string given as ``--judge``) before the script
    dataclass is built. Old flat names (``--judge_model``, ``judge_backend:``) raise an error naming the new one.

    Example:
        >>> from dataclasses import dataclass, field
        >>> @dataclass
        ... class Args:
        ...     judge: dict | str | None = field(default=None)
        ...     def __post_init__(self):
        ...         self.judge = JudgeConfig.from_value(self.judge)
        >>> (args,) = GRRMParser(Args).parse_args_and_config(["--judge.model", "grrm", "--judge.base_url", "http://h/v1"])
        >>> args.judge.backend, args.judge.model
        ('openai', 'grrm')
    """

    def __init__(self, dataclass_types: Any = None, nested: Mapping[str, type] | None = None, **kwargs: Any) -> None:
        super().__init__(dataclass_types, **kwargs)
        # Shown in --help only: TrlParser reads and removes `--config FILE` before argparse sees the command line.
        self.add_argument("--config", default=argparse.SUPPRESS, metavar="YAML",
                          help="YAML file whose keys are this command's options (nested ones as mappings, e.g. "
                               "`judge:`). The command line overrides it.")
        self.nested = dict(NESTED if nested is None else nested)
        for prefix, cls in self.nested.items():
            add_nested_arguments(self, prefix, cls)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        namespace, remaining = super().parse_known_args(args, namespace)
        error = legacy_judge_error(_option_names(remaining))
        if error is not None:
            raise error
        for prefix in self.nested:
            dotted = pop_nested(namespace, prefix)
            if dotted:
                setattr(namespace, prefix, merge_nested(getattr(namespace, prefix, None), dotted))
        return namespace, remaining

    def set_defaults_with_config(self, **kwargs: Any) -> list[str]:
        remaining = super().set_defaults_with_config(**kwargs)
        # Only names no dataclass took (GRPOConfig has its own vllm_gpu_memory_utilization, for the policy's vLLM).
        error = legacy_judge_error(_option_names(remaining))
        if error is not None:
            raise error
        return remaining


def underscore_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` with hyphenated spellings of ``parser``'s underscore flags (``--max-rows``) written the one way
    (``--max_rows``)."""
    known = set(parser._option_string_actions)
    out = []
    for token in argv:
        if token.startswith("--") and token not in known:
            name, sep, value = token.partition("=")
            spelt = "--" + name[2:].replace("-", "_")
            if spelt in known:
                token = spelt + sep + value
        out.append(token)
    return out


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--config file.yaml`` flag of a plain argparse command (read by :func:`parse_with_config`)."""
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="YAML file whose keys are this command's options (underscores; a `judge:` mapping for "
                             "the judge). The command line overrides it.")


def apply_aliases(argv: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """``argv`` with the old flag names of ``aliases`` (underscore or hyphen spelling, ``--name`` or
    ``--name=value``) replaced by their new names."""
    normalised = {"--" + old.lstrip("-").replace("-", "_"): new for old, new in aliases.items()}
    out = []
    for token in argv:
        if token.startswith("--"):
            name, sep, value = token.partition("=")
            new = normalised.get("--" + name[2:].replace("-", "_"))
            if new is not None:
                token = new + sep + value
        out.append(token)
    return out


def parse_with_config(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    nested: Mapping[str, type] | None = None,
    nested_defaults: Mapping[str, Mapping[str, Any]] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> argparse.Namespace:
    """Parse ``argv`` with ``parser`` after applying its ``--config`` YAML as defaults; each nested group of
    ``nested`` (prefix -> dataclass) becomes one dataclass on the namespace (``args.judge``), built from
    ``nested_defaults[prefix]`` (values, or functions of the parsed namespace) overridden by the YAML mapping overridden by the dotted flags. ``aliases`` maps
    old flag names, still accepted, to the new ones (``{"--judge-model": "--judge.model"}``)."""
    nested = dict(nested or {})
    argv = underscore_flags(parser, apply_aliases(list(argv), aliases or {}))
    config_path = None
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            parser.error("--config needs a YAML file")
        config_path = argv[index + 1]
    else:
        config_path = next((t.split("=", 1)[1] for t in argv if t.startswith("--config=")), None)
    if config_path is not None:
        import yaml

        with open(config_path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        if not isinstance(config, dict):
            parser.error(f"{config_path} must contain a YAML mapping")
        flat = {key.replace("-", "_"): value for key, value in flatten_config(config, nested).items()}
        dests = {action.dest: action for action in parser._actions}
        error = legacy_judge_error([key for key in flat if key not in dests])
        if error is not None:
            parser.error(str(error))
        unknown = sorted(key for key in flat if key not in dests or key == "config")
        if unknown:
            parser.error(f"unknown option(s) in {config_path}: {unknown}")
        for key, value in flat.items():
            dests[key].default = value
            dests[key].required = False
            if not dests[key].option_strings and dests[key].nargs is None:  # a positional the file now gives
                dests[key].nargs = "?"
    error = legacy_judge_error(_option_names(t for t in argv if t.startswith("--") and t.split("=", 1)[0] not in
                                             parser._option_string_actions))
    if error is not None:
        parser.error(str(error))
    args = parser.parse_args(argv)
    for prefix, cls in nested.items():
        # A default may be a function of the other arguments (eval-ranking: the judge's seed is --seed's).
        defaults = {key: value(args) if callable(value) else value
                    for key, value in (nested_defaults or {}).get(prefix, {}).items()}
        values = {**defaults, **pop_nested(args, prefix)}
        try:
            setattr(args, prefix, cls.from_value(values) if hasattr(cls, "from_value") else cls(**values))
        except TypeError as error:
            raise ValueError(f"{prefix}: {error}") from error
    return args


def option_from_argv_or_config(argv: Sequence[str], name: str) -> Any:
    """The value of ``--name`` on the command line (its last occurrence, as argparse keeps), else the ``name`` key of
    its ``--config`` YAML, else ``None``.

    For the few options a script must know before its real parse (which depends on them): ``trainer`` picks the
    config class, ``model_name_or_path`` decides whether the embedded default policy is built.
    """
    flag = f"--{name}"
    value = None
    for index, arg in enumerate(argv):  # the last occurrence wins, as in argparse
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    if value is not None:
        return value
    if "--config" in argv and list(argv).index("--config") + 1 < len(argv):
        import yaml

        with open(argv[list(argv).index("--config") + 1], encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        return config.get(name)
    return None


def check_expected_processes(expected: int | None, launched: int, training_args: Any, *, rollouts: bool = False) -> None:
    """Stop before training when a config written for ``expected`` processes is launched on ``launched``: the
    global batch (and with it the paper's optimiser settings) would silently change.

    ``rollouts`` names ``steps_per_generation`` in the advice too (GRPO-style trainers).

    Example:
        >>> from types import SimpleNamespace
        >>> args = SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=8)
        >>> check_expected_processes(16, 16, args)  # as written: nothing to say
        >>> check_expected_processes(16, 8, args)
        Traceback (most recent call last):
        ...
        ValueError: this config was written for 16 processes but was launched on 8: each optimiser step would see 256 sequences instead of 512. Scale gradient_accumulation_steps by 16/8 and pass --expected_num_processes 8.
    """
    if not expected or expected == launched:
        return
    per_process = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    scale = "gradient_accumulation_steps and steps_per_generation" if rollouts else "gradient_accumulation_steps"
    raise ValueError(
        f"this config was written for {expected} processes but was launched on {launched}: each optimiser step "
        f"would see {per_process * launched} sequences instead of {per_process * expected}. Scale {scale} by "
        f"{expected}/{launched} and pass --expected_num_processes {launched}."
    )


@dataclass
class RankingDataScriptArguments(ScriptArguments):
    """TRL's dataset arguments (``dataset_name``, ``dataset_config``, ``dataset_train_split``, ``dataset_test_split``)
    plus what both judge-training scripts read: an optional separate eval set, row limits and the launch check."""

    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Ranking dataset to evaluate on (file, folder or hub id). Default: dataset_name's "
                  "dataset_test_split, when eval_strategy is not 'no'."},
    )  # fmt: skip
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N ranking rows (before any augmentation)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N ranking rows."})
    expected_num_processes: int | None = field(
        default=None,
        metadata={"help": "Fail fast unless launched on this many processes: the config's batch arithmetic "
                  "(per_device_train_batch_size x gradient_accumulation_steps x processes) assumes it."},
    )  # fmt: skip
