"""Machine-translation datasets for the policy: GRPO prompts (with Cross-Lingual Augmentation) and SFT cold-start data.

Input rows are "TowerBlocks-style": ``src_text``, ``src_lang``, ``trg_lang`` and optionally ``trg_text`` (the
reference). Language codes are the two-letter codes of :mod:`trl_grrm.languages` (``en``, ``zh``, ``de`` ...).

* :func:`build_mt_rl_dataset` writes the conversational ``prompt`` column TRL's ``GRPOTrainer`` samples from and keeps
  ``src_text``/``src_lang``/``trg_lang`` (the judge reward reads them) and ``trg_text`` (for reference-based checks).
* :func:`cross_lingual_augment` (CLA) pairs each source sentence with other target languages drawn from the
  TowerBlocks pool, so that training also covers directions that are not English-centric (zh->de, fr->ko ...).
  An augmented row has **no reference** (``trg_text=None``): the original reference is in the wrong language.
* :func:`build_mt_sft_dataset` turns reasoning-translation data (``response`` column: an analysis that ends with the
  translation in a code block) into ``messages`` (user prompt -> assistant response) for TRL's ``SFTTrainer``.

Command line: ``trl-grrm prepare-mt INPUT OUTPUT [--cla] [--seed 0] [--style codeblock-think] [--sft]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..formats.mt import MT_PROMPT_TEMPLATES, build_mt_prompt
from ..languages import TOWER_LANGUAGES

REQUIRED_COLUMNS = ("src_text", "src_lang", "trg_lang")
BUNDLED_SAMPLE = Path(__file__).with_name("mt_sample.jsonl")

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def base_code(code: str) -> str:
    """``"zh-CN"``/``"zh_CN"``/``"ZH"`` -> ``"zh"``: the part CLA compares languages by."""
    return str(code).replace("_", "-").split("-")[0].lower()


def load_mt_rows(source: str | Path | None = None, split: str = "train", config: str | None = None):
    """Load an MT table as a ``datasets.Dataset``.

    ``source`` is a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file, a local folder (loaded with
    ``datasets.load_dataset``), or a Hugging Face Hub dataset id (``split`` and ``config`` apply to folders and hub
    ids). ``None`` loads the small sample bundled with trl-grrm (54 sentence pairs, 9 directions, with references).

    Example:
        >>> rows = load_mt_rows()
        >>> sorted(rows.column_names)
        ['src_lang', 'src_text', 'trg_lang', 'trg_text']
    """
    from datasets import load_dataset

    path = Path(source) if source is not None else BUNDLED_SAMPLE
    if path.is_file():
        kind = _LOCAL_FORMATS.get(path.suffix.lower())
        if kind is None:
            raise ValueError(f"{path}: unsupported file type; use .jsonl, .json, .parquet or .csv")
        return load_dataset(kind, data_files=str(path), split="train")
    if path.is_dir():
        return load_dataset(str(path), name=config, split=split)
    return load_dataset(str(source), name=config, split=split)


def _rows(data: Any) -> list[dict[str, Any]]:
    """Rows of a ``datasets.Dataset``, a pandas DataFrame or an iterable of mappings, as plain dicts."""
    if hasattr(data, "to_dict") and hasattr(data, "columns") and not hasattr(data, "column_names"):  # pandas
        return data.to_dict(orient="records")
    return [dict(row) for row in data]


def _check_columns(rows: Sequence[Mapping[str, Any]], required: Iterable[str]) -> None:
    if not rows:
        return
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise ValueError(f"MT rows need the columns {list(required)}; missing {missing} (have {sorted(rows[0])})")


def cross_lingual_augment(
    rows: Any,
    languages: Sequence[str] = TOWER_LANGUAGES,
    num_targets: int = 1,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Cross-Lingual Augmentation: for every row, ``num_targets`` new rows translating the same source into other
    target languages.

    Each new target language is drawn (without replacement, seeded) from ``languages`` minus the row's source
    language and its original target language, compared by base code (``zh-CN`` counts as ``zh``). The new row keeps
    ``src_text``/``src_lang``, gets the new ``trg_lang`` and ``trg_text=None`` (the original reference is in the
    wrong language now), ``cla=True`` and ``cla_original_trg_lang``. Every other column is copied.

    Languages outside the pool: a row whose source or target language is not in ``languages`` (e.g. ``ja``) is still
    augmented; its new targets are drawn from the whole pool minus whichever of its two languages the pool contains,
    so a new target never equals the source or the original target. If fewer than ``num_targets`` candidates remain,
    the row gets as many as there are (none for an empty pool). Nothing raises for an unknown language; the result
    is the same for the same rows, pool, ``num_targets`` and ``seed``.

    Example:
        >>> extra = cross_lingual_augment([{"src_text": "你好", "src_lang": "zh", "trg_lang": "en", "trg_text": "Hi"}])
        >>> extra[0]["trg_lang"] not in ("zh", "en"), extra[0]["trg_text"], extra[0]["cla"]
        (True, None, True)
    """
    if num_targets < 1:
        raise ValueError(f"num_targets must be >= 1, got {num_targets}")
    rows = _rows(rows)
    _check_columns(rows, REQUIRED_COLUMNS)
    pool = list(dict.fromkeys(base_code(code) for code in languages))
    rng = random.Random(seed)
    return [new for row in rows for new in _augment_row(row, pool, num_targets, rng)]


