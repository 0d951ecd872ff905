"""The chrF stand-in judge: a local OpenAI-compatible server answering GRRM (GQM) and GRAM judge prompts with scores
from chrF against known references. It exercises the whole reward pipeline offline; it is **not** a GRRM judge.

``trl-grrm grpo-mt`` starts it when ``judge.backend`` is ``standin`` (the default when no judge is named), and the
tests use it as a judge whose answers are known.

Example:
    >>> server = start_standin_judge({"src_text": ["Hallo."], "trg_lang": ["en"], "trg_text": ["Hello."]})
    >>> server.base_url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
"""

from __future__ import annotations

from typing import Any

#: The model name the stand-in server answers to.
STANDIN_MODEL_NAME = "grrm-stand-in"


def standin_server_class() -> type:
    """The stand-in judge's server class (a :class:`~trl_grrm.testing.judge_server.JudgeServer`), built on first use so
    that importing this module loads neither sacrebleu nor the server."""
    from ..formats.gqm import CANDIDATE_IDS, format_gqm_answer, parse_gqm_prompt
    from .judge_server import JudgeServer

    class ReferenceStandInJudge(JudgeServer):
        """Answers GRRM judge prompts with chrF-against-the-reference scores (0-10), keyed by source text and
        target language, so Cross-Lingual Augmentation rows (no reference) are never scored against a reference in
        another language: their candidates all get 5 (a tie, i.e. no training signal)."""

        def __init__(self, references: dict[tuple[str, str], str], **kwargs: Any) -> None:
            from sacrebleu.metrics import CHRF

            super().__init__(**kwargs)
            self.references = references
            self._chrf = CHRF()

        def judge(self, prompt: str, temperature: float) -> str:
            parsed = parse_gqm_prompt(prompt)
            reference = self.references.get((parsed.source_text, parsed.target_language))
            ids = CANDIDATE_IDS[: len(parsed.candidates)]
            scores = {
                cid: 5 if reference is None else round(self._chrf.sentence_score(text, [reference]).score / 10)
                for cid, text in zip(ids, parsed.candidates)
            }
            basis = "no reference known: all tied" if reference is None else "chrF against the reference / 10"
            analysis = f"Stand-in judge ({basis})."
            return format_gqm_answer(analysis, scores)

        def gram_verdict_logprobs(self, prompt: str) -> dict[str, float]:
            """Pairwise (GRAM) prompts: P("A") = sigmoid((chrF(A) - chrF(B)) / 10) against the reference of the
            source the question contains (0.5 when none is known)."""
            import math

            from ..formats.gram import parse_gram_prompt

            parsed = parse_gram_prompt(prompt)
            reference = next((ref for (src, language), ref in self.references.items()
                              if src in parsed.question and language in parsed.question), None)
            margin = 0.0 if reference is None else (
                self._chrf.sentence_score(parsed.response_a, [reference]).score
                - self._chrf.sentence_score(parsed.response_b, [reference]).score
            ) / 10
            return {"A": -math.log1p(math.exp(-margin)), "B": -math.log1p(math.exp(margin))}

    return ReferenceStandInJudge


def start_standin_judge(dataset: Any, request_log: str | None = None):
    """Start the stand-in judge on a free loopback port (in this process, on a background thread), knowing the
    references of ``dataset`` (a ``datasets.Dataset`` or a mapping with the columns ``src_text``, ``trg_lang`` and
    ``trg_text``). Returns the started server (``base_url``, ``stop()``)."""
    from ..languages import language_name

    references = {
        (src, language_name(trg_lang)): trg
        for src, trg_lang, trg in zip(dataset["src_text"], dataset["trg_lang"], dataset["trg_text"])
        if trg is not None
    }
    server_class = standin_server_class()
    return server_class(references, host="127.0.0.1", port=0, model_name=STANDIN_MODEL_NAME,
                        request_log=request_log).start()
