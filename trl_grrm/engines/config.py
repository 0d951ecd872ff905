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

from dataclasses import dataclass, field
from typing import Any, Literal

from .base import JudgeEngine

#: vLLM's share of GPU memory for a judge that has the GPU to itself.
VLLM_MEMORY_SHARE = 0.9
#: vLLM's share of GPU memory for a judge next to the policy being trained (the reward function's default).
VLLM_MEMORY_SHARE_BESIDE_TRAINING = 0.3

BACKENDS = ("vllm", "openai", "transformers")


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
        if self.max_request_retries < 0 or self.request_backoff_seconds < 0 or self.request_timeout <= 0:
            raise ValueError("max_request_retries and request_backoff_seconds must be >= 0, request_timeout > 0")
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
        )
    from .transformers_engine import TransformersEngine

    return TransformersEngine(model=config.model, device=config.device, dtype=config.dtype, batch_size=config.batch_size)
