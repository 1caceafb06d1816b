"""The offline StructBERT twin: real StructBERT-base-Chinese shapes, deterministic synthetic weights.

Its latency, memory and throughput are those of the real model; its labels mean nothing, and every
artifact built from it carries `synthetic: true` so no output can pass it off as a trained model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

RECIPE = 2  # bump when the twin's construction changes: cached twins of older recipes are rebuilt
VOCAB_SIZE = 21128  # bert-base-chinese / StructBERT-base-Chinese vocabulary size
LABELS = {0: "负面", 1: "正面"}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Chinese punctuation and full-width forms common in reviews; each becomes one token.
CJK_FIRST, CJK_LAST = 0x4E00, 0x9FA5
CJK_PUNCT = "，。！？、；：“”‘’（）《》【】…—～·「」『』〈〉￥％＋－＝／＆＠＃＊"


@dataclass(frozen=True)
class TwinShape:
    """Architecture of a twin; `base` is StructBERT-base-Chinese, `tiny` the same recipe shrunk for tests."""

    name: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    init_range: float  # weight init std: large enough that logits vary by input (see centre_classifier)
    positions: int = 512


SHAPES = {
    "base": TwinShape("base", hidden=768, layers=12, heads=12, ffn=3072, init_range=0.05),
    "tiny": TwinShape("tiny", hidden=128, layers=2, heads=2, ffn=512, init_range=0.1),
}


def build_vocab() -> list[str]:
    """A character-level Chinese WordPiece vocabulary of exactly VOCAB_SIZE entries.

    Every CJK Unified Ideograph of the classic block U+4E00–U+9FA5 (20,902 characters, all of GB
    and Big5) is one token, plus lower-case ASCII (the tokenizer lower-cases), '##' continuations for
    alphanumerics and Chinese punctuation. [unused*] slots after [PAD] fill the rest, as in bert-base-chinese.
    """
    ascii_chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    body = ascii_chars + [f"##{c}" for c in ascii_chars if c.isalnum()] + list(dict.fromkeys(CJK_PUNCT))
    body += [chr(c) for c in range(CJK_FIRST, CJK_LAST + 1)]
    unused = VOCAB_SIZE - len(SPECIALS) - len(body)
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, unused + 1)] + SPECIALS[1:] + body
    if len(vocab) != VOCAB_SIZE or len(set(vocab)) != VOCAB_SIZE or unused < 1:
        raise RuntimeError("twin vocabulary construction is inconsistent")  # a code bug, not user input
    return vocab


def write_tokenizer(out_dir: Path) -> None:
    """Save a BertTokenizerFast built offline from the twin vocabulary (vocab.txt + tokenizer.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(build_vocab()) + "\n", encoding="utf-8")
    tokenizer_from_vocab(vocab_file).save_pretrained(str(out_dir))


def tokenizer_from_vocab(vocab_file: Path):
    """A fast BERT WordPiece tokenizer from a vocab.txt (transformers 5 says `vocab=`, 4.x `vocab_file=`)."""
    import inspect

    from transformers import BertTokenizerFast

    key = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    return BertTokenizerFast(**{key: str(vocab_file)}, do_lower_case=True, tokenize_chinese_chars=True,
                             model_max_length=512)


def twin_config(shape: TwinShape, seed: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, intermediate_size=shape.ffn,
        max_position_embeddings=shape.positions, type_vocab_size=2, num_labels=len(LABELS),
        initializer_range=shape.init_range,
        id2label=dict(LABELS), label2id={v: k for k, v in LABELS.items()},
        architectures=["BertForSequenceClassification"],
        structbench={"synthetic": True, "source": f"twin:{shape.name}", "seed": seed, "shape": asdict(shape)},
    )


def centre_classifier(model, tokenizer_dir: Path, seed: int, n: int = 64) -> None:
    """Shift the classifier bias so the logit margin's median over seeded corpus texts is zero.

    Random weights give every input nearly the same label, which makes label agreement between
    variants meaningless (always 100 %). Centring splits the corpus ~50/50 so the parity gate can
    see a variant that moves logits. Computed on one thread and rounded so the weights stay bit-stable.
    """
    import torch

    from bench.model.corpus import labelled_sample
    from bench.model.tokenize import encode, load_tokenizer

    texts = labelled_sample(n, seed=seed).texts
    enc = {k: torch.from_numpy(v) for k, v in encode(load_tokenizer(str(tokenizer_dir)), texts, 64).items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            logits = model(**enc).logits
    finally:
        torch.set_num_threads(threads)
    half = round(float((logits[:, 1] - logits[:, 0]).median()) / 2, 4)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([half, -half]))


def build_twin(out_dir: Path, shape_name: str = "base", seed: int = 0) -> dict:
    """Write a complete Hugging Face BERT directory for the twin and return its source metadata."""
    import torch
    from transformers import BertForSequenceClassification

    shape = SHAPES[shape_name]
    torch.manual_seed(seed)
    model = BertForSequenceClassification(twin_config(shape, seed)).eval()
    write_tokenizer(out_dir)
    model.config.save_pretrained(str(out_dir))  # the tokenizer reads the model's signature from it
    centre_classifier(model, out_dir, seed)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    meta = {"source": f"twin:{shape_name}", "synthetic": True, "seed": seed, "recipe": RECIPE, "shape": asdict(shape),
            "note": "synthetic weights: labels and accuracy are meaningless; latency and memory are representative"}
    (out_dir / "source.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    return meta
