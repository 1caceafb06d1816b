"""Tiny (2-layer) models of other families, built offline with transformers' config classes and random weights,
each with the twin's tokenizer saved beside it: what a user's own model directory looks like."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
LABELS3 = {0: "negative", 1: "neutral", 2: "positive"}


def _config(kind: str, vocab: int):
    import transformers as tf

    if kind == "bert":
        return tf.BertConfig(vocab_size=vocab, **SMALL, id2label=LABELS3, label2id={v: k for k, v in LABELS3.items()},
                             architectures=["BertForSequenceClassification"])
    if kind in ("roberta", "xlm-roberta"):
        cls = tf.RobertaConfig if kind == "roberta" else tf.XLMRobertaConfig
        # the twin's tokenizer pads with id 0, so the model's padding_idx is 0 too (positions start at 1)
        return cls(vocab_size=vocab, **SMALL, max_position_embeddings=514, type_vocab_size=1, pad_token_id=0,
                   bos_token_id=2, eos_token_id=3, architectures=[f"{cls.__name__[:-6]}ForSequenceClassification"])
    if kind == "distilbert":
        return tf.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64, pad_token_id=0,
                                   architectures=["DistilBertForSequenceClassification"])
    if kind == "bert-embedding":
        return tf.BertConfig(vocab_size=vocab, **SMALL, architectures=["BertModel"])
    if kind in OTHERS:  # the documented list beyond the four: the same path, checked by the same test
        cls, arch = OTHERS[kind]
        extra = {"embedding_size": 16} if kind == "albert" else {}
        return getattr(tf, cls)(vocab_size=vocab, **SMALL, **extra, pad_token_id=0, architectures=[arch])
    raise ValueError(kind)


OTHERS = {"electra": ("ElectraConfig", "ElectraForSequenceClassification"),
          "mpnet": ("MPNetConfig", "MPNetForSequenceClassification"),
          "albert": ("AlbertConfig", "AlbertForSequenceClassification")}


def build_family(kind: str, out: Path, tokenizer_dir: Path) -> Path:
    """A model directory of `kind` (bert: 3 labels; roberta, xlm-roberta, distilbert: 2; bert-embedding: a
    sentence-transformers layout with CLS pooling and normalisation)."""
    import torch
    import transformers as tf

    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    vocab = len(json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])
    torch.manual_seed(1)
    config = _config(kind, vocab)
    auto = tf.AutoModel if kind == "bert-embedding" else tf.AutoModelForSequenceClassification
    model = auto.from_config(config).eval()
    with torch.no_grad():  # random heads give logit margins below INT8 noise (ERNIE's): widen them, as the twin does
        for name, param in model.named_parameters():
            if name.startswith("classifier") and name.endswith("weight"):
                param.mul_(10.0)
    model.save_pretrained(str(out), safe_serialization=True)
    if kind == "bert-embedding":
        (out / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        (out / "1_Pooling").mkdir(exist_ok=True)
        (out / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    return out


def hand_exported_onnx(model_dir: Path, out: Path) -> Path:
    """The BERT classifier of `model_dir` exported by hand with torch.onnx.export, as a user would (not by
    structbench), into `out` with its config and tokenizer beside it."""
    import torch
    import transformers as tf

    out.mkdir(parents=True, exist_ok=True)
    for name in (*TOKENIZER_FILES, "config.json"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, out / name)
    model = tf.AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tuple(torch.randint(5, 100, (2, 12)) if n == "input_ids" else torch.ones(2, 12, dtype=torch.int64)
                  if n == "attention_mask" else torch.zeros(2, 12, dtype=torch.int64) for n in names)
    path = out / "classifier.onnx"
    with torch.inference_mode():
        torch.onnx.export(model, dummy, str(path), input_names=names, output_names=["logits"], opset_version=17,
                          dynamic_axes={**{n: {0: "b", 1: "s"} for n in names}, "logits": {0: "b"}}, dynamo=False)
    return path
