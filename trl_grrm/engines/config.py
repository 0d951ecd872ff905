"""One dataclass for every judge-engine option, and :func:`build_engine`, the only place engines are constructed.

The reward config, ``trl-grrm eval-ranking``, ``trl-grrm eval-mt`` (GRRM judge and LLM judge) and the benchmarks
all describe their engine with an :class:`EngineConfig`, so a default is chosen once, here:

* ``gpu_memory_utilization``: :data:`VLLM_MEMORY_SHARE` (0.9, vLLM's own default) when the judge has the GPU to
  itself (evaluation, benchmarks); the reward function, whose judge shares the GPU with the policy being trained,
  uses :data:`VLLM_MEMORY_SHARE_BESIDE_TRAINING` (0.3) instead;
* OpenAI-compatible servers: 64 concurrent requests, a 600 s hard deadline per attempt, 3 retries with backoff
  from 1 s, the key read from ``$JUDGE_API_KEY``;
* ``seed`` 0, ``dtype`` ``"auto"``, 8 prompts per transformers batch.

Example:
    >>> config = EngineConfig(backend="openai", model="judge", base_url="http://127.0.0.1:8000/v1")
    >>> engine = build_engine(config)
    >>> type(engine).__name__, engine.base_urls, engine.max_retries
    ('OpenAIEngine', ['http://127.0.0.1:8000/v1'], 3)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .base import JudgeEngine, SamplingSettings

if TYPE_CHECKING:
    from ..judging import JudgeRunner

#: vLLM's share of GPU memory for a judge that has the GPU to itself.
VLLM_MEMORY_SHARE = 0.9
#: vLLM's share of GPU memory for a judge next to the policy being trained (the reward function's default).
VLLM_MEMORY_SHARE_BESIDE_TRAINING = 0.3

BACKENDS = ("vllm", "openai", "transformers")

RESTARTS_HELP = ("vllm: in one judge call, how often an engine that died (EngineDeadError) is started afresh and sent "
                 "the prompts again; then they fall back as unavailable.")


@dataclass
class EngineConfig:
    """Everything needed to build a judge engine; fields of other backends are ignored."""

    model: str = field(metadata={"help": "Hub id or local path (vllm, transformers), or the served model name (openai)."})
    backend: Literal["vllm", "openai", "transformers"] = field(default="vllm", metadata={"help": "Judge engine."})
    # openai
    base_url: str | list[str] | None = field(default=None, metadata={"help": "openai: base URL(s), e.g. http://host:8000/v1; requests are spread over several."})
    api_key_env: str = field(default="JUDGE_API_KEY", metadata={"help": "openai: environment variable holding the API key (never logged). Unset: 'EMPTY'."})
    max_concurrency: int = field(default=64, metadata={"help": "openai: concurrent requests per process."})
    request_timeout: float = field(default=600.0, metadata={"help": "openai: hard deadline in seconds for each request attempt."})
    max_request_retries: int = field(default=3, metadata={"help": "openai: retries (exponential backoff, next URL) of a failed request."})
    request_backoff_seconds: float = field(default=1.0, metadata={"help": "openai: first retry delay; doubles on each retry."})
    tokenizer: str | None = field(default=None, metadata={"help": "openai: a tokenizer to count prompt tokens locally (None: rely on the server's 400)."})
    # vllm
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per engine."})
    gpu_memory_utilization: float = field(default=VLLM_MEMORY_SHARE, metadata={"help": "vllm: share of GPU memory for the judge (weights + KV cache)."})
    max_model_len: int | None = field(default=None, metadata={"help": "vllm: context length (None: the model's)."})
    enforce_eager: bool = field(default=False, metadata={"help": "vllm: disable CUDA graphs (less memory, slower)."})
    vllm_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "vllm: extra vllm.LLM arguments."})
    max_engine_restarts: int = field(default=1, metadata={"help": RESTARTS_HELP})
    # vllm and transformers
    dtype: str = field(default="auto", metadata={"help": "vllm / transformers: weight dtype."})
    seed: int = field(default=0, metadata={"help": "vllm: engine seed."})
    # transformers
    batch_size: int = field(default=8, metadata={"help": "transformers: prompts per generate call."})
    device: str | None = field(default=None, metadata={"help": "transformers: torch device (None: cuda if available)."})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be 'vllm', 'openai' or 'transformers', got {self.backend!r}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs base_url (e.g. 'http://judge-host:8000/v1')")
        if min(self.max_request_retries, self.request_backoff_seconds, self.max_engine_restarts) < 0 or (
            self.request_timeout <= 0
        ):
            raise ValueError(
                "max_request_retries, request_backoff_seconds and max_engine_restarts must be >= 0, request_timeout > 0"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")


def build_engine(config: EngineConfig) -> JudgeEngine:
    """The judge engine ``config`` describes (vLLM and transformers load their model on first use or here, as each
    engine does)."""
    if config.backend == "openai":
        from .openai_engine import OpenAIEngine

        return OpenAIEngine(
            model=config.model,
            base_urls=config.base_url,
            api_key_env=config.api_key_env,
            max_concurrency=config.max_concurrency,
            timeout=config.request_timeout,
            max_retries=config.max_request_retries,
            backoff_seconds=config.request_backoff_seconds,
            tokenizer=config.tokenizer,
        )
    if config.backend == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine(
            model=config.model,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
            dtype=config.dtype,
            enforce_eager=config.enforce_eager,
            seed=config.seed,
            llm_kwargs=config.vllm_kwargs,
            max_engine_restarts=config.max_engine_restarts,
        )
    from .transformers_engine import TransformersEngine

    return TransformersEngine(model=config.model, device=config.device, dtype=config.dtype, batch_size=config.batch_size)


#: The judge backends a :class:`JudgeConfig` accepts. ``standin`` is the chrF stand-in server the ``grpo-mt`` script
#: starts for its offline demo and tests (:mod:`trl_grrm.testing.standin_judge`); reward configs refuse it.
JUDGE_BACKENDS = (*BACKENDS, "standin")


@dataclass
class JudgeConfig:
    """One judge: its engine, how it samples, and how often it is re-asked. The same dataclass everywhere.

    The reward configs take it as ``judge=``, the ``trl-grrm`` training scripts and both evaluation commands as a
    ``judge:`` mapping in their YAML or as dotted flags (``--judge.model grrm --judge.backend openai``). Nesting keeps
    ``temperature``, ``top_p``, ``seed`` ... apart from the trainer's own fields of the same names.

    ``backend`` unset: ``openai`` when ``base_url`` is set, else ``vllm``. ``gpu_memory_utilization`` unset: the
    caller's default (:data:`VLLM_MEMORY_SHARE_BESIDE_TRAINING` for a reward judge next to the policy,
    :data:`VLLM_MEMORY_SHARE` for evaluation).

    Example:
        >>> judge = JudgeConfig.from_value({"model": "grrm", "base_url": "http://judge:8000/v1", "temperature": 0.0})
        >>> judge.backend, judge.base_url, judge.engine_config().max_request_retries
        ('openai', ['http://judge:8000/v1'], 3)
    """

    # engine
    model: str | None = field(default=None, metadata={"help": "Judge model: a hub id or local path (vllm, transformers), or the served model name (openai)."})
    backend: str | None = field(default=None, metadata={"help": "Judge engine: vllm, openai or transformers (standin: the grpo-mt script's chrF stand-in server, for tests). Unset: openai if base_url is set, else vllm."})
    base_url: list[str] | None = field(default=None, metadata={"help": "openai: base URL(s), e.g. http://host:8000/v1; requests are spread over several."})
    api_key_env: str = field(default="JUDGE_API_KEY", metadata={"help": "openai: environment variable holding the API key (never logged). Unset: 'EMPTY'."})
    max_concurrency: int = field(default=64, metadata={"help": "openai: concurrent requests per process."})
    request_timeout: float = field(default=600.0, metadata={"help": "openai: hard deadline in seconds for each request attempt."})
    max_request_retries: int = field(default=3, metadata={"help": "openai: retries (exponential backoff, next URL) of a failed request."})
    request_backoff_seconds: float = field(default=1.0, metadata={"help": "openai: first retry delay; doubles on each retry."})
    tokenizer: str | None = field(default=None, metadata={"help": "openai: a tokenizer (path or id) to count judge prompt tokens locally, so over-long prompts are never sent (None: the server's 400)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per judge engine."})
    gpu_memory_utilization: float | None = field(default=None, metadata={"help": "vllm: share of GPU memory for the judge (None: 0.3 beside a policy in training, 0.9 in evaluation)."})
    max_model_len: int | None = field(default=None, metadata={"help": "vllm: judge context length (None: the model's)."})
    enforce_eager: bool = field(default=False, metadata={"help": "vllm: disable CUDA graphs (less memory, slower)."})
    vllm_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "vllm: extra vllm.LLM arguments."})
    max_engine_restarts: int = field(default=1, metadata={"help": RESTARTS_HELP})
    dtype: str = field(default="auto", metadata={"help": "vllm / transformers: weight dtype."})
    batch_size: int = field(default=8, metadata={"help": "transformers: prompts per generate call."})
    device: str | None = field(default=None, metadata={"help": "transformers: torch device (None: cuda if available)."})
    # sampling
    temperature: float = field(default=0.0, metadata={"help": "Judge temperature of the first attempt (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Judge nucleus sampling."})
    max_tokens: int = field(default=4096, metadata={"help": "Max tokens of a judge answer."})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "Longer judge prompts are not sent (the group gets the fallback). None: the engine's own limit."})
    seed: int | None = field(default=0, metadata={"help": "Judge sampling seed (re-ask k uses seed + 1_000_003 * k) and the engine seed."})
    # retries
    max_parse_retries: int = field(default=2, metadata={"help": "Re-asks for judge answers that do not parse or were cut at max_tokens (0-10)."})
    retry_temperature: float = field(default=1.0, metadata={"help": "Temperature of those re-asks (never below temperature)."})
    on_unavailable: str = field(default="fallback", metadata={"help": "When the engine cannot answer (server down after retries): fallback (the unjudged reward / no score) or raise."})

    def __post_init__(self) -> None:
        if isinstance(self.base_url, str):
            self.base_url = [self.base_url]
        if isinstance(self.vllm_kwargs, str):
            self.vllm_kwargs = json.loads(self.vllm_kwargs) if self.vllm_kwargs.strip() else {}
        if self.backend is None:
            self.backend = "openai" if self.base_url else "vllm"
        if self.backend not in JUDGE_BACKENDS:
            raise ValueError(f"judge backend must be one of {JUDGE_BACKENDS}, got {self.backend!r}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai judge backend needs judge.base_url (e.g. 'http://judge-host:8000/v1')")
        if self.on_unavailable not in ("fallback", "raise"):
            raise ValueError(f"judge.on_unavailable must be 'fallback' or 'raise', got {self.on_unavailable!r}")
        if self.max_parse_retries < 0:
            raise ValueError("judge.max_parse_retries must be >= 0")

    @classmethod
    def from_value(cls, value: JudgeConfig | Mapping[str, Any] | str | None, **defaults: Any) -> JudgeConfig:
        """A ``JudgeConfig`` from itself, a mapping (a YAML ``judge:`` block), a JSON string or ``None``; ``defaults``
        fill the keys ``value`` does not set. Unknown keys raise a ``ValueError`` that names the known ones (and the
        new spelling of an old flat name such as ``judge_model``)."""
        if isinstance(value, JudgeConfig):
            return value
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else None
        mapping = dict(value or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            hints = [f"{key} -> judge.{LEGACY_JUDGE_KEYS[key]}" for key in unknown if key in LEGACY_JUDGE_KEYS]
            raise ValueError(
                f"unknown judge option(s) {unknown}" + (f" (renamed: {', '.join(hints)})" if hints else "")
                + f"; known: {sorted(known)}"
            )
        return cls(**{**defaults, **mapping})

    def engine_config(self, gpu_memory_utilization: float = VLLM_MEMORY_SHARE) -> EngineConfig:
        """The :class:`EngineConfig` of this judge (``gpu_memory_utilization``: the default when the field is unset)."""
        if self.backend == "standin":
            raise ValueError("judge.backend 'standin' is resolved by the grpo-mt script (it starts the server); "
                             "use openai with its base_url elsewhere")
        if self.model is None:
            raise ValueError("the judge needs judge.model (a hub id or path, or the served model name)")
        return EngineConfig(
            model=self.model,
            backend=self.backend,  # type: ignore[arg-type]
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            max_concurrency=self.max_concurrency,
            request_timeout=self.request_timeout,
            max_request_retries=self.max_request_retries,
            request_backoff_seconds=self.request_backoff_seconds,
            tokenizer=self.tokenizer,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization or gpu_memory_utilization,
            max_model_len=self.max_model_len,
            enforce_eager=self.enforce_eager,
            vllm_kwargs=self.vllm_kwargs,
            max_engine_restarts=self.max_engine_restarts,
            dtype=self.dtype,
            seed=self.seed or 0,
            batch_size=self.batch_size,
            device=self.device,
        )

    def sampling(self) -> SamplingSettings:
        """The first attempt's sampling settings."""
        return SamplingSettings(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                                seed=self.seed)

    def runner(self, engine: JudgeEngine) -> JudgeRunner:
        """The judging core (:class:`~trl_grrm.judging.JudgeRunner`) on ``engine`` with this judge's sampling, re-asks,
        prompt limit and unavailable policy."""
        from ..judging import JudgeRunner, RetryPolicy  # the judging core imports the engines, not the reverse

        return JudgeRunner(
            engine,
            RetryPolicy(max_retries=self.max_parse_retries, retry_temperature=self.retry_temperature),
            self.sampling(),
            max_prompt_tokens=self.max_prompt_tokens,
            on_unavailable=self.on_unavailable,
        )


#: Old flat reward-config / recipe names of judge options -> their name in :class:`JudgeConfig`.
LEGACY_JUDGE_KEYS: dict[str, str] = {
    "judge_model": "model",
    "judge_backend": "backend",
    "judge_base_url": "base_url",
    "judge_tokenizer": "tokenizer",
    "judge_temperature": "temperature",
    "judge_max_tokens": "max_tokens",
    "judge_max_parse_retries": "max_parse_retries",
    "max_judge_tokens": "max_tokens",
    "max_judge_prompt_tokens": "max_prompt_tokens",
    "on_judge_unavailable": "on_unavailable",
    "vllm_tensor_parallel_size": "tensor_parallel_size",
    "vllm_gpu_memory_utilization": "gpu_memory_utilization",
    "vllm_max_model_len": "max_model_len",
    "vllm_dtype": "dtype",
    "vllm_enforce_eager": "enforce_eager",
    "judge_vllm_gpu_memory_utilization": "gpu_memory_utilization",
    "judge_vllm_tensor_parallel_size": "tensor_parallel_size",
    "judge_vllm_max_model_len": "max_model_len",
    "transformers_batch_size": "batch_size",
    "transformers_device": "device",
}
