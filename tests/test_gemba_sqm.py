"""The reference-based LLM-judge metric of eval-mt (GEMBA-SQM style) and the pointwise score parsers it shares
failure handling with."""

from __future__ import annotations

import pytest

from trl_grrm.engines import JudgeConfig, JudgeOutput
from trl_grrm.evaluation.mt import EvalItem, llm_judge_scores
from trl_grrm.formats.gemba_sqm import GembaSQMParseError, build_gemba_sqm_prompt, parse_gemba_sqm_output
from trl_grrm.formats.sqm import SQMParseError, parse_sqm_output
from trl_grrm.testing.scripted_engine import ScriptedEngine


@pytest.mark.parametrize(
    ("answer", "score"),
    [("Fine.\n92", 92), ("Meaning kept.\n**Score: 85/100**", 85), ("ok\n0", 0), ("ok\n100/100", 100)],
)
def test_gemba_answers_that_parse(answer, score):
    assert parse_gemba_sqm_output(answer) == score


@pytest.mark.parametrize(
    "answer",
    ["", "no score here", "ok\n101", "ok\n70 or 80", "ok\n" + "9" * 5000, "Score: 85\nthen some prose"],
)
def test_gemba_answers_that_do_not_parse(answer):
    with pytest.raises(GembaSQMParseError):
        parse_gemba_sqm_output(answer)


def test_pointwise_score_with_thousands_of_digits_is_a_parse_error():
    with pytest.raises(SQMParseError, match="5000 digits"):
        parse_sqm_output("ok\n" + "1" * 5000)


def test_gemba_prompt_shows_source_reference_and_translation_in_that_order():
    prompt = build_gemba_sqm_prompt("Hi.", "Salut.", "Bonjour.", "en", "fr")
    assert prompt.index("English source text") < prompt.index("French human reference") < prompt.index(
        "French translation"
    )
    assert prompt.index("Hi.") < prompt.index("Bonjour.") < prompt.index("Salut.")


def _item(index: int, hypothesis: str | None, reference: str | None = "Bonjour.") -> EvalItem:
    item = EvalItem(index, "Hi.", "en", "fr", reference, prompt="p")
    item.responses = ["r"]
    item.hypotheses = [hypothesis]
    return item


def test_llm_judge_scores_each_hypothesis_and_counts_every_outcome():
    def answer(prompt: str, attempt: int, sampling) -> str | JudgeOutput:
        if "good" in prompt:
            return "Close to the reference.\n90"
        if "rambling" in prompt:  # cut on the first try, complete on the re-ask
            return JudgeOutput(text="It goes on and", error="truncated") if attempt == 0 else "ok\n40"
        return "I cannot decide."  # never parses

    engine = ScriptedEngine(answer)
    items = [_item(0, "good"), _item(1, "rambling"), _item(2, "mystery"), _item(3, None), _item(4, "good", None)]
    judge = JudgeConfig(model="judge", backend="transformers", max_parse_retries=2)
    summary = llm_judge_scores(items, judge, engine=engine)
    assert [item.llm_judge for item in items] == [90.0, 40.0, None, 0.0, None]
    assert summary["judged"] == 2 and summary["extraction_failed"] == 1 and summary["failed_parse_failed"] == 1
    # the failed extraction and the item without a reference were never sent; the mystery was asked 3 times
    assert sum("mystery" in p for p in engine.prompts) == 3
    assert not any("Bonjour." not in p for p in engine.prompts)