def _augment_row(row: Mapping[str, Any], pool: list[str], num_targets: int, rng: random.Random) -> list[dict[str, Any]]:
    excluded = {base_code(row["src_lang"]), base_code(row["trg_lang"])}
    candidates = [code for code in pool if code not in excluded]
    augmented = []
    for target in rng.sample(candidates, min(num_targets, len(candidates))):
        new = dict(row)
        new.update(trg_lang=target, trg_text=None, cla=True, cla_original_trg_lang=row["trg_lang"])
        augmented.append(new)
    return augmented


def build_mt_rl_dataset(
    data: Any,
    style: str = "codeblock-think",
    cla: bool = False,
    cla_num_targets: int = 1,
    cla_languages: Sequence[str] = TOWER_LANGUAGES,
    seed: int = 0,
    language_names: Mapping[str, str] | None = None,
    max_rows: int | None = None,
):
    """The GRPO training set: a ``datasets.Dataset`` with a conversational ``prompt`` (one user message built with
    :func:`trl_grrm.formats.build_mt_prompt`), ``src_text``, ``src_lang``, ``trg_lang``, ``trg_text`` (``None`` where
    there is no reference), ``cla`` (``True`` for rows made by Cross-Lingual Augmentation) and
    ``cla_original_trg_lang``. Other input columns are dropped.

    With ``cla=True`` each original row is followed by its augmented rows (see :func:`cross_lingual_augment`), so
    the order is deterministic for a given ``seed``; ``GRPOTrainer`` shuffles every epoch anyway. ``max_rows`` keeps
    the first rows of the input before augmentation.

    Example:
        >>> ds = build_mt_rl_dataset(load_mt_rows(), cla=True, seed=0)
        >>> ds[1]["prompt"][0]["role"], ds[1]["cla"], ds[1]["trg_text"]
        ('user', True, None)
    """
    from datasets import Dataset, Features, Value

    if style not in MT_PROMPT_TEMPLATES:
        raise ValueError(f"Unknown MT prompt style {style!r}; choose one of {sorted(MT_PROMPT_TEMPLATES)}")
    rows = _rows(data)
    _check_columns(rows, REQUIRED_COLUMNS)
    if max_rows is not None:
        rows = rows[:max_rows]
    originals = [
        {
            "src_text": str(row["src_text"]),
            "src_lang": str(row["src_lang"]),
            "trg_lang": str(row["trg_lang"]),
            "trg_text": None if row.get("trg_text") is None else str(row["trg_text"]),
            "cla": False,
            "cla_original_trg_lang": None,
        }
        for row in rows
    ]
    if cla and cla_num_targets < 1:
        raise ValueError(f"cla_num_targets must be >= 1, got {cla_num_targets}")
    ordered: list[dict[str, Any]] = []
    pool = list(dict.fromkeys(base_code(code) for code in cla_languages))
    rng = random.Random(seed)  # the same draws as cross_lingual_augment(originals, cla_languages, ..., seed)
    for row in originals:
        ordered.append(row)
        if cla:
            ordered.extend(_augment_row(row, pool, cla_num_targets, rng))
    for row in ordered:
        row["prompt"] = [
            {
                "role": "user",
                "content": build_mt_prompt(row["src_text"], row["src_lang"], row["trg_lang"], style, language_names),
            }
        ]
    features = Features(
        {
            "prompt": [{"role": Value("string"), "content": Value("string")}],
            "src_text": Value("string"),
            "src_lang": Value("string"),
            "trg_lang": Value("string"),
            "trg_text": Value("string"),
            "cla": Value("bool"),
            "cla_original_trg_lang": Value("string"),
        }
    )
    columns = {name: [row[name] for row in ordered] for name in features}
    return Dataset.from_dict(columns, features=features)


