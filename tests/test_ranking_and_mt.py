import pytest

from trl_grrm.formats.mt import (
    build_mt_prompt,
    completion_text,
    extract_codeblock,
    extract_codeblock_strict,
    extract_full,
    extract_last_line,
    get_extractor,
)
from trl_grrm.ranking import (
    format_ranking,
    pairwise_ranking_accuracy,
    parse_ranking,
    ranking_agrees_with_scores,
    score_gap_agreement,
    scores_to_ranking,
    tie_rate,
)
from trl_grrm.rewards.penalties import soft_overlong_penalty


def test_scores_to_ranking_orders_ties_alphabetically():
    assert format_ranking(scores_to_ranking({"C": 8, "A": 8, "B": 3, "D": 9})) == "D > A = C > B"


@pytest.mark.parametrize("bad", ["A >> B", "A > A", "A B", "A <B", "", "A >", "AB > C"])
def test_parse_ranking_rejects(bad):
    with pytest.raises(ValueError):
        parse_ranking(bad)


def test_ranking_agreement_needs_the_same_ids():
    assert not ranking_agrees_with_scores([["A"], ["B"]], {"A": 2, "B": 1, "C": 0})
    assert ranking_agrees_with_scores(parse_ranking("B = A > C"), {"A": 2, "B": 2, "C": 0})


def test_pairwise_accuracy_treats_ties_as_a_class():
    truth = {"A": 9, "B": 5, "C": 5}
    assert pairwise_ranking_accuracy({"A": 9, "B": 5, "C": 5}, truth) == 1.0
    # A>B right, A>C right, B vs C: predicted strict, true tie -> wrong.
    assert pairwise_ranking_accuracy({"A": 9, "B": 6, "C": 5}, truth) == pytest.approx(2 / 3)
    assert pairwise_ranking_accuracy({"A": 1, "B": 6, "C": 6}, truth) == pytest.approx(1 / 3)
    # Tie-lenient: the B/C pair (strict vs tie) earns half; a reversed order still earns nothing.
    assert pairwise_ranking_accuracy({"A": 9, "B": 6, "C": 5}, truth, tie_credit=0.5) == pytest.approx(2.5 / 3)
    assert pairwise_ranking_accuracy({"A": 1, "B": 6, "C": 6}, truth, tie_credit=0.5) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="ids differ"):
        pairwise_ranking_accuracy({"A": 1, "B": 2}, truth)


def test_score_gap_agreement_credit_table():
    truth = {"A": 8, "B": 3, "C": 3}
    predicted = {"A": 10, "B": 3, "C": 4}
    # A-B: |5-7|=2 -> 0.2 ; A-C: |5-6|=1 -> 0.6 ; B-C: |0-(-1)|=1 -> 0.6
    assert score_gap_agreement(predicted, truth) == pytest.approx((0.2 + 0.6 + 0.6) / 3)
    assert score_gap_agreement({"A": 8, "B": 0, "C": 3}, truth) == pytest.approx((0 + 1 + 0) / 3)


def test_tie_rate():
    assert tie_rate({"A": 1, "B": 1, "C": 2}) == pytest.approx(1 / 3)
    assert tie_rate({"A": 1}) == 0.0


def test_soft_overlong_penalty_ramp():
    kwargs = dict(max_tokens=100, buffer_tokens=40, penalty=0.5)
    assert soft_overlong_penalty(60, **kwargs) == 0.0
    assert soft_overlong_penalty(80, **kwargs) == pytest.approx(0.25)
    assert soft_overlong_penalty(100, **kwargs) == pytest.approx(0.5)
    assert soft_overlong_penalty(500, **kwargs) == pytest.approx(0.5)
    assert soft_overlong_penalty(500, max_tokens=None, buffer_tokens=40, penalty=0.5) == 0.0


def test_mt_prompt_codeblock_think_matches_the_seed():
    assert build_mt_prompt("The grass is always greener on the other side.", "en", "zh") == (
        "Translate the following text from English into Chinese. Perform a step by step analysis and output the "
        "final translation in a code block.\n\nSource text:\n```\nThe grass is always greener on the other side.\n```\n"
    )
    assert build_mt_prompt("a\nb", "de", "fr", style="tower") == "Translate the following text from German into French:\nGerman: a b\nFrench:"
    with pytest.raises(ValueError, match="Unknown MT prompt style"):
        build_mt_prompt("a", "en", "de", style="nope")


def test_extractors():
    think = "Step 1: look at `idiom`.\n```python\nprint()\n```\nFinal:\n```\n这山望着那山高。\n```"
    assert extract_codeblock(think) == "这山望着那山高。"
    assert extract_codeblock_strict(think) is None  # two blocks
    assert extract_codeblock_strict("Analysis.\n```\nHallo\n```\n") == "Hallo"
    assert extract_codeblock_strict("```\nHallo\n```\ntrailing words") is None
    assert extract_codeblock("```zh\n你好\n```") == "你好"
    assert extract_codeblock("no block here") is None
    assert extract_codeblock("```\n   \n```") is None
    assert extract_codeblock("unterminated ```\nHallo") is None
    assert extract_last_line("a\nb\n\n") == "b" and extract_last_line("  \n") is None
    assert extract_full("  x  ") == "x" and extract_full("") is None
    assert get_extractor(str.upper)("a") == "A"
    with pytest.raises(ValueError, match="Unknown translation extractor"):
        get_extractor("xml")
    # Your own, by import path: the miniature's language check refuses what is not one line of its target language.
    berun = get_extractor("trl_grrm.mini.task:berun_text")
    assert berun(" talu velomi\n") == "talu velomi" and berun("talu velomi qq") is None and berun("a\nb") is None
    with pytest.raises(ValueError, match="cannot import the translation extractor 'trl_grrm.mini.task:nope'"):
        get_extractor("trl_grrm.mini.task:nope")
    with pytest.raises(ValueError, match="cannot import"):
        get_extractor("no_such_module:f")
    with pytest.raises(ValueError, match="is not callable"):
        get_extractor("trl_grrm.mini.task:TARGET_WORDS")


def test_completion_text_handles_conversational_completions():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}]}]
    assert completion_text(blocks) == "a"
    assert completion_text([{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]) == "y"
