"""Model sources: ModelScope layouts converted from checkpoints the tests write, hf:/local loading, errors."""

import json
import shutil
import socket
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from bench.core.errors import BenchError
from bench.model import sources
from bench.model.convert import convert_modelscope
from bench.model.tokenize import encode, load_tokenizer

TEXTS = ["这家酒店的服务很好，房间干净。", "质量太差了，完全不值这个价格！", "还行吧"]


def logits_of(model_dir) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    enc = {k: torch.from_numpy(v) for k, v in encode(load_tokenizer(str(model_dir)), TEXTS).items()}
    with torch.inference_mode():
        return model(**enc).logits.numpy()


def modelscope_layout(state: dict, backbone: str, head: str, gamma_beta: bool, position_ids: bool) -> dict:
    out = {}
    for key, tensor in state.items():
        key = key.replace("bert.", f"{backbone}.", 1) if key.startswith("bert.") else key
        key = f"{head}{key}" if key.startswith("classifier.") else key
        if gamma_beta:
            key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        out[key] = tensor.clone()
    if position_ids:
        out[f"{backbone}.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    return out


def write_checkpoint(tmp_path, tiny_model, layout: dict, fmt: str = "bin", config: dict | None = None):
    src = tmp_path / "ms"
    src.mkdir()
    state = modelscope_layout(load_file(str(tiny_model / "model.safetensors")), **layout)
    if fmt == "bin":
        torch.save(state, src / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(src / "model.safetensors"))
    shutil.copy(tiny_model / "vocab.txt", src / "vocab.txt")
    cfg = config or {"model_type": "structbert", "num_attention_heads": 2, "task": "text-classification"}
    (src / "config.json").write_text(json.dumps(cfg, ensure_ascii=False))
    return src


LAYOUTS = {
    "bert-prefix": dict(backbone="bert", head="", gamma_beta=False, position_ids=False),
    "encoder-prefix-head-classifier": dict(backbone="encoder", head="head.", gamma_beta=False, position_ids=False),
    "gamma-beta-layernorm": dict(backbone="bert", head="", gamma_beta=True, position_ids=False),
    "position-ids-dropped": dict(backbone="encoder", head="head.", gamma_beta=True, position_ids=True),
}


@pytest.mark.e2e
@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_modelscope_layouts_convert_to_identical_bert(tmp_path, tiny_model, layout, fmt):
    src = write_checkpoint(tmp_path, tiny_model, LAYOUTS[layout], fmt)
    convert_modelscope(src, tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == (128, 2, 512)
    assert cfg["id2label"] == {"0": "负面", "1": "正面"}
    np.testing.assert_allclose(logits_of(tmp_path / "out"), logits_of(tiny_model), atol=1e-5)


def test_label_map_from_checkpoint_config_wins(tmp_path, tiny_model):
    cfg = {"num_attention_heads": 2, "id2label": {"0": "Negative", "1": "Positive"}}
    src = write_checkpoint(tmp_path, tiny_model, LAYOUTS["bert-prefix"], config=cfg)
    convert_modelscope(src, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == {"0": "Negative",
                                                                                       "1": "Positive"}


def test_corrupt_weights_give_one_clear_error(tmp_path, tiny_model):
    src = write_checkpoint(tmp_path, tiny_model, LAYOUTS["bert-prefix"])
    (src / "pytorch_model.bin").write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(BenchError, match="cannot read weights .*pytorch_model.bin"):
        convert_modelscope(src, tmp_path / "out")


def test_extra_tensor_fails_strict_load(tmp_path, tiny_model):
    src = write_checkpoint(tmp_path, tiny_model, LAYOUTS["bert-prefix"])
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["bert.encoder.layer.0.attention.self.extra"] = torch.zeros(3)
    torch.save(state, src / "pytorch_model.bin")
    with pytest.raises(BenchError, match="does not match a BERT classifier"):
        convert_modelscope(src, tmp_path / "out")


def test_local_directory_loads_as_is(tiny_model):
    assert sources.materialize(str(tiny_model)) == tiny_model


def test_local_directory_missing_files_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BenchError, match="missing: .*model.safetensors.*tokenizer"):
        sources.materialize(str(tmp_path))


@pytest.mark.parametrize("spec", ["nonsense", "twin:huge", "hf:", "/no/such/dir"])
def test_unknown_sources_are_rejected(spec):
    with pytest.raises(BenchError):
        sources.parse_source(spec)


def test_default_modelscope_id():
    assert sources.parse_source("modelscope").ident == "damo/nlp_structbert_sentiment-classification_chinese-base"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("spec,env", [("hf:uer/roberta-base-finetuned-jd-binary-chinese", "HF_ENDPOINT"),
                                      ("modelscope", "MODELSCOPE_DOMAIN")])
def test_unreachable_hub_fails_fast_naming_source_and_twin(monkeypatch, tmp_path, spec, env):
    monkeypatch.setenv(env, f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(BenchError, match="cannot reach 127.0.0.1.*--model twin") as err:
        sources.materialize(spec, cache_root=tmp_path)
    assert spec.split(":")[-1] in str(err.value) or "modelscope" in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing partial left behind


def test_hf_source_downloads_through_snapshot_download(monkeypatch, tmp_path, tiny_model):
    """hf:ID with a reachable endpoint: whatever snapshot_download returns becomes the cached model dir."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    threading.Thread(target=lambda: server.accept()[0].close(), daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    snapshot = tmp_path / "snapshot"
    shutil.copytree(tiny_model, snapshot, ignore=shutil.ignore_patterns("source.json"))  # as a hub would ship it
    config = json.loads((snapshot / "config.json").read_text())
    del config["structbench"]  # a hub checkpoint carries no twin marker
    (snapshot / "config.json").write_text(json.dumps(config))
    calls = []
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo_id, **kw: calls.append(repo_id) or snapshot)
    out = sources.materialize("hf:someone/some-model", cache_root=tmp_path / "cache")
    server.close()
    assert calls == ["someone/some-model"]
    assert json.loads((out / "source.json").read_text()) == {"source": "hf:someone/some-model", "synthetic": False}
    np.testing.assert_allclose(logits_of(out), logits_of(tiny_model), atol=1e-6)


def test_a_copied_twin_without_its_source_json_is_still_synthetic(tmp_path, tiny_model):
    """The twin's config.json says its weights are synthetic; a copy that lost source.json must not pass as real."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy, ignore=shutil.ignore_patterns("source.json"))
    assert sources.read_source_meta(copy)["synthetic"] is True
    out = sources.materialize(str(copy), cache_root=tmp_path / "cache")
    assert json.loads((out / "source.json").read_text())["synthetic"] is True
