"""The CPU engines chosen for the CPU at hand: instruction-set rules, the plan they make, the OpenVINO and torch
BF16 backends on the tiny twin's real exports."""

from __future__ import annotations

import numpy as np
import pytest

from bench import backends
from bench.backends.base import BackendConfig, Unavailable
from bench.backends.ov_backend import compile_settings
from bench.core.errors import ConfigError
from bench.core.specs import BackendSpec
from bench.engine.harness import RunConfig, build_grid, plan_record
from bench.measure.isa import CpuIsa, left_out
from bench.model.artifacts import model_file
from bench.model.corpus import labelled_sample
from bench.model.tokenize import encode, load_tokenizer

ZEN3 = CpuIsa(frozenset({"avx2", "fma"}))
ZEN4 = CpuIsa(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))
SPR = CpuIsa(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}))


def test_bf16_is_never_planned_without_bf16_hardware_and_openvino_int8_needs_vnni():
    assert "emulated" in left_out("ov-bf16-cpu", ZEN3) and "emulated" in left_out("torch-bf16-cpu", ZEN3)
    assert "VNNI" in left_out("ov-int8-cpu", ZEN3)
    assert left_out("ov-int8-cpu", ZEN4) is None
    assert "AMX" in left_out("ov-bf16-cpu", ZEN4) and "AMX" in left_out("torch-bf16-cpu", ZEN4, batch=8)
    assert left_out("ov-bf16-cpu", SPR, batch=8) is None and left_out("torch-bf16-cpu", SPR) is None
    assert SPR.amx and not ZEN4.amx
    assert "full" in left_out("ov-fp32-cpu", SPR)  # FP32 is the full profile's baseline where INT8/BF16 are native
    assert "full" in left_out("torch-int8-cpu", SPR) and "fused" in left_out("ort-fp32-cpu", ZEN3)
    for name in ("ort-int8-cpu", "torch-fp32-cpu", "ort-fp32-fused-cpu"):  # the baselines and ORT INT8: always
        assert left_out(name, ZEN3) is None and left_out(name, SPR) is None


@pytest.mark.parametrize("isa,planned,absent", [
    (ZEN3, {"ort-int8-cpu|b8|corpus|tall"}, {"ov-int8-cpu|b1|corpus|tall", "ov-bf16-cpu|b1|corpus|tall",
                                            "torch-bf16-cpu|b1|corpus|tall"}),
    (ZEN4, {"ov-int8-cpu|b1|corpus|tall", "ov-int8-cpu|b8|corpus|tall", "torch-fp32-cpu|b1|corpus|tall"},
     {"ov-bf16-cpu|b8|corpus|tall", "ov-fp32-cpu|b1|corpus|tall", "torch-bf16-cpu|b1|corpus|tall"}),
    (SPR, {"ov-bf16-cpu|b8|corpus|tall", "ov-int8-cpu|b8|corpus|tall"}, {"ov-fp32-cpu|b1|corpus|tall"}),
])
def test_the_default_plan_follows_the_cpu_and_records_what_it_left_out(monkeypatch, isa, planned, absent):
    monkeypatch.setattr(CpuIsa, "here", classmethod(lambda cls: isa))
    keys = {c.key for c in build_grid(RunConfig())}
    assert planned <= keys and not absent & keys
    record = plan_record(RunConfig())
    named = {f"{c.backend} b{c.batch}" for c in build_grid(RunConfig())}
    assert {k.split("|")[0] + " b" + k.split("|")[1][1:] for k in absent} <= set(record["left_out"])
    assert all(record["left_out"].values()) and not named & set(record["left_out"])  # each says why, none planned
    # a grid given by hand is taken as given; the full profile plans every backend
    assert {c.backend for c in build_grid(RunConfig(backends=("ov-bf16-cpu",)))} == {"ov-bf16-cpu"}
    assert "ov-fp32-cpu|b1|corpus|tall" in {c.key for c in build_grid(RunConfig(profile="full"))}


def test_openvino_settings_are_explicit_and_validated():
    assert compile_settings("fp32", 2, {}) == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                               "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"}
    assert compile_settings("bf16", None, {"hint": "throughput", "streams": 2})["INFERENCE_PRECISION_HINT"] == "bf16"
    assert "INFERENCE_PRECISION_HINT" not in compile_settings("int8", 1, {})
    with pytest.raises(ConfigError, match="hint"):
        compile_settings("fp32", 1, {"hint": "fastest"})
    with pytest.raises(ConfigError, match="streams"):
        compile_settings("fp32", 1, {"streams": 0})


def logits_of(name: str, tiny_model, onnx_dir, texts) -> np.ndarray:
    spec = backends.resolve(name)
    backend = backends.create(BackendConfig(spec, tiny_model, model_file(onnx_dir, spec.engine, spec.precision,
                                                                         spec.device), threads=1))
    backend.load()
    try:
        tok = load_tokenizer(str(tiny_model))
        return backend.infer(encode(tok, list(texts), max_length=48))
    finally:
        backend.close()


