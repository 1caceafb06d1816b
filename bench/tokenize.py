"""One way to turn texts into model inputs, shared by the exporters, the harness and the service."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

MAX_TOKENS = 512
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@lru_cache(maxsize=4)
def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def encode(tokenizer, texts: Sequence[str], max_length: int | None = None) -> dict[str, np.ndarray]:
    """int64 arrays. `max_length` set: pad/truncate to exactly that length; else pad to the longest (≤ 512)."""
    if max_length is not None:
        enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="np")
    else:
        enc = tokenizer(list(texts), padding="longest", truncation=True, max_length=MAX_TOKENS,
                        return_tensors="np")
    return {name: np.ascontiguousarray(enc[name], dtype=np.int64) for name in INPUT_NAMES}


def token_counts(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens per text including [CLS]/[SEP], before any truncation (to flag over-long inputs)."""
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def model_dir_str(path: Path | str) -> str:
    return str(Path(path).resolve())
