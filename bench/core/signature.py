"""The model's signature: what it takes and what it gives, read from the model itself — its config.json, its
tokenizer and sentence-transformers files, and, for an ONNX file, its graph. One typed record; every layer reads
it (exporters, parity, the harness's inputs, the service's batcher and answers, checks, FLOPs) instead of
restating input or output names. The only module that spells those names out (a test holds it to that).

Families: an encoder whose config gives its shape (BERT, RoBERTa / XLM-RoBERTa, DistilBERT, … see FAMILIES and
docs/models.md). Tasks: sequence classification with N labels, or sentence embedding with a pooling.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError

SIGNATURE_FILE = "signature.json"  # beside a model dir's config: the signature read from a user's ONNX graph
TASKS = ("classification", "embedding")
POOLINGS = ("cls", "mean", "max", "last")
# What a graph's output holds: classifier logits [batch, labels], one vector per text [batch, hidden], or one
# per token [batch, sequence, hidden] (a user's graph: we pool it with the attention mask, as it asks)
OUTPUT_KINDS = ("logits", "sentence", "token")
IDS, MASK, TYPES, POSITIONS = "input_ids", "attention_mask", "token_type_ids", "position_ids"
FEEDABLE = (IDS, MASK, TYPES, POSITIONS)  # the inputs structbench can build from a tokenizer's encodings
LOGITS, EMBEDDINGS = "logits", "embeddings"  # the output names of structbench's own exports


@dataclass(frozen=True)
class Family:
    """How structbench handles one `model_type`: the ORT optimizer's model_type (None: no fusion, `why`), the
    config keys of its shape, and whether its positions start after the padding id (RoBERTa's offset)."""

    ort_model_type: str | None
    keys: tuple[str, str, str, str] = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                       "intermediate_size")
    padded_positions: bool = False
    why: str = ""


_DISTIL_KEYS = ("dim", "n_layers", "n_heads", "hidden_dim")
# Each tested end to end (export, fusion, INT8, FP16, OpenVINO, parity: tests/test_families.py); docs/models.md.
FAMILIES: dict[str, Family] = {
    "bert": Family("bert"),
    "roberta": Family("bert", padded_positions=True),
    "xlm-roberta": Family("bert", padded_positions=True),
    "camembert": Family("bert", padded_positions=True),
    "distilbert": Family("bert", _DISTIL_KEYS),
    "electra": Family("bert"),
    "ernie": Family("bert"),
    "mpnet": Family(None, why="ONNX Runtime's optimizer has no MPNet recipe (relative attention bias)"),
    "albert": Family("bert"),  # one layer's weights shared by all layers: fusion matches part of the graph
}
_NOT_ENCODERS = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel", "ForSeq2SeqLM", "ForQuestionAnswering",
                 "ForTokenClassification", "ForMultipleChoice")


