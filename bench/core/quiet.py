"""Silence library chatter that buries our own progress output (call once, at the top of a command)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # Tracer/deprecation warnings from torch.onnx and torch.ao are about the libraries, not the user's run.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*TracerWarning.*")
    # onnxruntime.quantization logs "consider pre-processing" on the root logger at WARNING.
    logging.getLogger().setLevel(logging.ERROR)
