"""Judge engines behind one interface: in-process vLLM, OpenAI-compatible servers, plain transformers."""

from .base import (
    PROMPT_TOO_LONG,
    TRUNCATED,
    UNAVAILABLE,
    JudgeConfigurationError,
    JudgeEngine,
    JudgeOutput,
    Messages,
    SamplingSettings,
)
from .config import VLLM_MEMORY_SHARE, VLLM_MEMORY_SHARE_BESIDE_TRAINING, EngineConfig, JudgeConfig, build_engine
from .openai_engine import OpenAIEngine
from .transformers_engine import TransformersEngine
from .vllm_engine import VLLMEngine

__all__ = [
    "PROMPT_TOO_LONG",
    "TRUNCATED",
    "UNAVAILABLE",
    "VLLM_MEMORY_SHARE",
    "VLLM_MEMORY_SHARE_BESIDE_TRAINING",
    "EngineConfig",
    "JudgeConfig",
    "JudgeConfigurationError",
    "JudgeEngine",
    "JudgeOutput",
    "Messages",
    "OpenAIEngine",
    "SamplingSettings",
    "TransformersEngine",
    "VLLMEngine",
    "build_engine",
]
