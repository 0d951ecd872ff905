"""Judge SFT and RLVR dataset builders: exact formats, augmentation counts, remapping, dedup, seeding."""

from __future__ import annotations

import itertools
import json
import random
import re
import warnings
from collections import Counter

import numpy as np
import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_grrm.data import (
    RLVR_FEATURES,
    arrange_group,
    build_judge_rlvr_dataset,
    build_judge_sft_dataset,
    clean_analysis,
)
from trl_grrm.formats.gqm import CANDIDATE_IDS, format_gqm_answer, parse_gqm_output
from trl_grrm.judge_training.rewards import RankingReward

FROG = "I have a frog in my throat."
FROG_MT = ["我嗓子有点哑。", "我嗓子眼里好像有只青蛙。", "我喉咙不舒服。"]


def ranking_ds(groups, with_analysis=True, src="Source sentence.", langs=("en", "zh")):
    """A ranking dataset from (mt_texts, scores[, analysis]) tuples."""
    data = {
        "src_text": [src] * len(groups),
        "src_lang": [langs[0]] * len(groups),
        "trg_lang": [langs[1]] * len(groups),
        "mt_texts": [list(g[0]) for g in groups],
        "scores": [list(g[1]) for g in groups],
    }
    if with_analysis:
        data["analysis"] = [g[2] if len(g) > 2 else "An analysis." for g in groups]
    return Dataset.from_dict(data)


def group_of(n):
    return [f"candidate {i}" for i in range(n)], [9 - 2 * i for i in range(n)]


_BLOCK_RE = re.compile(r"Translation ([A-Z]):\n(`{3,})\n(.*?)\n\2\n", re.S)


def shown_candidates(prompt_text: str) -> dict[str, str]:
    """Letter -> candidate text as the judge sees it in the prompt."""
    candidates_part = prompt_text.split("\n\nTranslation A:\n", 1)[1]
    return {m[1]: m[3] for m in _BLOCK_RE.finditer("Translation A:\n" + candidates_part)}


# --- SFT ------------------------------------------------------------------------------------------------------------


def test_sft_conversation_is_byte_exact():
    ds = ranking_ds(
        [(FROG_MT, [8, 3, 8], "  A and C keep the idiom's meaning; B is literal.\n\n**Final Scores:**\n")],
        src=FROG,
    )
    out = build_judge_sft_dataset(ds)
    assert out.column_names == ["messages"]
    assert out[0]["messages"] == [
        {
            "role": "user",
            "content": "Given a source text in English and multiple translation candidates in Chinese. Perform a step "
            "by step analysis and comparison of the translation quality for the candidates. Finally, rank and score "
            "the candidates with integer scores on a scale from 0 to 10.\n\nSource text:\n```\nI have a frog in my "
            "throat.\n```\n\nTranslation A:\n```\n我嗓子有点哑。\n```\nTranslation B:\n```\n我嗓子眼里好像有只青蛙。\n"
            "```\nTranslation C:\n```\n我喉咙不舒服。\n```\n",
        },
        {
            "role": "assistant",
            "content": "A and C keep the idiom's meaning; B is literal.\n\n### Final Ranking:\n\nA = C > B\n\n"
            "### Scores:\n\nA: 8, C: 8, B: 3\n",
        },
    ]


def test_sft_answers_parse_back_to_the_labels():
    ds = ranking_ds([(FROG_MT, [2, 9, 5]), (FROG_MT[:2], [4, 4])])
    for row, scores in zip(build_judge_sft_dataset(ds), ([2, 9, 5], [4, 4])):
        ids = CANDIDATE_IDS[: len(scores)]
        judgment = parse_gqm_output(row["messages"][1]["content"], ids)
        assert judgment.scores == dict(zip(ids, scores)) and judgment.ranking_agrees
        assert judgment.analysis == "An analysis."


