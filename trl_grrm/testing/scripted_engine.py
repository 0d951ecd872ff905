"""An in-memory judge engine that answers from a Python function, for deterministic tests of the judging code."""

from __future__ import annotations

from collections.abc import Callable

from ..engines.base import JudgeEngine, JudgeOutput, Messages, SamplingSettings

Answer = Callable[[str, int, SamplingSettings], "str | JudgeOutput"]


class ScriptedEngine(JudgeEngine):
    """Answers every prompt with ``answer(prompt, attempt, sampling)`` and records what it was asked.

    ``prompt`` is the last message's content, ``attempt`` how many times this exact prompt was asked before. The
    function returns the answer text (a complete answer, ``finish_reason="stop"``) or a full
    :class:`~trl_grrm.engines.JudgeOutput` (e.g. ``error="truncated"``); whatever it raises (e.g.
    :class:`~trl_grrm.engines.JudgeConfigurationError`) propagates out of :meth:`generate`, as from a real engine.

    Example:
        >>> from trl_grrm.formats.gqm import format_gqm_answer
        >>> engine = ScriptedEngine(lambda prompt, attempt, sampling: format_gqm_answer("ok", {"A": 7, "B": 2}))
        >>> engine.generate([[{"role": "user", "content": "judge this"}]], SamplingSettings())[0].text.splitlines()[-1]
        'A: 7, B: 2'
        >>> engine.prompts, engine.calls
        (['judge this'], 1)
    """

    def __init__(self, answer: Answer, max_prompt_tokens: int | None = None) -> None:
        self.answer = answer
        self.max_prompt_tokens = max_prompt_tokens
        #: Every prompt (last message content) in the order it was asked, over all calls.
        self.prompts: list[str] = []
        #: The sampling settings of each ``generate`` call.
        self.samplings: list[SamplingSettings] = []
        self.closed = False

    @property
    def calls(self) -> int:
        """Number of ``generate`` calls so far."""
        return len(self.samplings)

    def generate(self, prompts: list[Messages], sampling: SamplingSettings) -> list[JudgeOutput]:
        self.samplings.append(sampling)
        outputs = []
        for messages in prompts:
            prompt = messages[-1]["content"]
            attempt = self.prompts.count(prompt)
            self.prompts.append(prompt)
            answer = self.answer(prompt, attempt, sampling)
            if isinstance(answer, str):
                answer = JudgeOutput(text=answer, completion_tokens=len(answer.split()), finish_reason="stop")
            outputs.append(answer)
        return outputs

    def count_prompt_tokens(self, prompts: list[Messages]) -> list[int] | None:
        # Whitespace words stand in for tokens, so tests can compute lengths by hand.
        return [len(messages[-1]["content"].split()) for messages in prompts]

    def close(self) -> None:
        self.closed = True
