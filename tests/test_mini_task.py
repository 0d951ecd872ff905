"""The miniature translation task: grammar, reference by rule, oracle, perturbations, judge data."""

import json
import random
import re

import pytest

from trl_grrm.data.judge_builders import build_judge_sft_dataset
from trl_grrm.formats.gqm import parse_gqm_output
from trl_grrm.formats.sqm import parse_sqm_output
from trl_grrm.mini.judge_data import (
    Teacher,
    add_tally,
    as_taught,
    blind_spot_pairs,
    build_ranking_dataset,
    build_reading_dataset,
    build_sqm_sft_dataset,
    describe_candidate,
    group_analysis,
    tally_line,
)
from trl_grrm.mini.task import (
    IDIOM_TARGET,
    SOURCE_WORDS,
    TARGET_WORDS,
    GrammarSettings,
    align,
    errors_to_score,
    is_number_error,
    oracle_errors,
    oracle_score,
    perturb,
    sample_source,
    translate,
    wrong_agreement,
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # Worked out by hand from the lexicon: SOV, adverb first, adjective after noun, -en plural, verb agrees.
        ("ri bero mab tapa ka kiro nalu", "kwe taluen ilk besk seko"),
        ("ka mab tapa ri soru", "talu dranen seka"),
        ("ka soma pune bado ri ruda vena", "orim anu piloen iru fapa"),
        # The idiom, with a plural subject (it does not agree) and with an adverb.
        ("ri mab tapa ka soru", "taluen velomi"),
        ("ka mab tapa ka soru huta", "tro talu velomi"),
        # Not the idiom: an adjective or a plural object makes it literal.
        ("ka mab tapa ka bero soru", "talu dran ilk seka"),
    ],
)
def test_reference_is_made_by_the_rules(source, expected):
    assert translate(source) == expected


@pytest.mark.parametrize(
    ("source", "word"),
    [("ka mab", "the end"), ("xo mab tapa ka kiro", "'xo'"), ("ka mab tapa ka kiro nalu ka", "'nalu'")],
)
def test_ungrammatical_source_is_rejected_naming_the_word(source, word):
    with pytest.raises(ValueError, match=word):
        translate(source)


def test_lexicon_size_is_within_the_issue_range():
    assert len(SOURCE_WORDS) == 34
    assert len(TARGET_WORDS) == 53  # 12 nouns x 2 numbers + 8 verbs x 2 + idiom + 8 adjectives + 4 adverbs
    assert 50 <= len(set(SOURCE_WORDS) | set(TARGET_WORDS)) <= 100


def test_reference_scores_ten():
    rng = random.Random(0)
    for _ in range(200):
        reference = translate(sample_source(rng))
        assert oracle_errors(reference, reference) == 0
        assert oracle_score(reference, reference) == 10


@pytest.mark.parametrize(
    ("candidate", "errors"),
    [
        ("kwe taluen ilk besk seka", 1),  # agreement
        ("kwe taluen besk seko", 1),  # missing adjective
        ("kwe taluen ilk besk seko psa", 1),  # extra word
        ("kwe ilk taluen besk seko", 1),  # adjacent words swapped
        ("kwe taluen ilk fron seko", 1),  # wrong word
        ("kwe talu ilk seko besk", 2),  # agreement + order
        ("seko besk", 4),  # three missing + swapped
        ("", 5),
    ],
)
def test_oracle_counts_errors_by_hand(candidate, errors):
    assert oracle_errors(candidate, "kwe taluen ilk besk seko") == errors
    assert oracle_score(candidate, "kwe taluen ilk besk seko") == max(0, 10 - 2 * errors)


def test_injected_errors_lower_the_score_monotonically():
    rng = random.Random(1)
    for _ in range(50):
        reference = translate(sample_source(rng))
        scores = [oracle_score(perturb(reference, k, rng), reference) for k in range(6)]
        assert scores == [10, 8, 6, 4, 2, 0]


def test_perturb_rejects_unknown_error_kind():
    with pytest.raises(ValueError, match="unknown error kind"):
        perturb("talu velomi", 1, random.Random(0), kinds=["typo"])


def test_datasets_are_deterministic_under_a_seed():
    first = build_ranking_dataset(30, seed=3)
    assert first.to_dict() == build_ranking_dataset(30, seed=3).to_dict()
    assert first.to_dict() != build_ranking_dataset(30, seed=4).to_dict()


def test_heldout_set_never_reuses_a_training_source():
    train = build_ranking_dataset(300, seed=0)
    heldout = build_ranking_dataset(100, seed=1, exclude_sources=train["src_text"])
    assert not set(heldout["src_text"]) & set(train["src_text"])