def test_sft_missing_analysis_skip_or_error():
    groups = [(FROG_MT, [8, 3, 8], "Fine."), (FROG_MT, [1, 2, 3], None), (FROG_MT, [1, 2, 3], "  \n"),
              (FROG_MT, [1, 2, 3], "### Scores:"), (FROG_MT, [5, 6, 7], "Also fine.")]
    out = build_judge_sft_dataset(ranking_ds(groups))
    assert [m[1]["content"].split("\n")[0] for m in out["messages"]] == ["Fine.", "Also fine."]
    with pytest.raises(ValueError, match="row 1"):
        build_judge_sft_dataset(ranking_ds(groups), missing_analysis="error")
    with pytest.raises(ValueError, match="analysis"):
        build_judge_sft_dataset(ranking_ds(groups, with_analysis=False))
    with pytest.raises(ValueError):
        build_judge_sft_dataset(ranking_ds(groups), missing_analysis="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Good.\n**Final Scores:**", "Good."),
        ("Good.\n\n### Scoring\n\n", "Good."),
        ("Good.\n__Ranking and Scores__", "Good."),
        ("Good.\nScores:", "Good."),
        ("Good.\nBased on the analysis above, here are the final rankings:", "Good."),
        ("Good.\nB's score is lower: it is too literal.", "Good.\nB's score is lower: it is too literal."),
        ("Good.\n**Overall:** B deserves the lowest **score**", "Good.\n**Overall:** B deserves the lowest **score**"),
        ("Good.\n**Conclusion:**", "Good.\n**Conclusion:**"),
        ("  Only text.  ", "Only text."),
        ("**Final Scores:**", ""),
    ],
)
def test_clean_analysis_drops_only_a_dangling_header(raw, cleaned):
    assert clean_analysis(raw) == cleaned


@pytest.mark.parametrize(
    "group", [(FROG_MT, [8, 3]), (FROG_MT, [8, 3, 11]), (FROG_MT, [8, 3, -1]), (FROG_MT, [8, 3, 7.5]),
              (FROG_MT[:1], [8]), (["x"] * 27, [5] * 27)],
)
def test_builders_reject_bad_groups(group):
    with pytest.raises(ValueError):
        build_judge_sft_dataset(ranking_ds([group]))
    with pytest.raises(ValueError):
        build_judge_rlvr_dataset(ranking_ds([group]))


# --- RLVR: counts ---------------------------------------------------------------------------------------------------


def test_rlvr_n2_gives_original_plus_its_only_swap():
    # 2! - 1 = 1 shuffle possible, no proper subgroup of size >= 2 -> 1 + 1 = 2
    out = build_judge_rlvr_dataset(ranking_ds([group_of(2)]), shuffle_augment=4, subgroup_augment=4, seed=0)
    assert len(out) == 2
    assert out[:]["order"] == [[0, 1], [1, 0]]


def test_rlvr_n3_gives_eleven_rows():
    # original: 1 + min(4, 3! - 1 = 5) = 5; subgroups: the 3 pairs (all of them, 3 < 4), each 1 + min(4, 1) = 2
    # -> 5 + 3 * 2 = 11
    out = build_judge_rlvr_dataset(ranking_ds([group_of(3)]), shuffle_augment=4, subgroup_augment=4, seed=0)
    assert len(out) == 11
    assert Counter(out["augmentation"]) == {"original": 1, "shuffle": 4, "subgroup": 3, "subgroup+shuffle": 3}


@pytest.mark.parametrize("seed", range(6))
def test_rlvr_n4_count_depends_on_which_subgroups_were_drawn(seed):
    # original: 1 + 4 shuffles = 5. Each drawn subgroup adds 1 + min(4, k! - 1): 5 for a triple, 2 for a pair.
    # 25 = 5 * 5 only if all four draws are triples (1 in C(10, 4) = 210); in general 5 + 5t + 2(4 - t), t triples.
    out = build_judge_rlvr_dataset(ranking_ds([group_of(4)]), shuffle_augment=4, subgroup_augment=4, seed=seed)
    subgroups = [order for order, kind in zip(out["order"], out["augmentation"]) if kind == "subgroup"]
    assert len(subgroups) == 4
    triples = sum(len(order) == 3 for order in subgroups)
    assert len(out) == 5 + 5 * triples + 2 * (4 - triples)
    assert 13 <= len(out) <= 25


def test_rlvr_n4_exhaustive():
    # all 4! - 1 = 23 shuffles of the full group (asking for more is clipped) -> 24;
    # all 10 subgroups: 4 triples * 3! + 6 pairs * 2! = 24 + 12 = 36 -> 60
    out = build_judge_rlvr_dataset(ranking_ds([group_of(4)]), shuffle_augment=100, subgroup_augment=100, seed=0)
    assert len(out) == 24 + 4 * 6 + 6 * 2 == 60
    assert sorted(map(tuple, out["order"])) == sorted(
        perm for size in (2, 3, 4) for subset in itertools.combinations(range(4), size)
        for perm in itertools.permutations(subset)
    )