def build_mt_sft_dataset(
    data: Any,
    style: str = "codeblock-think",
    response_column: str = "response",
    language_names: Mapping[str, str] | None = None,
    max_rows: int | None = None,
):
    """SFT cold-start data: ``messages`` = [user: MT prompt, assistant: the row's response (stripped)], plus
    ``src_text``/``src_lang``/``trg_lang``. Rows whose response is missing or empty are dropped.

    The response should end with the translation in a code block (what the ``codeblock-think`` prompt asks for),
    e.g. ``double7/TowerBlocks-MT-CoT-ZhEn``.

    Example:
        >>> ds = build_mt_sft_dataset([{"src_text": "Hi.", "src_lang": "en", "trg_lang": "de",
        ...                            "response": "Analysis...\\n```\\nHallo.\\n```"}])
        >>> [m["role"] for m in ds[0]["messages"]]
        ['user', 'assistant']
    """
    from datasets import Dataset, Features, Value

    rows = _rows(data)
    _check_columns(rows, (*REQUIRED_COLUMNS, response_column))
    if max_rows is not None:
        rows = rows[:max_rows]
    kept = [row for row in rows if row.get(response_column) and str(row[response_column]).strip()]
    features = Features(
        {
            "messages": [{"role": Value("string"), "content": Value("string")}],
            "src_text": Value("string"),
            "src_lang": Value("string"),
            "trg_lang": Value("string"),
        }
    )
    columns: dict[str, list[Any]] = {name: [] for name in features}
    for row in kept:
        prompt = build_mt_prompt(
            str(row["src_text"]), str(row["src_lang"]), str(row["trg_lang"]), style, language_names
        )
        columns["messages"].append(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(row[response_column]).strip()}]
        )
        for name in REQUIRED_COLUMNS:
            columns[name].append(str(row[name]))
    return Dataset.from_dict(columns, features=features)


def save_dataset(dataset, output: str | Path) -> Path:
    """Write ``dataset`` to ``.parquet`` or ``.jsonl``/``.json`` (JSON lines, UTF-8), chosen by the extension."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    suffix = output.suffix.lower()
    if suffix == ".parquet":
        dataset.to_parquet(str(output))
    elif suffix in (".jsonl", ".json"):
        with open(output, "w", encoding="utf-8") as handle:
            for row in dataset:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        raise ValueError(f"{output}: write .parquet or .jsonl")
    return output


def _language_pairs(dataset) -> Counter:
    return Counter(f"{s}-{t}" for s, t in zip(dataset["src_lang"], dataset["trg_lang"]))


def main(argv: list[str] | None = None) -> int:
    """``trl-grrm prepare-mt``: build the GRPO (default) or SFT (``--sft``) MT dataset from a file or hub id."""
    parser = argparse.ArgumentParser(
        prog="trl-grrm prepare-mt",
        description="Build the policy's MT datasets: GRPO prompts (optionally with Cross-Lingual Augmentation) or "
        "SFT cold-start conversations.",
    )
    parser.add_argument("input", nargs="?", default=None,
                        help="Local .jsonl/.json/.parquet/.csv file, folder, or hub dataset id "
                        "(columns src_text, src_lang, trg_lang[, trg_text][, response]). "
                        "Default: the sample bundled with trl-grrm.")
    parser.add_argument("output", help="Output file: .parquet or .jsonl")
    parser.add_argument("--split", default="train", help="Split to read from a folder or hub dataset")
    parser.add_argument("--dataset_config", default=None, help="Dataset configuration name (hub datasets)")
    parser.add_argument("--style", default="codeblock-think", choices=sorted(MT_PROMPT_TEMPLATES),
                        help="MT prompt style")
    parser.add_argument("--sft", action="store_true", help="Build SFT conversations from the response column")
    parser.add_argument("--response_column", default="response", help="SFT: column holding the assistant response")
    parser.add_argument("--cla", action="store_true", help="GRPO: add Cross-Lingual Augmentation rows")
    parser.add_argument("--cla_num_targets", type=int, default=1, help="CLA: new target languages per row")
    parser.add_argument("--cla_languages", default=",".join(TOWER_LANGUAGES),
                        help="CLA: comma-separated pool of target languages")
    parser.add_argument("--seed", type=int, default=0, help="CLA: random seed")
    parser.add_argument("--max_rows", type=int, default=None, help="Use only the first N input rows")
    from ..scripts.parsing import add_config_argument, parse_with_config

    add_config_argument(parser)
    args = parse_with_config(parser, list(sys.argv[1:] if argv is None else argv))

    if args.sft and args.cla:
        parser.error("--cla applies to GRPO data; the SFT builder keeps each row's own direction")
    rows = load_mt_rows(args.input, split=args.split, config=args.dataset_config)
    if args.sft:
        dataset = build_mt_sft_dataset(rows, args.style, args.response_column, max_rows=args.max_rows)
        kind = "SFT"
    else:
        languages = [code.strip() for code in args.cla_languages.split(",") if code.strip()]
        dataset = build_mt_rl_dataset(
            rows, args.style, cla=args.cla, cla_num_targets=args.cla_num_targets, cla_languages=languages,
            seed=args.seed, max_rows=args.max_rows,
        )
        kind = "GRPO"
    path = save_dataset(dataset, args.output)
    pairs = _language_pairs(dataset)
    used = len(rows) if args.max_rows is None else min(len(rows), args.max_rows)
    print(f"{kind} dataset: {len(dataset)} rows from {used} input rows -> {path}")
    if not args.sft and args.cla:
        print(f"  Cross-Lingual Augmentation: {sum(dataset['cla'])} added rows (seed {args.seed}), without reference")
    print("  directions: " + ", ".join(f"{pair} {count}" for pair, count in sorted(pairs.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
