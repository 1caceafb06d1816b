"""Convert a ModelScope StructBERT checkpoint into a plain `BertForSequenceClassification` directory.

ModelScope checkpoints vary: the backbone prefix may be `bert.` or `encoder.`, the head may sit under
`head.classifier.`, LayerNorm may be stored as `gamma`/`beta`, and `position_ids` buffers may be saved.
The config is rebuilt from tensor shapes so a mismatched config.json cannot silently mis-shape the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.core.errors import BenchError
from bench.core.signature import POSITIONS
from bench.model.twin import LABELS, tokenizer_from_vocab

WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors", "pytorch_model.pt")


def read_state_dict(model_dir: Path) -> dict:
    """Load weights without unpickling arbitrary objects (weights_only=True / safetensors)."""
    import torch

    for name in WEIGHT_FILES:
        path = model_dir / name
        if not path.exists():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file
                return load_file(str(path))
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or truncated file: say which file, not a pickle traceback
            raise BenchError(f"cannot read weights {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
        return state.get("state_dict", state) if isinstance(state, dict) else state
    raise BenchError(f"no weights in {model_dir} (looked for {', '.join(WEIGHT_FILES)})")


def rename_key(key: str) -> str | None:
    """Map one ModelScope key to its transformers name; None means drop it."""
    if key.endswith(POSITIONS):  # a buffer of position ids, rebuilt by transformers
        return None
    key = re.sub(r"^head\.", "", key)
    key = re.sub(r"^(encoder|model|structbert)\.(?=(embeddings|encoder|pooler)\.)", "bert.", key)
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    return key


def normalise_state_dict(state: dict) -> dict:
    out = {}
    for key, tensor in state.items():
        new = rename_key(key)
        if new is not None:
            out[new] = tensor
    return out


def config_from_shapes(state: dict, hints: dict):
    """Build a BertConfig from the tensors themselves; config.json only supplies what shapes cannot say."""
    from transformers import BertConfig

    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        positions = state["bert.embeddings.position_embeddings.weight"].shape[0]
        type_vocab = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
        ffn = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
        num_labels = state["classifier.weight"].shape[0]
    except KeyError as exc:
        raise BenchError(f"checkpoint is not a BERT/StructBERT classifier: missing tensor {exc}") from None
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
    heads = int(hints.get("num_attention_heads") or max(1, hidden // 64))
    id2label = labels_from_hints(hints, num_labels)
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=ffn, max_position_embeddings=positions, type_vocab_size=type_vocab,
                      num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()},
                      layer_norm_eps=float(hints.get("layer_norm_eps", 1e-12)),
                      architectures=["BertForSequenceClassification"])


def labels_from_hints(hints: dict, num_labels: int) -> dict[int, str]:
    raw = hints.get("id2label") or {}
    if len(raw) == num_labels:
        return {int(k): str(v) for k, v in raw.items()}
    if num_labels == 2:
        return dict(LABELS)
    return {i: f"LABEL_{i}" for i in range(num_labels)}


def read_hints(src: Path) -> dict:
    path = src / "config.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} is not valid JSON: {exc}") from None


def convert_modelscope(src: Path, out_dir: Path) -> None:
    """Write `out_dir` as a transformers BERT classifier converted from the ModelScope checkpoint in `src`."""
    from transformers import BertForSequenceClassification

    state = normalise_state_dict(read_state_dict(src))
    config = config_from_shapes(state, read_hints(src))
    model = BertForSequenceClassification(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BenchError(f"checkpoint in {src} does not match a BERT classifier: {str(exc)[:300]}") from None
    vocab = src / "vocab.txt"
    if not vocab.exists():
        raise BenchError(f"no vocab.txt in {src}: cannot build the tokenizer")
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer_from_vocab(vocab).save_pretrained(str(out_dir))