def test_rlvr_without_augmentation_is_one_row_per_group():
    ds = ranking_ds([group_of(4), group_of(2), group_of(3)])
    out = build_judge_rlvr_dataset(ds, shuffle_augment=0, subgroup_augment=0)
    assert out["order"] == [[0, 1, 2, 3], [0, 1], [0, 1, 2]]
    assert out["source_index"] == [0, 1, 2] and set(out["augmentation"]) == {"original"}


def test_rlvr_subgroups_of_a_large_group_use_sampling():
    # 14 candidates: too many subsets to list, so they are drawn; sizes stay within 2..13, original order kept
    texts, _ = group_of(14)
    out = build_judge_rlvr_dataset(ranking_ds([(texts, [i % 11 for i in range(14)])]), shuffle_augment=0,
                                   subgroup_augment=5, seed=3)
    subgroups = [order for order, kind in zip(out["order"], out["augmentation"]) if kind == "subgroup"]
    assert len(subgroups) == 5 and len(set(map(tuple, subgroups))) == 5
    assert all(2 <= len(o) <= 13 and o == sorted(o) for o in subgroups)


# --- RLVR: content of rows ------------------------------------------------------------------------------------------


def test_rlvr_prompt_is_byte_exact_and_carries_no_label():
    analysis = "Only C keeps the idiom; the scores below are secret."
    ds = ranking_ds([(FROG_MT, [7, 2, 10], analysis)], src=FROG)
    out = build_judge_rlvr_dataset(ds, shuffle_augment=1, subgroup_augment=0, seed=0)
    assert out["augmentation"] == ["original", "shuffle"]
    assert out[0]["prompt"] == [
        {
            "role": "user",
            "content": "Given a source text in English and multiple translation candidates in Chinese. Perform a step "
            "by step analysis and comparison of the translation quality for the candidates. Finally, rank and score "
            "the candidates with integer scores on a scale from 0 to 10.\n\nSource text:\n```\nI have a frog in my "
            "throat.\n```\n\nTranslation A:\n```\n我嗓子有点哑。\n```\nTranslation B:\n```\n我嗓子眼里好像有只青蛙。\n"
            "```\nTranslation C:\n```\n我喉咙不舒服。\n```\n",
        }
    ]
    for row in out:
        content = row["prompt"][0]["content"]
        # The template's only digits are its "0 to 10" scale; no label, analysis or answer section gets in.
        assert re.findall(r"\d+", content) == ["0", "10"]
        assert analysis not in content and "Ranking" not in content and "Scores:" not in content
        assert "ground_truth" not in content and row["ground_truth"] not in content


def test_rlvr_row_shape_and_no_stale_metadata():
    ds = ranking_ds([(FROG_MT, [8, 3, 5], "An analysis naming A, B and C.")], src=FROG)
    out = build_judge_rlvr_dataset(ds, shuffle_augment=2, subgroup_augment=1, seed=0)
    assert out.features == RLVR_FEATURES
    assert "analysis" not in out.column_names and "mt_texts" not in out.column_names
    first = out[0]
    assert first["prompt"][0]["role"] == "user" and len(first["prompt"]) == 1
    assert first["ground_truth"] == '{"A": 8, "B": 3, "C": 5}'
    assert (first["src_lang"], first["trg_lang"], first["source_index"]) == ("en", "zh", 0)
    assert "in English and multiple translation candidates in Chinese" in first["prompt"][0]["content"]


def test_rlvr_orders_are_new_and_subgroups_keep_order_and_absolute_scores():
    texts, scores = group_of(4)
    out = build_judge_rlvr_dataset(ranking_ds([(texts, scores)]), shuffle_augment=4, subgroup_augment=4, seed=1)
    rows = out.to_list()
    by_group: dict[frozenset, list[list[int]]] = {}
    for row in rows:
        by_group.setdefault(frozenset(row["order"]), []).append(row["order"])
        truth = json.loads(row["ground_truth"])
        assert truth == {CANDIDATE_IDS[i]: scores[o] for i, o in enumerate(row["order"])}  # absolute scores
        if row["augmentation"] in ("original", "subgroup"):
            assert row["order"] == sorted(row["order"])
        else:
            assert row["order"] != sorted(row["order"])
    for orders in by_group.values():
        assert len(orders) == len(set(map(tuple, orders)))  # no order twice


