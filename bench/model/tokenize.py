"""One way to turn texts into model inputs, shared by the exporters, the harness and the service.

Built on the `tokenizers` library directly (the model's tokenizer.json, or its vocab.txt): importing
transformers' AutoTokenizer would pull in torch, and the ONNX Runtime path must not pay torch's import
time and memory. The ids are those of the model's Hugging Face fast tokenizer.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

MAX_TOKENS = 512
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class Tokenizer:
    """A BERT tokenizer: truncating to 512 (or a bucket length) and padding to the longest or a fixed length."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.raw = _raw(model_dir, None)
        self.pad_id = self.raw.token_to_id("[PAD]") or 0
        self.cls_token_id = self.raw.token_to_id("[CLS]")
        self.sep_token_id = self.raw.token_to_id("[SEP]")

    def __len__(self) -> int:
        return self.raw.get_vocab_size()

    def tokenize(self, text: str) -> list[str]:
        return self.raw.encode(text, add_special_tokens=False).tokens

    def encodings(self, texts: Sequence[str], truncate: int | None):
        return _raw(self.model_dir, truncate).encode_batch(list(texts))


@lru_cache(maxsize=16)
def _raw(model_dir: str, truncate: int | None):
    """The tokenizers.Tokenizer of a model dir, with truncation set (one cached instance per length)."""
    from tokenizers import Tokenizer as RawTokenizer

    path = Path(model_dir)
    if (path / "tokenizer.json").exists():
        raw = RawTokenizer.from_file(str(path / "tokenizer.json"))
    else:  # an older checkpoint with only vocab.txt
        from tokenizers.implementations import BertWordPieceTokenizer

        raw = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=True)._tokenizer
    raw.no_padding()
    if truncate:
        raw.enable_truncation(max_length=truncate)
    else:
        raw.no_truncation()
    return raw


@lru_cache(maxsize=4)
def load_tokenizer(model_dir: str) -> Tokenizer:
    return Tokenizer(str(model_dir))


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_length: int | None = None) -> dict[str, np.ndarray]:
    """int64 arrays. `max_length` set: pad/truncate to exactly that length; else pad to the longest (≤ 512)."""
    return pack(tokenizer, tokenizer.encodings(texts, max_length or MAX_TOKENS), max_length)


def pack(tokenizer: Tokenizer, encs: Sequence, width: int | None = None, rows: int | None = None) \
        -> dict[str, np.ndarray]:
    """Encodings as the model's int64 arrays, padded to `width` or to the longest, and to `rows` rows (a shape
    bucket's: the extra rows hold one attended [PAD] each, so no row's attention is empty)."""
    width = width or max(len(e.ids) for e in encs)
    out = {name: np.zeros((rows or len(encs), width), dtype=np.int64) for name in INPUT_NAMES}
    out["input_ids"].fill(tokenizer.pad_id)
    out["attention_mask"][len(encs):, 0] = 1
    for row, e in enumerate(encs):
        n = len(e.ids)
        out["input_ids"][row, :n] = e.ids
        out["attention_mask"][row, :n] = 1
        out["token_type_ids"][row, :n] = e.type_ids
    return out


def counted(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[list[int], list]:
    """Each text's token count including [CLS]/[SEP] before truncation (to flag over-long inputs) and its encoding
    truncated to MAX_TOKENS, in one tokenizer pass (a second only for the rare text over the limit): the service's
    batcher needs both, and counting then encoding tokenised every text twice (the front's CPU per text:
    docs/measurements.md)."""
    encs = list(tokenizer.encodings(texts, None))
    counts = [len(e.ids) for e in encs]
    over = [i for i, n in enumerate(counts) if n > MAX_TOKENS]
    if over:
        for i, e in zip(over, tokenizer.encodings([texts[i] for i in over], MAX_TOKENS)):
            encs[i] = e
    return counts, encs


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def model_dir_str(path: Path | str) -> str:
    return str(Path(path).resolve())
