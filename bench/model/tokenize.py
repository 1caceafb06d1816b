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

from bench.core.signature import ModelSignature, read_signature

MAX_TOKENS = 512


def _first_id(raw, tokens: tuple[str, ...]) -> int | None:
    return next((i for i in (raw.token_to_id(t) for t in tokens) if i is not None), None)


def pad_token_id(model_dir: str) -> int | None:
    """The tokenizer's padding id ([PAD] or <pad>), read without the model's signature."""
    return _first_id(_raw(model_dir, None), ("[PAD]", "<pad>"))


class Tokenizer:
    """The model's tokenizer, truncating to its max length (or a bucket length) and padding to the longest or a
    fixed length; `signature` says which inputs the model takes (bench.core.signature)."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.raw = _raw(model_dir, None)
        self.signature: ModelSignature = read_signature(model_dir, _first_id(self.raw, ("[PAD]", "<pad>")))
        self.pad_id = self.signature.pad_id
        self.cls_token_id = _first_id(self.raw, ("[CLS]", "<s>"))
        self.sep_token_id = _first_id(self.raw, ("[SEP]", "</s>"))

    @property
    def max_tokens(self) -> int:
        return min(MAX_TOKENS, self.signature.max_length)

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

    from bench.core.errors import BenchError

    path = Path(model_dir)
    if not any((path / name).exists() for name in ("tokenizer.json", "vocab.txt")):
        raise BenchError(f"no tokenizer in {path} (tokenizer.json or vocab.txt): save the model's tokenizer there "
                         f"(tokenizer.save_pretrained), or give its folder with --tokenizer DIR")
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
    """int64 arrays. `max_length` set: pad/truncate to exactly that length; else pad to the longest (≤ the model's
    max length)."""
    length = min(max_length, tokenizer.max_tokens) if max_length else None
    return pack(tokenizer, tokenizer.encodings(texts, length or tokenizer.max_tokens), length)


def pack(tokenizer: Tokenizer, encs: Sequence, width: int | None = None, rows: int | None = None) \
        -> dict[str, np.ndarray]:
    """Encodings as the model's int64 arrays, padded to `width` or to the longest, and to `rows` rows (a shape
    bucket's: the extra rows hold one attended [PAD] each, so no row's attention is empty)."""
    width = width or max(len(e.ids) for e in encs)
    shape = (rows or len(encs), width)
    ids, mask, types = np.full(shape, tokenizer.pad_id, dtype=np.int64), np.zeros(shape, dtype=np.int64), \
        np.zeros(shape, dtype=np.int64)
    mask[len(encs):, 0] = 1
    for row, e in enumerate(encs):
        n = len(e.ids)
        ids[row, :n] = e.ids
        mask[row, :n] = 1
        types[row, :n] = e.type_ids
    return tokenizer.signature.feed(ids, mask, types)


def counted(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[list[int], list]:
    """Each text's token count including [CLS]/[SEP] before truncation (to flag over-long inputs) and its encoding
    truncated to the model's max length, in one tokenizer pass (a second only for the rare text over the limit): the
    service's batcher needs both, and counting then encoding tokenised every text twice (the front's CPU per text:
    docs/measurements.md)."""
    encs = list(tokenizer.encodings(texts, None))
    counts = [len(e.ids) for e in encs]
    limit = tokenizer.max_tokens
    over = [i for i, n in enumerate(counts) if n > limit]
    if over:
        for i, e in zip(over, tokenizer.encodings([texts[i] for i in over], limit)):
            encs[i] = e
    return counts, encs


def model_dir_str(path: Path | str) -> str:
    return str(Path(path).resolve())