def test_rlvr_oracle_answer_earns_full_reward_and_stale_truth_does_not():
    texts, scores = group_of(3)
    out = build_judge_rlvr_dataset(ranking_ds([(texts, scores)]), shuffle_augment=5, subgroup_augment=0, seed=0)
    reward = RankingReward()
    for row in out:
        truth = json.loads(row["ground_truth"])
        oracle = format_gqm_answer("Analysis.", truth)
        assert reward(prompts=[row["prompt"]], completions=[oracle], ground_truth=[row["ground_truth"]]) == [2.0]
        if row["augmentation"] == "shuffle":
            # answering with the unshuffled letters must not score full marks: the truth really was remapped
            stale = format_gqm_answer("Analysis.", dict(zip("ABC", scores)))
            assert reward(prompts=[row["prompt"]], completions=[stale], ground_truth=[row["ground_truth"]])[0] < 2.0


# --- RLVR: dedup and seeding ----------------------------------------------------------------------------------------


def test_rlvr_dedup_identical_candidates_and_repeated_rows():
    # ["x", "x", "y"] with scores [5, 5, 3]: only 3 distinct arrangements -> original + 2 shuffles.
    # Distinct-looking subgroups: (x, x) and (x, y) [(0, 2) and (1, 2) look the same] -> 1 row + 2 rows.
    # Total 3 + 1 + 2 = 6. The same row again adds nothing: everything it could produce is already there.
    dup = (["x", "x", "y"], [5, 5, 3])
    once = build_judge_rlvr_dataset(ranking_ds([dup]), shuffle_augment=4, subgroup_augment=4, seed=0)
    assert len(once) == 6
    twice = build_judge_rlvr_dataset(ranking_ds([dup, dup]), shuffle_augment=4, subgroup_augment=4, seed=0)
    assert len(twice) == 6 and set(twice["source_index"]) == {0}


@pytest.mark.parametrize("seed", range(10))
def test_rlvr_look_alike_subgroups_do_not_spend_the_budget(seed):
    # Two distinct-looking subgroups exist, (x, x) and (x, y); asking for two must always give both (1 + 2 rows),
    # whichever of the look-alike index pairs (0, 2) / (1, 2) stands for (x, y). Total 3 + 1 + 2 = 6.
    dup = (["x", "x", "y"], [5, 5, 3])
    out = build_judge_rlvr_dataset(ranking_ds([dup]), shuffle_augment=4, subgroup_augment=2, seed=seed)
    assert len(out) == 6


def test_rlvr_never_emits_the_same_prompt_and_truth_twice():
    groups = [group_of(4), group_of(4), (["a", "b", "a", "b"], [3, 7, 3, 7]), group_of(3), group_of(2)]
    out = build_judge_rlvr_dataset(ranking_ds(groups), shuffle_augment=6, subgroup_augment=6, seed=5)
    keys = [(row["prompt"][0]["content"], row["ground_truth"]) for row in out]
    assert len(keys) == len(set(keys))


def test_same_text_with_different_scores_is_dropped_with_a_counted_warning():
    # Row 1 shows "x" twice as 5 and 3; row 3 has identical candidates with equal scores, which is consistent.
    groups = [group_of(3), (["x", "y", "x"], [5, 7, 3]), group_of(2), (["z", "z", "w"], [4, 4, 9])]
    ds = ranking_ds(groups)
    with pytest.warns(UserWarning, match=r"dropped 1 of 4 ranking rows .*different scores.*rows 1$"):
        rlvr = build_judge_rlvr_dataset(ds, shuffle_augment=0, subgroup_augment=0)
    assert rlvr["source_index"] == [0, 2, 3]
    assert all('"x"' not in json.dumps(row["prompt"]) for row in rlvr)
    with pytest.warns(UserWarning, match=r"dropped 1 of 4 ranking rows .*rows 1$"):
        sft = build_judge_sft_dataset(ds)
    assert len(sft) == 3
    assert not any("Translation B:\n```\ny\n```" in row["messages"][0]["content"] for row in sft)
    # No contradiction, no warning (pytest turns an unexpected warning into an error here).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(build_judge_rlvr_dataset(ranking_ds([groups[3]]), shuffle_augment=0, subgroup_augment=0)) == 1