def test_sft_rows_from_the_package_builder_carry_the_oracle_scores():
    ranking = build_ranking_dataset(40, seed=5, group_sizes=(2, 3, 4))
    rows = build_judge_sft_dataset(ranking)
    assert len(rows) == 40
    for row, group in zip(rows, ranking):
        ids = "ABCD"[: len(group["mt_texts"])]
        judgment = parse_gqm_output(row["messages"][1]["content"], ids)
        reference = translate(group["src_text"])
        assert judgment.ordered_scores(ids) == [oracle_score(t, reference) for t in group["mt_texts"]]
        assert judgment.analysis.startswith(f"My translation: {reference}\n")


def test_analysis_line_counts_each_candidates_errors():
    analysis = group_analysis("ka mab tapa ri soru", ["talu dranen seka", "talu dran seka psa"])
    assert analysis.splitlines() == [
        "My translation: talu dranen seka",
        "A: no errors",
        "B: dranen written as dran; extra psa; 2 errors",
    ]


@pytest.mark.parametrize("style", ["compare", "walk", "count"])
def test_tally_read_left_to_right_is_the_answers_ranking(style):
    ranking = add_tally(build_ranking_dataset(60, seed=8, group_sizes=(2, 3, 4), style=style))
    for group, row in zip(ranking, build_judge_sft_dataset(ranking)):
        answer = row["messages"][1]["content"]
        tally = answer.split("\n\n### Final Ranking")[0].splitlines()[-1]
        assert tally.startswith("Tally: ")
        buckets = [re.fullmatch(r"(.+?) ([A-D](?: [A-D])*|-)", b) for b in tally.removeprefix("Tally: ").split("; ")]
        assert all(buckets), tally
        labels = [bucket[1] for bucket in buckets]
        assert labels == ["no errors", "1 error", "2 errors", "3 errors", "4 errors", "5 or more errors"]
        ids = [bucket[2].split() if bucket[2] != "-" else [] for bucket in buckets]
        assert sorted(sum(ids, [])) == list("ABCD"[: len(group["mt_texts"])])
        judgment = parse_gqm_output(answer, "ABCD"[: len(group["mt_texts"])])
        assert [tier for tier in ids if tier] == judgment.ranking


def test_tally_caps_the_count_where_the_score_reaches_zero():
    expected = "Tally: no errors A; 1 error -; 2 errors -; 3 errors -; 4 errors -; 5 or more errors B C"
    assert tally_line([0, 7, 5]) == expected


def test_sqm_rows_end_with_the_oracle_score():
    ranking = build_ranking_dataset(10, seed=6)
    rows = build_sqm_sft_dataset(ranking)
    scores = [score for group in ranking for score in group["scores"]]
    assert [parse_sqm_output(row["messages"][1]["content"]) for row in rows] == scores


def test_reading_drills_copy_every_candidate_by_its_letter_in_varied_orders():
    ranking = build_ranking_dataset(40, seed=8)
    drills = build_reading_dataset(ranking, seed=1)
    sft = build_judge_sft_dataset(ranking)
    orders = set()
    for group, drill, conversation in zip(ranking, drills, sft):
        # The prompt is the judge's own GQM prompt, byte for byte.
        assert drill["messages"][0] == conversation["messages"][0]
        lines = drill["messages"][1]["content"].splitlines()
        letters = [line.split(": ", 1)[0] for line in lines]
        assert sorted(letters) == list("ABCD"[: len(group["mt_texts"])])
        for line in lines:
            letter, text = line.split(": ", 1)
            assert text == group["mt_texts"]["ABCD".index(letter)]
        orders.add(tuple(letters))
    assert len(orders) > 5
    assert build_reading_dataset(ranking, seed=1)["messages"] == drills["messages"]


def test_ranking_dataset_feeds_the_rlvr_builder_and_the_evaluator():
    from trl_grrm.data.judge_builders import build_judge_rlvr_dataset
    from trl_grrm.evaluation.ranking import groups_from_dataset

    ranking = build_ranking_dataset(5, seed=7, group_sizes=(3,))
    rlvr = build_judge_rlvr_dataset(ranking, shuffle_augment=0, subgroup_augment=0)
    assert [json.loads(truth) for truth in rlvr["ground_truth"]] == [
        dict(zip("ABC", scores)) for scores in ranking["scores"]
    ]
    groups = groups_from_dataset(ranking)
    assert [g.language_pair for g in groups] == ["Aklan-Berun"] * 5


def test_wrong_agreement_flips_the_verb_number_only():
    rng = random.Random(5)
    sources = [sample_source(rng, GrammarSettings(idiom=0.3)) for _ in range(200)]
    assert any(translate(s).split()[-1] == IDIOM_TARGET for s in sources)
    for source in sources:
        reference = translate(source)
        changed = wrong_agreement(reference)
        if reference.split()[-1] == IDIOM_TARGET:
            assert changed == reference
        else:
            assert oracle_errors(changed, reference) == 1 and wrong_agreement(changed) == reference


