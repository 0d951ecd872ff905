"""The GRAM pairwise judge format: the prompt, the verdict tokens, and the maths that turns their log-probabilities
into P(response 1 is better).

GRAM generates nothing: it reads the next-token distribution after the prompt and compares the tokens ``"A"`` and
``"B"`` (no leading space). The prompt is byte for byte the one the released GRAM models were fine-tuned and
evaluated on, the one that ends in ``#Preferred: `` (the upstream demo script leaves that line out, so its prompt is
not the one the models saw in training). It is sent as a single user message; for Qwen3-based GRAM checkpoints the
chat template must be rendered with thinking disabled.

The maths follows the corrected upstream evaluation script: a softmax over the two verdict logits only, in each
order, then the mean of the two orders. The functions here take one order at a time, so the upstream demo's bug (a
softmax across the two orders instead of across ``{"A", "B"}``) cannot be written with them.

A verdict token outside the top-k that an engine returned: its log-probability is replaced by the smallest log-prob
the engine did return (``floor``), which is an upper bound on it. The probability of the token that is present is
then a *lower* bound on the exact value, so the reader never overstates the judge's confidence, and a very
confident judge (the other token far down the list) still gives a usable, near-certain verdict instead of being
thrown away. The order is marked ``bounded`` so that callers can count it. When both tokens are missing, or one is
missing and the engine reported no floor, the order carries no verdict and :class:`GRAMVerdictError` is raised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

VERDICT_TOKENS: tuple[str, str] = ("A", "B")
"""The verdict tokens, exactly as GRAM was trained to emit them: ``"A"`` if assistant A is better, else ``"B"``."""

_INSTRUCTIONS = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better.\n"
    "Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and "
    "level of detail of their responses. Avoid any position biases and ensure that the order in which the responses "
    "were presented does not influence your decision. Do not allow the length of the responses to influence your "
    "evaluation. Do not favor certain names of the assistants. Be as objective as possible.\n"
    'Please directly output your final verdict by strictly following this format: "A" if assistant A is better, '
    '"B" if assistant B is better.\n'
)
_SUFFIX = "\n#Preferred: "


def build_gram_prompt(question: str, response_a: str, response_b: str) -> str:
    """The GRAM user message that asks which of two responses answers ``question`` better.

    The texts are inserted as they are (no ``str.format``, so braces in them are harmless). The answer the judge is
    scored on is the very next token, ``"A"`` or ``"B"``.

    Example:
        >>> prompt = build_gram_prompt("2+2?", "4", "5")
        >>> print(prompt[prompt.index("[User Question]"):])
        [User Question]
        2+2?
        <BLANKLINE>
        [The Start of Assistant A's Answer]
        4
        [The End of Assistant A's Answer]
        <BLANKLINE>
        [The Start of Assistant B's Answer]
        5
        [The End of Assistant B's Answer]
        <BLANKLINE>
        #Preferred: 
        >>> prompt.endswith("#Preferred: ")
        True
    """
    return (
        f"{_INSTRUCTIONS}\n[User Question]\n{question}\n\n"
        f"[The Start of Assistant A's Answer]\n{response_a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{response_b}\n[The End of Assistant B's Answer]\n{_SUFFIX}"
    )


@dataclass(frozen=True)
class GRAMPrompt:
    """The parts of a prompt built by :func:`build_gram_prompt`."""

    question: str
    response_a: str
    response_b: str


_PROMPT_RE = re.compile(
    re.escape(_INSTRUCTIONS)
    + r"\n\[User Question\]\n(?P<question>.*)\n\n"
    + r"\[The Start of Assistant A's Answer\]\n(?P<a>.*)\n\[The End of Assistant A's Answer\]\n\n"
    + r"\[The Start of Assistant B's Answer\]\n(?P<b>.*)\n\[The End of Assistant B's Answer\]\n"
    + re.escape(_SUFFIX),
    re.S,
)


def parse_gram_prompt(prompt: str) -> GRAMPrompt:
    """Recover the question and both responses from a GRAM prompt (the inverse of :func:`build_gram_prompt`).

    Responses that themselves contain the section markers make the split ambiguous; test servers use this, not
    training.

    Example:
        >>> parse_gram_prompt(build_gram_prompt("2+2?", "4", "5"))
        GRAMPrompt(question='2+2?', response_a='4', response_b='5')
    """
    match = _PROMPT_RE.fullmatch(prompt)
    if not match:
        raise ValueError("not a GRAM judge prompt")
    return GRAMPrompt(match["question"], match["a"], match["b"])


class GRAMVerdictError(ValueError):
    """One order of a GRAM comparison gives no verdict: its verdict tokens are missing or not finite numbers."""


def two_way_probability(logprob_a: float, logprob_b: float) -> float:
    """P("A") in a softmax restricted to the two verdict tokens.

    Log-probabilities over the full vocabulary and raw logits give the same result: the normaliser cancels.

    Example:
        >>> round(two_way_probability(0.0, -5.0), 6)  # logits 5 and 0: sigmoid(5)
        0.993307
        >>> two_way_probability(-1000.0, -1000.0)
        0.5
    """
    margin = logprob_a - logprob_b
    # Written as a sigmoid of the margin, stable for margins of any size.
    if margin >= 0:
        return 1.0 / (1.0 + math.exp(-margin))
    exp_margin = math.exp(margin)
    return exp_margin / (1.0 + exp_margin)


@dataclass(frozen=True)
class OrderVerdict:
    """What one order of a comparison says: ``p_a`` = P("A") over the two verdict tokens.

    ``bounded`` is ``True`` when a verdict token was outside the engine's top-k and its log-probability was replaced
    by the floor: ``p_a`` is then a lower bound on the exact value when "A" was present, an upper bound when "B" was.
    """

    p_a: float
    bounded: bool = False


def read_order(
    verdict_logprobs: Mapping[str, float] | None,
    floor: float | None = None,
    verdict_tokens: tuple[str, str] = VERDICT_TOKENS,
) -> OrderVerdict:
    """Turn the log-probabilities an engine returned for one prompt into an :class:`OrderVerdict`.

    ``floor``: the smallest log-probability among those the engine returned (its top-k), or ``None`` when the engine
    returns every verdict token (a full forward pass). See the module docstring for why a missing token is bounded
    by it. Raises :class:`GRAMVerdictError` when both tokens are missing, or one is and there is no floor.

    Example:
        >>> read_order({"A": -0.01, "B": -4.6}).bounded
        False
        >>> verdict = read_order({"A": -0.5}, floor=-8.5)  # "B" not among the top-k: log P(B) <= -8.5
        >>> verdict.bounded, round(verdict.p_a, 6)  # sigmoid(8), a lower bound on P("A")
        (True, 0.999665)
    """
    logprobs = dict(verdict_logprobs or {})
    token_a, token_b = verdict_tokens
    for token in (token_a, token_b):
        if token in logprobs and not math.isfinite(logprobs[token]) and logprobs[token] != -math.inf:
            raise GRAMVerdictError(f"log-probability of verdict token {token!r} is {logprobs[token]!r}")
    missing = [token for token in (token_a, token_b) if token not in logprobs or logprobs[token] == -math.inf]
    if len(missing) == 2:
        raise GRAMVerdictError(f"neither verdict token {token_a!r} nor {token_b!r} was among the engine's top-k")
    if missing:
        if floor is None or not math.isfinite(floor):
            raise GRAMVerdictError(
                f"verdict token {missing[0]!r} was not returned and the engine reported no top-k floor to bound it"
            )
        logprobs[missing[0]] = floor
    return OrderVerdict(p_a=two_way_probability(logprobs[token_a], logprobs[token_b]), bounded=bool(missing))


@dataclass(frozen=True)
class GRAMJudgment:
    """GRAM's verdict on a pair (response 1, response 2), judged in both orders.

    ``p_first_better`` = ½·[P("A" | response 1 shown as A) + P("B" | response 1 shown as B)]; P(response 2 better) is
    ``1 - p_first_better``. ``order_probabilities`` holds the two terms, so their difference shows position bias.
    ``bounded_orders`` counts the orders (0-2) in which a verdict token was outside the engine's top-k.
    """

    p_first_better: float
    order_probabilities: tuple[float, float]
    bounded_orders: int


def gram_preference(first_as_a: OrderVerdict, first_as_b: OrderVerdict) -> GRAMJudgment:
    """Combine the two orders of one pair into P(response 1 is better).

    ``first_as_a`` is the verdict on the prompt with response 1 as assistant A, ``first_as_b`` the one with response 1
    as assistant B.

    Example:
        >>> confident = gram_preference(OrderVerdict(p_a=0.99), OrderVerdict(p_a=0.01))
        >>> round(confident.p_first_better, 6)
        0.99
        >>> always_a = gram_preference(OrderVerdict(p_a=0.9), OrderVerdict(p_a=0.9))  # pure position bias
        >>> round(always_a.p_first_better, 6), always_a.order_probabilities
        (0.5, (0.9, 0.09999999999999998))
    """
    from_first = first_as_a.p_a
    from_second = 1.0 - first_as_b.p_a
    return GRAMJudgment(
        p_first_better=(from_first + from_second) / 2,
        order_probabilities=(from_first, from_second),
        bounded_orders=int(first_as_a.bounded) + int(first_as_b.bounded),
    )