@pytest.mark.e2e
def test_openvino_fp32_and_int8_run_the_exported_irs_and_agree_with_torch(tiny_model, tiny_onnx):
    onnx_dir, manifest = tiny_onnx
    for name in ("ov-fp32", "ov-int8"):  # both IRs exported, hashed (graph and weights) and gated
        entry = manifest["variants"][name]
        assert entry["file"].endswith(".xml") and len(entry["sha256"]) == 64 and entry["weights"]["size_bytes"] > 0
        assert entry["parity"]["passed"] is True
    assert manifest["variants"]["ov-int8"]["calibration"]["samples"] >= 16
    texts = labelled_sample(16, seed=3).texts
    ref = logits_of("torch-fp32-cpu", tiny_model, onnx_dir, texts)
    assert np.abs(logits_of("ov-fp32-cpu", tiny_model, onnx_dir, texts) - ref).max() < 1e-3
    int8 = logits_of("ov-int8-cpu", tiny_model, onnx_dir, texts)
    assert int8.shape == ref.shape and np.abs(int8 - ref).max() < 1.0 and not np.allclose(int8, ref, atol=1e-6)


@pytest.mark.e2e
def test_bf16_backends_run_in_bf16_where_the_cpu_has_it_and_refuse_to_emulate_elsewhere(monkeypatch, tiny_model,
                                                                                        tiny_onnx):
    onnx_dir, _ = tiny_onnx
    texts = labelled_sample(8, seed=4).texts
    if CpuIsa.here().bf16:
        ref = logits_of("torch-fp32-cpu", tiny_model, onnx_dir, texts)
        for name in ("ov-bf16-cpu", "torch-bf16-cpu"):
            out = logits_of(name, tiny_model, onnx_dir, texts)
            assert np.abs(out - ref).max() < 0.5 and not np.allclose(out, ref, atol=1e-6)  # BF16 rounding, not FP32
    monkeypatch.setattr(CpuIsa, "here", classmethod(lambda cls: ZEN3))
    for name in ("ov-bf16-cpu", "torch-bf16-cpu"):
        with pytest.raises(Unavailable, match="emulated"):
            logits_of(name, tiny_model, onnx_dir, texts)


def test_unknown_openvino_device_is_refused():
    with pytest.raises(ConfigError):
        BackendSpec.parse("ov-int8-npu")


@pytest.mark.e2e
@pytest.mark.parametrize("name,replicas", [("ov-int8-cpu", 1), ("ov-int8-cpu", 2), ("ov-fp32-cpu", 1)])
def test_the_service_serves_the_openvino_engines_in_process_and_as_replicas(tiny_model, tiny_onnx, name, replicas):
    import httpx

    from bench.service.app import create_app
    from bench.service.config import ServiceConfig
    from bench.service.server import ThreadedServer
    from tests.service_helpers import wait_ready

    config = ServiceConfig(model="twin:tiny", backend=name, onnx_dir=str(tiny_onnx[0]), replicas=replicas,
                           threads=1, cache_size=0)
    with ThreadedServer(create_app(config)) as url, httpx.Client(base_url=url, timeout=60) as client:
        health = wait_ready(client, timeout=120)
        assert health["backend"] == name and health["replicas_up"] == replicas
        texts = ["这部电影太烂了，完全不值得一看", "今天天气真好，心情很棒！"]
        answers = client.post("/api/sentiment/batch", json={"texts": texts}).json()["results"]
        assert [a["text"] for a in answers] == texts and all(a["label"] in ("负面", "正面") for a in answers)


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["ov-int8-cpu", "ov-fp32-cpu"])
def test_an_openvino_cell_measures_in_a_fresh_worker_and_records_its_settings(tiny_model, tiny_onnx, name):
    from bench.core.records import CellSpec
    from bench.core.stats import StopRule
    from bench.engine.runner import WorkerLimits, WorkerRequest, run_cell

    spec = backends.resolve(name)
    path = model_file(tiny_onnx[0], spec.engine, spec.precision, spec.device)
    request = WorkerRequest(CellSpec(name, threads=1), str(tiny_model), str(path),
                            stop=StopRule(min_iters=5, min_time_s=0.2, max_time_s=1.0))
    cell = run_cell(request, WorkerLimits(timeout_s=120))
    assert cell.status == "ok", cell.reason
    meta = cell.runs[0].meta
    assert meta.openvino and meta.openvino_settings["INFERENCE_NUM_THREADS"] == "1"
    assert "LATENCY" in meta.openvino_settings["PERFORMANCE_HINT"]
    if name == "ov-fp32-cpu":  # FP32 means FP32: never the runtime's BF16 default on BF16 hardware
        assert "float32" in meta.openvino_settings["INFERENCE_PRECISION_HINT"]
