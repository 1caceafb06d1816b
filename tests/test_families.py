"""A user's own model: tiny random-weight BERT, RoBERTa, XLM-RoBERTa, DistilBERT classifiers, a BERT sentence
embedding model with a sentence-transformers pooling config, and a classifier exported by hand with
torch.onnx.export. Each exports through the gate, measures, and serves its route through a real server."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from loadtests.service_proc import ServiceProcess, ServiceVariant
from tests.conftest import run_cli
from tests.families import OTHERS, build_family, hand_exported_onnx

pytestmark = pytest.mark.e2e
FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "bert-embedding")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model) -> dict[str, str]:
    root = tmp_path_factory.mktemp("families")
    specs = {kind: str(build_family(kind, root / kind, tiny_model)) for kind in FAMILIES}
    specs["onnx"] = f"onnx:{hand_exported_onnx(Path(specs['bert']), root / 'by-hand')}"
    return specs


@contextmanager
def running_service(model: str, backend: str):
    """`python -m bench.service --model …` in its own process on 127.0.0.1, port 0."""
    service = ServiceProcess(model, ServiceVariant.of(backend, backend=backend))
    try:
        yield service.wait_ready(300)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def exported(models) -> dict[str, dict]:
    from exporters.pipeline import ExportConfig, export_all

    return {kind: export_all(ExportConfig(model=spec, parity_n=64))[1] for kind, spec in models.items()}


@pytest.mark.parametrize("kind", (*FAMILIES, "onnx"))
def test_every_family_exports_every_variant_through_the_gate_with_its_signature(exported, kind):
    manifest = exported[kind]
    signature = manifest["signature"]
    assert signature["graph_inputs"] == list(signature["inputs"])
    expected_inputs = 3 if kind in ("bert", "bert-embedding", "onnx") else 2  # RoBERTa, DistilBERT: no token types
    assert len(signature["inputs"]) == expected_inputs
    for variant in ("fp32", "fp32-fused", "int8", "ov-fp32", "ov-int8"):
        assert manifest["variants"][variant]["parity"]["passed"] is True, (variant, manifest["variants"][variant])
    fused = manifest["variants"]["fp32-fused"]
    assert fused["fused_ops"].get("Attention") == 2 and "model_type=bert" in fused["fusion"]  # 2 layers fused
    assert "fused_ops" in manifest["variants"]["int8"]  # counted on every ONNX file


@pytest.mark.parametrize("kind", tuple(OTHERS))
def test_the_documented_other_families_export_by_the_same_path(tmp_path, tiny_model, kind):
    from exporters.pipeline import ExportConfig, export_all

    _, manifest = export_all(ExportConfig(model=str(build_family(kind, tmp_path / kind, tiny_model)), parity_n=64))
    assert all(manifest["variants"][v]["parity"]["passed"] for v in ("fp32", "fp32-fused", "int8", "ov-int8"))
    fused = manifest["variants"]["fp32-fused"]
    assert ("not fused" in fused["fusion"]) == (kind == "mpnet")  # MPNet has no ORT recipe, and says so


def test_the_embedding_model_is_gated_by_cosine_and_the_onnx_file_against_itself(exported):
    embedding = exported["bert-embedding"]
    assert embedding["signature"]["task"] == "embedding" and embedding["signature"]["pooling"] == "cls"
    int8 = embedding["variants"]["int8"]["parity"]
    assert int8["cosine_mean"] >= 0.99 and int8["cosine_min"] <= int8["cosine_mean"]
    onnx = exported["onnx"]
    assert onnx["signature"]["source"] == "graph"
    assert tuple(onnx["signature"]["labels"]) == ("negative", "neutral", "positive")  # from the config beside it
    assert onnx["variants"]["torch-int8"]["parity"]["not_measured"].startswith("the model was given as an ONNX")
    # a 3-label model's accuracy is not judged on 2-way sentiment reviews: it says so and what to give instead
    assert "--eval-data" in exported["bert"]["variants"]["int8"]["parity"]["floor"]["reason"]


@pytest.mark.parametrize("kind", ("roberta", "bert"))
def test_a_classifier_of_any_family_and_label_count_answers_its_labels(models, exported, kind):
    with running_service(model=models[kind], backend="ort-int8-cpu") as url:
        answer = httpx.post(f"{url}/api/sentiment", json={"text": "质量很好"}, timeout=30).json()
        labels = exported[kind]["signature"]["labels"]
        assert answer["label"] in labels and 0 <= answer["score"] <= 1
        wrong = httpx.post(f"{url}/api/embed", json={"texts": ["质量很好"]}, timeout=30)
        assert wrong.status_code == 404 and "/api/sentiment" in wrong.json()["error"]


def test_an_embedding_model_answers_one_normalised_vector_per_text(models):
    import numpy as np

    with running_service(model=models["bert-embedding"], backend="ort-int8-cpu") as url:
        body = httpx.post(f"{url}/api/embed", json={"texts": ["质量很好", "太差了", "质量很好"]}, timeout=30).json()
        vectors = np.array([r["embedding"] for r in body["results"]])
        assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert np.allclose(vectors[0], vectors[2], atol=1e-6)  # one text, one vector
        again = httpx.post(f"{url}/api/embed", json={"texts": ["太差了"]}, timeout=30).json()["results"][0]
        assert again["cached"] and np.allclose(again["embedding"], vectors[1])
        too_many = httpx.post(f"{url}/api/embed", json={"texts": ["a"] * 1000}, timeout=30)
        assert too_many.status_code == 422  # the same limits as the batch route
        wrong = httpx.post(f"{url}/api/sentiment", json={"text": "好"}, timeout=30)
        assert wrong.status_code == 404 and wrong.json()["detail"]["route"] == "/api/embed"


def test_bench_all_quick_measures_an_embedding_model_end_to_end_with_a_report(models, exported):
    out = run_cli("all", "--quick", "--model", models["bert-embedding"], "--backends", "ort-int8-cpu,torch-fp32-cpu",
                  "--service-processes", "1", "--no-slo-search", timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads(results_of(out).read_text())
    assert run["model"]["signature"]["task"] == "embedding"
    assert run["loadtests"] and all(level["failures"] == 0 for level in run["loadtests"])
    html = (results_of(out).parent / "report.html").read_text(encoding="utf-8")
    assert "sentence embedding" in html and "embeddings/s" in html  # the task, and the decision's unit


def test_an_onnx_file_is_measured_as_given_and_torch_says_why_not(models, exported):
    out = run_cli("run", "--model", models["onnx"], "--backends", "ort-fp32-cpu,ort-int8-cpu,torch-fp32-cpu",
                  "--batches", "1", "--processes", "1", "--duration", "1", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads(results_of(out).read_text())
    cells = {c["spec"]["backend"]: c for c in run["cells"]}
    assert cells["ort-fp32-cpu"]["status"] == "ok" and cells["ort-int8-cpu"]["status"] == "ok"
    assert cells["torch-fp32-cpu"]["status"] == "skipped" and "ONNX file" in cells["torch-fp32-cpu"]["reason"]
    assert cells["ort-fp32-cpu"]["flops_per_batch"] > 0  # the config beside the graph gives its shape


def test_eval_data_judges_accuracy_per_precision_and_pairs_give_spearman(models, tmp_path):
    from exporters.pipeline import ExportConfig, export_all

    labelled = tmp_path / "mine.jsonl"
    names = ("negative", "neutral", "positive")
    labelled.write_text("\n".join(json.dumps({"text": f"第{i}条评论，质量{'好' * (i % 5)}", "label": names[i % 3]},
                                             ensure_ascii=False) for i in range(60)), encoding="utf-8")
    _, manifest = export_all(ExportConfig(model=models["bert"], eval_data=labelled))
    int8 = manifest["variants"]["int8"]["parity"]
    assert int8["n"] == 60 and int8["accuracy"] is not None and len(int8["accuracy_ci"]) == 2
    assert int8["floor"]["passed"] is not None and "mine.jsonl" in manifest["parity_settings"]["texts"]
    pairs = tmp_path / "sts.csv"
    pairs.write_text("text1,text2,score\n" + "".join(f"好评{i},{'好评' if i % 2 else '差评'}{i},{i % 2}\n"
                                                     for i in range(30)), encoding="utf-8")
    _, embedded = export_all(ExportConfig(model=models["bert-embedding"], eval_data=pairs))
    figures = embedded["variants"]["int8"]["parity"]
    assert figures["pairs"] == 30 and -1 <= figures["spearman"] <= 1 and figures["reference_spearman"] is not None


def results_of(out) -> Path:
    return Path(next(line.split("results:", 1)[1].strip() for line in out.stdout.splitlines()
                     if line.startswith("results:")))


def test_models_it_cannot_measure_end_in_one_error_line_and_write_nothing(tmp_path, tiny_model, bench_home):
    import transformers as tf

    gpt2 = tmp_path / "gpt2"
    tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50)).save_pretrained(str(gpt2))
    for name in ("tokenizer.json", "vocab.txt"):
        (gpt2 / name).write_bytes((tiny_model / name).read_bytes())
    before = sorted(p.name for p in (bench_home / "artifacts" / "onnx").iterdir())
    out = run_cli("export", "--model", str(gpt2))
    assert out.returncode == 2 and out.stderr.strip().startswith("error:") and len(out.stderr.strip().splitlines()) == 1
    assert "not a sequence classifier or a sentence encoder" in out.stderr and "roberta" in out.stderr
    assert sorted(p.name for p in (bench_home / "artifacts" / "onnx").iterdir()) == before
    bare = tmp_path / "graph-alone"
    bare.mkdir()
    (bare / "g.onnx").write_bytes(b"")
    missing = run_cli("export", "--model", f"onnx:{bare / 'g.onnx'}")
    assert missing.returncode == 2 and "no tokenizer beside" in missing.stderr and "--tokenizer" in missing.stderr