def test_rlvr_is_reproducible_seed_dependent_and_leaves_global_state_alone():
    ds = ranking_ds([group_of(4), group_of(3), group_of(4)])
    random.seed(1)
    np.random.seed(1)
    py_state, np_state = random.getstate(), np.random.get_state()
    first = build_judge_rlvr_dataset(ds, seed=7).to_list()
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
               for a, b in zip(np.random.get_state(), np_state))
    random.seed(99)
    np.random.seed(99)
    assert build_judge_rlvr_dataset(ds, seed=7).to_list() == first
    assert build_judge_rlvr_dataset(ds, seed=8).to_list() != first


@pytest.mark.parametrize("seed", range(3))
def test_rlvr_rows_do_not_depend_on_earlier_rows(seed):
    """Each row draws from its own generator: a different row 0 (other draw counts) leaves row 1's augmentations."""
    six = ([f"other {i}" for i in range(6)], [1, 2, 3, 4, 5, 6])
    rows = [build_judge_rlvr_dataset(ranking_ds([first, group_of(5)]), seed=seed) for first in (group_of(2), six)]
    row1 = [[(r["order"], r["augmentation"]) for r in out if r["source_index"] == 1] for out in rows]
    assert row1[0] == row1[1] and len(row1[0]) > 5


def test_rlvr_rows_do_not_depend_on_later_rows():
    ds = ranking_ds([group_of(4), group_of(3)])
    longer = ranking_ds([group_of(4), group_of(3), group_of(4)])
    a = build_judge_rlvr_dataset(ds, seed=2).to_list()
    b = build_judge_rlvr_dataset(longer, seed=2).to_list()
    assert b[: len(a)] == a


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"shuffle_augment": -1}, {"subgroup_augment": 1.5}])
def test_rlvr_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        build_judge_rlvr_dataset(ranking_ds([group_of(3)]), **kwargs)


def test_rlvr_empty_dataset_keeps_the_schema():
    empty = Dataset.from_dict({c: [] for c in ("src_text", "src_lang", "trg_lang", "mt_texts", "scores")})
    out = build_judge_rlvr_dataset(empty)
    assert len(out) == 0 and out.features == RLVR_FEATURES


# --- remapping property -----------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_arrange_group_puts_each_candidate_with_its_own_score(data):
    n = data.draw(st.integers(2, 8))
    texts = [f"text {i}" for i in range(n)]
    scores = data.draw(st.lists(st.integers(0, 10), min_size=n, max_size=n))
    size = data.draw(st.integers(2, n))
    subset = data.draw(st.permutations(range(n)))[:size]
    shown, truth = arrange_group(texts, scores, subset)
    assert list(truth) == list(CANDIDATE_IDS[:size])
    for letter, text in zip(truth, shown):
        assert truth[letter] == scores[texts.index(text)]


# Plain text mixed with the pieces that could break the layout: backtick runs, newlines, a fake candidate header.
_CANDIDATE_TEXT = st.lists(
    st.text(max_size=6) | st.sampled_from(["`", "```", "````", "\n", "\nTranslation B:\n```\n", " "]),
    min_size=1,
    max_size=6,
).map("".join)


@settings(max_examples=30, deadline=None)
@given(
    texts=st.lists(_CANDIDATE_TEXT, min_size=2, max_size=5, unique=True),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    shuffles=st.integers(0, 6),
    subgroups=st.integers(0, 4),
)
def test_rlvr_truth_describes_the_candidates_shown_under_each_letter(texts, data, seed, shuffles, subgroups):
    # For every row and letter: the text in the prompt under that letter is the original candidate whose score the
    # ground truth gives that letter, however the group was shuffled or cut down.
    scores = data.draw(st.lists(st.integers(0, 10), min_size=len(texts), max_size=len(texts)))
    out = build_judge_rlvr_dataset(
        ranking_ds([(texts, scores)]), shuffle_augment=shuffles, subgroup_augment=subgroups, seed=seed
    )
    assert len(out) >= 1
    for row in out:
        truth = json.loads(row["ground_truth"])
        shown = shown_candidates(row["prompt"][0]["content"])
        assert list(shown) == list(truth) == list(CANDIDATE_IDS[: len(row["order"])])
        for position, letter in enumerate(truth):
            original = texts.index(shown[letter])
            assert original == row["order"][position]
            assert truth[letter] == scores[original]