def test_full_alignment_path_spells_out_both_texts_and_counts_the_oracle_errors():
    rng = random.Random(7)
    for _ in range(300):
        reference = translate(sample_source(rng))
        candidate = perturb(reference, rng.randint(0, 4), rng)
        path = align(candidate, reference, with_matches=True)
        rebuilt_reference, rebuilt_candidate = [], []
        for step in path:
            if step.kind == "order":
                first, second = step.reference.split()
                rebuilt_reference += [first, second]
                rebuilt_candidate += [second, first]
                continue
            rebuilt_reference += [step.reference] if step.reference else []
            rebuilt_candidate += [step.candidate] if step.candidate else []
        assert rebuilt_reference == reference.split()
        assert rebuilt_candidate == candidate.split()
        assert sum(step.kind != "same" for step in path) == oracle_errors(candidate, reference)
        errors = describe_candidate(candidate, reference, "count")
        assert describe_candidate(candidate, reference, "walk").endswith(f"; {errors}")


def test_walk_analysis_reads_both_texts_in_order():
    assert describe_candidate("talu dran seka psa", "talu dranen seka", "walk") == (
        "talu dranen as dran seka extra psa; 2 errors"
    )
    assert describe_candidate("dranen talu seka", "talu dranen seka", "walk") == "talu dranen wrong order seka; 1 error"
    assert describe_candidate("talu dranen seka", "talu dranen seka", "walk") == "talu dranen seka; no errors"


@pytest.mark.parametrize("blind_spot", ["missing", "number"])
def test_a_blind_teacher_overlooks_only_its_blind_spot_at_its_rate_and_always_alike(blind_spot):
    in_blind_spot = {"missing": lambda step: step.kind == "missing", "number": is_number_error}[blind_spot]
    teacher = Teacher(overlook=0.7, blind_spot=blind_spot)
    rng = random.Random(11)
    in_spot = overlooked = 0
    for _ in range(600):
        reference = translate(sample_source(rng))
        candidate = perturb(reference, rng.randint(0, 4), rng)
        seen, path = teacher.path(candidate, reference), align(candidate, reference, with_matches=True)
        assert len(seen) == len(path)
        for step, truth in zip(seen, path):
            if step != truth:  # an overlooked error reads as the reference's own word
                assert in_blind_spot(truth) and step.kind == "same" and step.candidate == truth.reference
        in_spot += sum(map(in_blind_spot, path))
        overlooked += sum(step != truth for step, truth in zip(seen, path))
        assert teacher.errors(candidate, reference) == sum(step.kind != "same" for step in seen)
        assert teacher.path(candidate, reference) == seen  # one candidate, one analysis
        assert Teacher().path(candidate, reference) == path
        count = describe_candidate(candidate, reference, "count", teacher)
        assert describe_candidate(candidate, reference, "walk", teacher).endswith(f"; {count}")
    assert in_spot > 100 and 0.6 < overlooked / in_spot < 0.8


@pytest.mark.parametrize("blind_spot", ["missing", "number"])
def test_blind_spot_pairs_are_those_whose_order_turns_on_the_blind_spot(blind_spot):
    in_blind_spot = {"missing": lambda step: step.kind == "missing", "number": is_number_error}[blind_spot]

    def order(a: int, b: int) -> int:
        return (a > b) - (a < b)

    decided = total = 0
    for row in build_ranking_dataset(300, seed=5, max_errors=3, group_sizes=(4,)):
        reference, texts = translate(row["src_text"]), row["mt_texts"]
        unseen = [errors_to_score(oracle_errors(text, reference)
                                  - sum(map(in_blind_spot, align(text, reference, with_matches=True))))
                  for text in texts]  # fmt: skip
        expected = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))
                    if order(row["scores"][i], row["scores"][j]) != order(unseen[i], unseen[j])]  # fmt: skip
        assert blind_spot_pairs(texts, reference, blind_spot) == expected
        decided, total = decided + len(expected), total + 6
    assert 0.02 < decided / total < 0.6  # some pairs, not all


def test_blind_teacher_labels_sft_data_while_the_oracle_scores_stay_for_rlvr():
    teacher = Teacher(overlook=1.0)
    ranking = build_ranking_dataset(40, seed=3, max_errors=2)
    taught = as_taught(ranking, teacher)
    assert taught["mt_texts"] == ranking["mt_texts"]
    references = [translate(source) for source in ranking["src_text"]]
    expected = [[errors_to_score(teacher.errors(text, reference)) for text in texts]
                for texts, reference in zip(ranking["mt_texts"], references)]  # fmt: skip
    assert taught["scores"] == expected != ranking["scores"]  # some candidates miss a word
    sqm = build_sqm_sft_dataset(taught, "walk", teacher)
    assert [parse_sqm_output(row["messages"][1]["content"]) for row in sqm] == [s for g in expected for s in g]
    assert not any(" missing " in row["messages"][1]["content"] for row in sqm)
    assert as_taught(ranking, Teacher()) is ranking
    with pytest.raises(ValueError, match="overlook"):
        Teacher(overlook=1.5)
    with pytest.raises(ValueError, match="blind spot"):
        Teacher(overlook=0.5, blind_spot="order")
