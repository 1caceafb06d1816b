"""The model signature: read from configs, sentence-transformers files and graphs; the one place that names the
model's inputs and outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.core.signature import FEEDABLE, LOGITS, ModelSignature, from_config, from_graph, pool, read_signature
from tests.conftest import REPO

BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 100, "type_vocab_size": 2, "max_position_embeddings": 512}


def model_dir(tmp_path: Path, config: dict, name: str = "m") -> Path:
    out = tmp_path / name
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_a_bert_classifier_has_three_inputs_and_its_labels_in_id_order(tmp_path):
    cfg = {**BERT, "architectures": ["BertForSequenceClassification"], "id2label": {"2": "pos", "0": "neg",
                                                                                  "1": "mid"}}
    sig = from_config(model_dir(tmp_path, cfg))
    assert sig.task == "classification" and sig.output == LOGITS and sig.labels == ("neg", "mid", "pos")
    assert sig.inputs == ("input_ids", "attention_mask", "token_type_ids") and sig.ort_model_type == "bert"
    assert "3-label" in sig.what


def test_roberta_and_distilbert_take_no_token_types_and_say_their_own_shape(tmp_path):
    roberta = from_config(model_dir(tmp_path, {**BERT, "model_type": "xlm-roberta", "type_vocab_size": 1,
                                               "pad_token_id": 1, "max_position_embeddings": 514,
                                               "architectures": ["XLMRobertaForSequenceClassification"]}, "r"))
    assert roberta.inputs == ("input_ids", "attention_mask") and roberta.position_offset == 2
    assert roberta.max_length == 512  # 514 positions less the padding offset
    distil = from_config(model_dir(tmp_path, {"model_type": "distilbert", "dim": 48, "n_layers": 3, "n_heads": 4,
                                              "hidden_dim": 96, "vocab_size": 100,
                                              "architectures": ["DistilBertForSequenceClassification"]}, "d"))
    assert (distil.hidden, distil.layers, distil.heads, distil.ffn) == (48, 3, 4, 96)
    assert distil.inputs == ("input_ids", "attention_mask")


def test_flops_follow_the_architecture_and_the_head(tmp_path):
    sig = from_config(model_dir(tmp_path, {**BERT, "architectures": ["BertForSequenceClassification"]}))
    h, i, s = 32, 64, 10
    assert sig.flops(3, s) == 2 * 3 * (2 * (4 * s * h * h + 2 * s * s * h + 2 * s * h * i) + h * h + h * 2)
    embedding = from_config(model_dir(tmp_path, {**BERT, "architectures": ["BertModel"]}, "e"))
    assert embedding.flops(1, s) == 2 * (2 * (4 * s * h * h + 2 * s * s * h + 2 * s * h * i))  # no head


def test_a_sentence_transformers_layout_gives_pooling_and_normalisation(tmp_path):
    folder = model_dir(tmp_path, {**BERT, "architectures": ["BertModel"]})
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    sig = from_config(folder)
    assert sig.task == "embedding" and sig.pooling == "cls" and sig.normalize and not sig.assumed
    bare = from_config(model_dir(tmp_path, {**BERT, "architectures": ["BertModel"]}, "bare"))
    assert bare.pooling == "mean" and not bare.normalize and "pooling: mean" in bare.assumed[0]


@pytest.mark.parametrize("config, words", [
    ({**BERT, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "not a sequence classifier"),
    ({**BERT, "model_type": "t5", "is_encoder_decoder": True}, "not a sequence classifier"),
    ({**BERT, "model_type": "funnel"}, "unsupported model_type 'funnel'"),
])
def test_models_it_cannot_measure_are_one_clear_error_naming_what_is_supported(tmp_path, config, words):
    with pytest.raises(BenchError, match=words) as err:
        from_config(model_dir(tmp_path, config))
    assert "roberta" in str(err.value) and "docs/models.md" in str(err.value)


def test_pooling_uses_only_attended_positions():
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert np.allclose(pool(hidden, mask, "mean"), [[1, 2], [6, 7]])
    assert np.allclose(pool(hidden, mask, "cls"), [[0, 1], [6, 7]])
    assert np.allclose(pool(hidden, mask, "max"), [[2, 3], [6, 7]])
    assert np.allclose(pool(hidden, mask, "last"), [[2, 3], [6, 7]])


def test_feed_builds_exactly_the_inputs_the_model_takes():
    sig = ModelSignature(family="roberta", task="classification", inputs=("input_ids", "attention_mask",
                                                                          "position_ids"),
                         output=LOGITS, output_kind="logits", labels=("a", "b"), position_offset=2)
    feed = sig.dummy(2, 4, token=7)
    assert list(feed) == list(sig.inputs) and (feed["input_ids"] == 7).all()
    assert (feed["position_ids"][1] == [2, 3, 4, 5]).all()
    token_level = ModelSignature(family="onnx", task="embedding", inputs=("input_ids", "attention_mask"),
                                 output="last_hidden_state", output_kind="token", pooling="mean", normalize=True)
    vectors = token_level.finish(np.ones((2, 4, 3)), feed)
    assert vectors.shape == (2, 3) and np.allclose(np.linalg.norm(vectors, axis=1), 1)


def onnx_graph(path: Path, inputs: tuple[str, ...], output: str = "out", rank: int = 3) -> Path:
    from onnx import TensorProto, helper, save

    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in inputs]
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["b", "s", 8][:rank])
    node = helper.make_node("Cast", [inputs[0]], [output], to=TensorProto.FLOAT)
    save(helper.make_model(helper.make_graph([node], "g", ins, [out])), str(path))
    return path


def test_a_graph_with_inputs_it_cannot_build_is_refused_naming_them(tmp_path):
    path = onnx_graph(tmp_path / "g.onnx", ("input_ids", "attention_mask", "pixel_values"))
    with pytest.raises(BenchError, match="cannot feed: pixel_values"):
        from_graph(path, None, 0)


def test_a_bare_token_level_graph_is_an_embedding_model_pooled_by_us(tmp_path):
    sig = from_graph(onnx_graph(tmp_path / "g.onnx", ("input_ids", "attention_mask")), None, 0)
    assert sig.task == "embedding" and sig.output_kind == "token" and sig.source == "graph"
    assert sig.flops(1, 10) == 0 and any("family: unknown" in a for a in sig.assumed)


def test_a_stored_signature_round_trips(tmp_path):
    sig = from_config(model_dir(tmp_path, {**BERT, "architectures": ["BertForSequenceClassification"]}))
    folder = tmp_path / "stored"
    folder.mkdir()
    (folder / "signature.json").write_text(json.dumps(sig.to_dict()))
    assert read_signature(folder) == sig


NAMES = re.compile(r"""["'](%s)["']""" % "|".join((*FEEDABLE, LOGITS)))
HOME = REPO / "bench" / "core" / "signature.py"


def test_no_module_but_the_signature_spells_out_input_or_output_names():
    offenders = [f"{path.relative_to(REPO)}:{n}" for package in ("bench", "exporters", "loadtests", "reports")
                 for path in sorted((REPO / package).rglob("*.py")) if path != HOME
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if NAMES.search(line)]
    assert offenders == [], f"input/output names restated outside bench/core/signature.py: {offenders}"
    assert NAMES.search(HOME.read_text(encoding="utf-8"))  # the pattern finds them where they belong
