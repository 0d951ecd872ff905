import os
import sys
from pathlib import Path

# No model hub here or in CI: everything loads from folders the tests build.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Subprocesses (accelerate, torchrun, DeepSpeed's ninja build of its CPU comm op) must find the tools installed
# beside this interpreter even when the virtual environment is not activated, as in `.venv/bin/python -m pytest`.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

import pytest  # noqa: E402

from trl_grrm.testing import build_tiny_chat_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random Qwen2 chat model + tokenizer folder, usable as policy or judge by TRL, transformers and vLLM."""
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny_model")))
