"""Judge inputs shared by the real-engine tests: five groups of 4 covering every fallback case, and TRL-style calls."""

import pytest

MAX_MODEL_LEN = 1024
MAX_JUDGE_TOKENS = 32
INVALID_REWARD = -1.0
UNJUDGED_REWARD = -0.25


def fenced(text: str) -> str:
    return f"Translation:\n```\n{text}\n```"


# (source, source language, target language, completions); num_generations = 4.
GROUPS = [
    # 4 distinct valid candidates -> one judge prompt
    ("The grass is always greener on the other side.", "en", "zh",
     [fenced("这山望着那山高。"), fenced("草总是更绿。"), fenced("别人家的草更绿。"), fenced("隔岸的草更绿。")]),
    # 4 identical candidates -> too_few_distinct, no judge call
    ("I have a frog in my throat.", "en", "zh", [fenced("我嗓子有点哑。")] * 4),
    # 2 distinct valid (one duplicate up to whitespace) + 1 invalid -> one judge prompt with 2 candidates
    ("Le chat dort sur le canapé.", "fr", "en",
     [fenced("The cat sleeps on the sofa."), "no code block here", fenced("The cat  sleeps on\nthe sofa."),
      fenced("The cat is sleeping on the couch.")]),
    # nothing valid -> too_few_distinct
    ("Der Himmel ist blau.", "de", "en", ["plain text", "```unclosed", "", "still nothing"]),
    # 1 valid + 3 invalid -> too_few_distinct
    ("El tren llega a las ocho.", "es", "en", [fenced("The train arrives at eight."), "x", "y", "z"]),
]
JUDGED_GROUPS = [0, 2]  # the groups with >= 2 distinct candidates
INVALID = {(2, 1), (3, 0), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3)}  # (group, member) without a translation


def trl_batch(groups):
    """The keyword arguments TRL's GRPOTrainer passes a reward function (conversational dataset)."""
    prompts, completions, completion_ids, src, src_lang, trg_lang = [], [], [], [], [], []
    for source, source_language, target_language, members in groups:
        for member in members:
            prompts.append([{"role": "user", "content": f"Translate into {target_language}:\n{source}"}])
            completions.append([{"role": "assistant", "content": member}])
            completion_ids.append(list(range(len(member) // 3 + 1)))
            src.append(source)
            src_lang.append(source_language)
            trg_lang.append(target_language)
    return dict(
        prompts=prompts, completions=completions, completion_ids=completion_ids,
        src_text=src, src_lang=src_lang, trg_lang=trg_lang, log_extra=lambda *a, **k: None,
    )


def call(reward, groups):
    """Call the reward function like TRL does; return (rewards, metrics)."""
    metrics: dict[str, float] = {}
    rewards = reward(**trl_batch(groups), trainer_state=None, log_metric=metrics.__setitem__)
    prefix = reward.config.name + "/"
    assert all(name.startswith(prefix) for name in metrics)
    return rewards, {name[len(prefix):]: value for name, value in metrics.items()}


def expected_fallback_rewards(groups, invalid):
    """What a judge that never answers in format leaves: the invalid reward or the unjudged reward."""
    return [INVALID_REWARD if (g, m) in invalid else UNJUDGED_REWARD for g in range(len(groups)) for m in range(4)]


def unparsed_or_truncated(metrics) -> float:
    """Groups whose judge answered, but never with a usable complete answer."""
    return metrics["unjudged/parse_failed"] + metrics["unjudged/truncated"]


def assert_garbage_fallback(rewards, metrics, retries):
    """What a judge that never answers in format must leave for GROUPS: every fallback, counted exactly."""
    assert rewards == expected_fallback_rewards(GROUPS, INVALID)
    assert metrics["groups"] == len(GROUPS)
    assert metrics["judge_calls"] == len(JUDGED_GROUPS) * (1 + retries)
    assert metrics["retries"] == len(JUDGED_GROUPS) * retries
    # A random judge rarely ends its answer within the budget: each answer is cut or does not parse.
    assert metrics["parse_failure_rate"] == 1.0 or metrics["truncated_rate"] == 1.0
    assert unparsed_or_truncated(metrics) == len(JUDGED_GROUPS)
    assert metrics["unjudged/too_few_distinct"] == len(GROUPS) - len(JUDGED_GROUPS)
    assert metrics["unjudged/prompt_too_long"] == 0
    assert metrics["unjudged/unavailable"] == 0
    assert metrics["unjudged_groups"] == len(GROUPS)
    assert metrics["invalid_completions"] == len(INVALID)
    assert metrics["fallback_completions"] == 4 * len(GROUPS)
    assert metrics["distinct_candidates"] == pytest.approx((4 + 1 + 2 + 0 + 1) / len(GROUPS))


def vocabulary_size(model_dir: str) -> int:
    """The judge model's vocabulary size: the top-k that returns every token's log-probability."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir).vocab_size