@dataclass(frozen=True)
class ModelSignature:
    """What the model takes and gives. `inputs` in the graph's order; `labels` in id order (classification);
    `pooling` / `normalize` for embeddings; `source` says where it was read ("config" or "graph"); `assumed`
    lists what was not in the model and was defaulted (with the default), so results say so."""

    family: str
    task: str
    inputs: tuple[str, ...]
    output: str
    output_kind: str
    labels: tuple[str, ...] = ()
    multi_label: bool = False  # problem_type multi_label_classification: sigmoid per label, not one softmax
    pooling: str | None = None
    normalize: bool = False
    max_length: int = 512
    vocab_size: int = 0
    pad_id: int = 0
    position_offset: int = 0  # RoBERTa-style models count positions from pad_id + 1
    hidden: int = 0
    layers: int = 0
    heads: int = 0
    ffn: int = 0
    ort_model_type: str | None = "bert"
    fusion_note: str = ""
    source: str = "config"
    assumed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise BenchError(f"signature: task must be one of {', '.join(TASKS)} (got {self.task!r})")
        if self.output_kind not in OUTPUT_KINDS:
            raise BenchError(f"signature: output kind must be one of {', '.join(OUTPUT_KINDS)}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise BenchError(f"signature: pooling must be one of {', '.join(POOLINGS)} (got {self.pooling!r})")
        if IDS not in self.inputs:
            raise BenchError(f"signature: the model takes no {IDS}")

    @property
    def is_embedding(self) -> bool:
        return self.task == "embedding"

    @property
    def what(self) -> str:
        """The task in words, for reports and logs."""
        if self.is_embedding:
            norm = ", L2-normalised" if self.normalize else ""
            return f"sentence embedding ({self.hidden}-d, {self.pooling} pooling{norm})"
        return f"{len(self.labels)}-label classification ({', '.join(self.labels)})"

    @property
    def unit(self) -> str:
        """What one answer is, for throughput: embeddings/s or texts/s."""
        return "embeddings" if self.is_embedding else "texts"

    def feed(self, ids: np.ndarray, mask: np.ndarray, type_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The model's int64 inputs from token ids, the attention mask and (when it takes them) token types."""
        out: dict[str, np.ndarray] = {}
        for name in self.inputs:
            if name == IDS:
                out[name] = ids
            elif name == MASK:
                out[name] = mask
            elif name == TYPES:
                out[name] = type_ids if type_ids is not None else np.zeros_like(ids)
            elif name == POSITIONS:
                out[name] = np.broadcast_to(self.position_offset + np.arange(ids.shape[1], dtype=np.int64),
                                            ids.shape).copy()
        return out

    def dummy(self, rows: int, length: int, token: int | None = None) -> dict[str, np.ndarray]:
        """Inputs of one shape, every position attended (warm-ups, shape checks): `token` everywhere but the
        first position's [CLS]-like id is not needed for timing."""
        token = token if token is not None else max(self.vocab_size - 1, 1)
        ids = np.full((rows, length), token, dtype=np.int64)
        return self.feed(ids, np.ones((rows, length), dtype=np.int64))

    def finish(self, raw: np.ndarray, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """A backend's raw output as the task's answer: logits as they are, one vector per text (a token-level
        output pooled here with the attention mask, and normalised where the model says so)."""
        out = np.asarray(raw, dtype=np.float32)
        if self.output_kind != "token":
            return out
        pooled = pool(out, np.asarray(inputs[MASK]), self.pooling or "mean")
        return l2_normalise(pooled) if self.normalize else pooled

    def scores(self, out: np.ndarray) -> np.ndarray:
        """What a service answers per text: label probabilities (softmax; sigmoid per label for a multi-label
        classifier), or the embedding as it is."""
        if self.is_embedding:
            return out
        if self.multi_label:
            return np.asarray(1.0 / (1.0 + np.exp(-out)), dtype=np.float64)
        return softmax(out)

    def flops(self, batch: int, seq_len: int) -> int:
        """FLOPs of one forward pass, 2 per multiply-add (bench.measure.roofline.bert_flops' formula for this
        architecture's shape): the encoder, plus a classifier's head (a hidden×hidden layer — BERT's pooler,
        RoBERTa's and DistilBERT's dense — then the labels). 0 where the shape is unknown (a bare graph)."""
        b, s, h, i = batch, max(1, seq_len), self.hidden, self.ffn
        per_layer = 4 * s * h * h + 2 * s * s * h + 2 * s * h * i
        head = 0 if self.is_embedding else h * h + h * len(self.labels)
        return 2 * b * (self.layers * per_layer + head)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSignature":
        known: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
                 if k in cls.__dataclass_fields__}
        return cls(**known)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float64)


def pool(hidden: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """[batch, sequence, hidden] → [batch, hidden] over the attended positions."""
    m = mask[..., None].astype(hidden.dtype)
    if how == "cls":
        out = hidden[:, 0]
    elif how == "max":
        out = np.where(m > 0, hidden, -np.inf).max(axis=1)
    elif how == "last":
        out = hidden[np.arange(hidden.shape[0]), np.maximum(mask.sum(axis=1) - 1, 0)]
    else:
        out = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return np.asarray(out, dtype=np.float32)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    return np.asarray(vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12), dtype=np.float32)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path} is not a JSON object")
    return data


