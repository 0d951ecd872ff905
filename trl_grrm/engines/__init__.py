"""Judge engines behind one interface: in-process vLLM, OpenAI-compatible servers, plain transformers."""

from .base import JudgeEngine, JudgeOutput, Messages, SamplingSettings
from .openai_engine import OpenAIEngine
from .transformers_engine import TransformersEngine
from .vllm_engine import VLLMEngine

__all__ = [
    "JudgeEngine",
    "JudgeOutput",
    "Messages",
    "OpenAIEngine",
    "SamplingSettings",
    "TransformersEngine",
    "VLLMEngine",
]