def family_of(config: Mapping[str, Any]) -> tuple[str, Family]:
    """The config's model_type and how structbench handles it; an unsupported one is one clear error."""
    kind = str(config.get("model_type") or "")
    if kind == "structbert":  # ModelScope's StructBERT is BERT's graph (bench.model.convert writes BERT configs)
        kind = "bert"
    if config.get("is_encoder_decoder") or any(a.endswith(_NOT_ENCODERS) for a in config.get("architectures") or ()):
        raise BenchError(f"{kind or 'this model'} ({', '.join(config.get('architectures') or ())}) is not a "
                         f"sequence classifier or a sentence encoder: structbench measures encoder models for "
                         f"classification or embedding ({', '.join(FAMILIES)}); see docs/models.md")
    if kind not in FAMILIES:
        raise BenchError(f"unsupported model_type {kind!r}: structbench supports {', '.join(FAMILIES)} "
                         f"(docs/models.md says how to add a family)")
    return kind, FAMILIES[kind]


def sentence_transformers(model_dir: Path) -> tuple[str, bool] | None:
    """(pooling, normalise) from a sentence-transformers modules.json + 1_Pooling/config.json; None without."""
    if not (model_dir / "modules.json").exists():
        return None
    modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    pooling_dir = next((model_dir / str(m.get("path", "")) for m in modules
                        if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")), None)
    pooling = "mean"
    if pooling_dir is not None and (pooling_dir / "config.json").exists():
        cfg = _json(pooling_dir / "config.json")
        modes = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                 "max": "pooling_mode_max_tokens", "last": "pooling_mode_lasttoken"}
        pooling = next((name for name, key in modes.items() if cfg.get(key)), "mean")
    return pooling, any(t.endswith("Normalize") for t in types)


def _max_length(model_dir: Path, config: Mapping[str, Any], offset: int) -> int:
    positions = int(config.get("max_position_embeddings") or 512) - offset
    limit = 512
    tok_cfg = model_dir / "tokenizer_config.json"
    if tok_cfg.exists():
        given = _json(tok_cfg).get("model_max_length")
        if isinstance(given, int) and 0 < given < limit:
            limit = given
    return max(3, min(limit, positions))


def _inputs(config: Mapping[str, Any], family: Family) -> tuple[str, ...]:
    """BERT's three inputs where the model has token types (type_vocab_size > 1), else ids and mask."""
    types = int(config.get("type_vocab_size") or 0) > 1 and family.keys[0] == "hidden_size"
    return (IDS, MASK, TYPES) if types else (IDS, MASK)


def from_config(model_dir: Path, pad_id: int | None = None) -> ModelSignature:
    """The signature of a Hugging Face model directory, from its config and sentence-transformers files."""
    config = _json(model_dir / "config.json")
    kind, family = family_of(config)
    dims = [int(config.get(k) or 0) for k in family.keys]
    if not all(dims):
        raise BenchError(f"{model_dir / 'config.json'} lacks its shape ({', '.join(family.keys)})")
    pad = int(config["pad_token_id"]) if isinstance(config.get("pad_token_id"), int) else (pad_id or 0)
    offset = pad + 1 if family.padded_positions else 0
    st = sentence_transformers(model_dir)
    archs = tuple(config.get("architectures") or ())
    classifier = st is None and any(a.endswith("ForSequenceClassification") for a in archs)
    pooling, normalize = st or ("mean", False)
    embedding = ModelSignature(
        family=kind, task="embedding", inputs=_inputs(config, family), output=EMBEDDINGS, output_kind="sentence",
        pooling=pooling, normalize=normalize, max_length=_max_length(model_dir, config, offset),
        vocab_size=int(config.get("vocab_size") or 0), pad_id=pad, position_offset=offset, hidden=dims[0],
        layers=dims[1], heads=dims[2], ffn=dims[3], ort_model_type=family.ort_model_type, fusion_note=family.why,
        assumed=() if st else ("pooling: mean (no sentence-transformers 1_Pooling/config.json)",))
    if not classifier:
        return embedding
    return replace(embedding, task="classification", output=LOGITS, output_kind="logits", labels=id2label(config),
                   multi_label=config.get("problem_type") == "multi_label_classification", pooling=None,
                   normalize=False, assumed=())


def id2label(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Label names in id order (JSON keys are strings); LABEL_i where the config names none."""
    raw = config.get("id2label") or {}
    n = len(raw) or int(config.get("num_labels") or 2)
    names = {int(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return tuple(names.get(i, f"LABEL_{i}") for i in range(n))


@lru_cache(maxsize=16)
def _read(model_dir: str, pad_id: int | None) -> ModelSignature:
    path = Path(model_dir)
    if (path / SIGNATURE_FILE).exists():  # a user's ONNX graph: its signature, stored when it was read
        return ModelSignature.from_dict(_json(path / SIGNATURE_FILE))
    return from_config(path, pad_id)


def read_signature(model_dir: Path | str, pad_id: int | None = None) -> ModelSignature:
    """The signature of a model directory (cached per directory). `pad_id`: the tokenizer's, where the config
    names none."""
    return _read(str(Path(model_dir).resolve()), pad_id)


def from_graph(onnx_path: Path, config_dir: Path | None, pad_id: int) -> ModelSignature:
    """The signature of a user's ONNX file, from its graph's inputs and first output; the task and labels from a
    config.json beside it where there is one. Inputs structbench cannot build are one clear error."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = tuple(i.name for i in graph.input if i.name not in initialisers)
    unknown = [n for n in inputs if n not in FEEDABLE]
    if unknown:
        raise BenchError(f"{onnx_path} takes inputs structbench cannot feed: {', '.join(unknown)} (it builds "
                         f"{', '.join(FEEDABLE)} from the tokenizer); re-export the graph with those inputs")
    if IDS not in inputs:
        raise BenchError(f"{onnx_path} takes no {IDS} (inputs: {', '.join(inputs) or 'none'}): not a text encoder")
    out = graph.output[0]
    rank = len(out.type.tensor_type.shape.dim)
    base = from_config(config_dir, pad_id) if config_dir and (config_dir / "config.json").exists() else None
    if rank == 2 and base is not None and not base.is_embedding:
        kind, task = "logits", "classification"
    elif rank == 2 and base is None and out.name == LOGITS:
        kind, task = "logits", "classification"
    elif rank in (2, 3):
        kind, task = ("sentence" if rank == 2 else "token"), "embedding"
    else:
        raise BenchError(f"{onnx_path}'s first output {out.name!r} has rank {rank}: structbench reads classifier "
                         f"logits [batch, labels] or embeddings [batch, (sequence,) hidden]")
    labels = base.labels if base is not None and not base.is_embedding else ()
    if task == "classification" and not labels:
        dim = out.type.tensor_type.shape.dim[1]
        labels = tuple(f"LABEL_{i}" for i in range(dim.dim_value or 2))
    fields: dict[str, Any] = dict(inputs=inputs, output=out.name, output_kind=kind, task=task, labels=labels,
                                  source="graph", pad_id=pad_id)
    if base is not None:
        return replace(base, **fields)
    assumed: tuple[str, ...] = ("family: unknown (no config.json beside the graph): FLOPs not computed, no ORT fusion",)
    if task == "embedding":
        fields.update(pooling="mean")
        assumed += ("pooling: mean (no sentence-transformers 1_Pooling/config.json)",)
    return ModelSignature(family="onnx", ort_model_type=None, fusion_note="a graph without its config: no fusion",
                          assumed=assumed, **fields)
