"""The results file's host and model blocks as typed records (schema 3): a round trip, every older file in
tests/data read into the records with nothing dropped, unknown keys kept or dropped as bench.core.run_records says,
and the fields held to the keys the code that writes them produces (fingerprint, manifest, parity gate)."""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.core.results import SCHEMA_VERSION, RunResult, load_run, run_from_dict, run_to_dict, save_run, stored_version
from bench.core.run_records import (
    FloorVerdict,
    GpuPeak,
    HostRecord,
    ModelRecord,
    ParityRecord,
    PeakGemm,
    SourceMeta,
    TrainedTwinAccuracy,
    VariantRecord,
    from_json,
)
from bench.core.signature import ModelSignature
from bench.core.upgrade import v2_model

DATA = Path(__file__).parent / "data"
OLD_FILES = sorted([*DATA.glob("results_v*.json"), *DATA.glob("report_run*.json")])
MANIFESTS = sorted(DATA.glob("manifest_*.json"))
PEAK = {"peak_flops": 2e11, "by_engine": {"numpy": 1.5e11, "onnxruntime": 2e11},
        "onnxruntime_by_shape": {"256x768x3072": 2e11}, "bf16_peak_flops": None, "bf16_by_shape": {},
        "bf16_kernel": None, "size": 2048, "dtype": "float32", "int8_peak_ops": 4e11,
        "int8_by_shape": {"256x768x3072": 4e11}, "int8_kernel": "ORT MatMulInteger",
        "gpu": {"fp32": 5e13, "tf32": 4e14, "fp16": 8e14, "by_engine": {"torch": {"fp32": 5e13}, "onnxruntime":
                "not installed (onnxruntime)"}, "device": 0, "kernel": "dense square GEMM"}}
FLOOR = {"max_drop": 0.01, "passed": False, "reason": "accuracy 0.812 is 3.1 points below FP32's 0.843 (floor: 1.0)"}
TWIN_PARITY = {"n": 1000, "label_agreement": 0.9, "agreement_ci": [0.88, 0.92], "max_abs_diff": 0.9,
               "mean_abs_diff": 0.2, "accuracy": 0.812, "accuracy_ci": [0.79, 0.83], "reference_accuracy": 0.843,
               "accuracy_delta": -0.031, "accuracy_delta_ci": [-0.045, -0.018], "floor": FLOOR, "passed": False,
               "failures": [FLOOR["reason"]], "seconds": 3.2, "thresholds": {"min_agreement": 0.8, "max_abs_diff": 1.0}}


def manifest(name: str = "manifest_twin_tiny.json") -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def full_run() -> RunResult:
    """A run with every block filled: a fingerprint with its peaks, a real manifest's model block, a trained twin."""
    fingerprint = {"hostname": "h", "cpu_model": "AMD EPYC", "cpu_flags": {"avx2": True, "amx_int8": False},
                   "logical_cores": 2, "ram_bytes": 8 * 2**30, "gpu_name": None, "gpu_note": "no NVIDIA GPU",
                   "rapl_readable": False, "libraries": {"numpy": "2.1"}, "thread_env": {"OMP_NUM_THREADS": None},
                   "git_commit": "abc", "cpu_power": {"governor": "not readable", "turbo": "on", "smt": "off",
                                                      "mhz_now": 2445}}
    twin = TrainedTwinAccuracy.from_manifest({"source": {"source": "twin:trained", "synthetic": False,
                                                         "trained": True, "heldout_n": 1000},
                                              "variants": {"int8": {"file": "x", "parity": TWIN_PARITY},
                                                           "fp16": {"file": "y"}}}, 0.01, 1000)
    model = replace(ModelRecord.from_manifest("twin:tiny", "/o", manifest()), trained_twin=twin)
    return RunResult("r", "2026-12-08T00:00:00+0000", HostRecord.from_fingerprint(fingerprint, PEAK), model, {})


def test_a_written_run_reads_back_equal_with_every_record_typed(tmp_path):
    run = full_run()
    save_run(run, tmp_path)
    again = load_run(tmp_path)
    assert again == run and stored_version(tmp_path) == SCHEMA_VERSION == 3
    assert isinstance(again.host.peak_gemm.gpu, GpuPeak) and again.host.peak_gemm.gpu.rate("tf32") == 4e14
    assert again.host.cpu_power.mhz_now == 2445 and again.host.cpu_flags == {"avx2": True, "amx_int8": False}
    assert isinstance(again.model.signature, ModelSignature)
    assert again.model.graph_inputs == again.model.signature.inputs
    assert again.model.trained_twin.variants["int8"].parity.floor == FloorVerdict(**FLOOR)
    assert again.model.trained_twin.variants["int8"].parity.agreement_ci == (0.88, 0.92)
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["model"]["signature"] == json.loads(json.dumps(run.model.signature.to_dict()))
    assert "graph_inputs" not in raw["model"]["signature"] and "sha256" not in raw["model"]["variants"]["fp32"]


@pytest.mark.parametrize("path", OLD_FILES, ids=lambda p: p.name)
def test_every_older_file_reads_into_the_records_with_nothing_dropped(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["schema_version"] < SCHEMA_VERSION
    run = load_run(path)
    assert isinstance(run.host, HostRecord) and isinstance(run.model, ModelRecord)
    assert run.host.cpu_model == raw["host"]["cpu_model"] and run.model.spec == raw["model"]["spec"]
    assert run.model.synthetic == raw["model"].get("synthetic")
    for name, variant in run.model.variants.items():
        parity = raw["model"]["variants"][name].get("parity")
        assert isinstance(variant, VariantRecord) and isinstance(variant.parity, ParityRecord) == bool(parity)
        assert variant.parity is None or variant.parity.passed == parity["passed"]
    written = run_to_dict(run)
    assert_kept(raw["host"], written["host"], "host")
    assert_kept(v2_model(raw["model"]), written["model"], "model")
    assert run_from_dict(written) == run


def assert_kept(old: dict, new: dict, where: str) -> None:
    """Every key of `old` is in `new` (or its `extra`) with the same value, nested objects key by key."""
    for key, value in old.items():
        got = new[key] if key in new else new.get("extra", {}).get(key, KeyError)
        assert got is not KeyError, f"{where}.{key} dropped"
        if isinstance(value, dict) and isinstance(got, dict):
            assert_kept(value, got, f"{where}.{key}")
        else:
            assert json.loads(json.dumps(got)) == value, f"{where}.{key}"


def test_a_version_2_signature_is_typed_and_its_graph_inputs_move_beside_it():
    raw = json.loads((DATA / "results_v2_signature.json").read_text(encoding="utf-8"))
    assert raw["schema_version"] == 2 and "graph_inputs" in raw["model"]["signature"]
    run = load_run(DATA / "results_v2_signature.json")
    assert run.model.signature.family == "roberta" and run.model.signature.what.startswith("2-label")
    assert run.model.graph_inputs == tuple(raw["model"]["signature"]["graph_inputs"])
    assert load_run(DATA / "results_v2_roberta.json").model.signature is None  # made before models carried one
    assert load_run(DATA / "results_v1.json").model == ModelRecord(spec="twin", synthetic=True)


@pytest.mark.parametrize("name", [p.name for p in MANIFESTS])
def test_the_model_block_keeps_every_key_of_a_real_manifest(name):
    data = manifest(name)
    model = ModelRecord.from_manifest("m", "/o", data)
    assert model.extra == {} and model.source.extra == {}  # source.json's keys are all fields
    assert model.accuracy_texts == data["parity_settings"]["texts"] and model.quantization.weight_type == "QInt8"
    signature = dict(data["signature"])
    assert list(model.graph_inputs) == signature.pop("graph_inputs")
    assert json.loads(json.dumps(model.signature.to_dict())) == signature
    written = model.to_dict()
    for variant, entry in data["variants"].items():
        assert_kept({k: v for k, v in entry.items() if k != "sha256"}, written["variants"][variant], variant)


def test_unknown_keys_stay_in_the_open_blocks_and_are_dropped_in_fixed_records():
    data = run_to_dict(full_run())
    data["host"]["future_probe"] = {"a": [1, 2]}
    data["host"]["cpu_power"]["voltage"] = 1.1  # a fixed record: dropped
    data["model"]["source"]["licence"] = "MIT"
    data["model"]["from_a_fork"] = True
    data["model"]["variants"]["int8"]["parity"]["kl_divergence"] = 0.1
    run = run_from_dict(data)
    assert run.host.extra == {"future_probe": {"a": [1, 2]}} and run.model.extra == {"from_a_fork": True}
    assert run.model.source.extra == {"licence": "MIT"} and not hasattr(run.host.cpu_power, "voltage")
    assert run_from_dict(run_to_dict(run)) == run  # kept keys survive a re-save, in `extra`
    assert "kl_divergence" not in run_to_dict(run)["model"]["variants"]["int8"]["parity"]


def test_a_block_or_mapping_that_is_not_an_object_is_refused():
    from bench.core.errors import BenchError

    data = run_to_dict(full_run())
    with pytest.raises(BenchError, match="not a valid results file: expected dict.*VariantRecord.*got list"):
        run_from_dict({**data, "model": {**data["model"], "variants": ["int8"]}})
    data["host"] = ["not", "an", "object"]
    with pytest.raises(BenchError, match="HostRecord must be an object"):
        run_from_dict(data)


def any_inside(hint: Any) -> bool:
    return hint is Any or any(any_inside(a) for a in typing.get_args(hint))


def records_below(cls: type, seen: set) -> set:
    """`cls` and every record type its fields hold, however nested."""
    if cls in seen or not (isinstance(cls, type) and is_dataclass(cls)):
        return seen
    seen.add(cls)
    pending = list(typing.get_type_hints(cls).values())
    while pending:
        hint = pending.pop()
        pending += typing.get_args(hint)
        records_below(hint, seen)
    return seen


def test_the_host_and_model_blocks_are_typed_all_the_way_down():
    hints = typing.get_type_hints(RunResult)
    assert hints["host"] is HostRecord and hints["model"] is ModelRecord, "RunResult.host/model must be records"
    records = records_below(HostRecord, set()) | records_below(ModelRecord, set())
    assert {PeakGemm, GpuPeak, SourceMeta, VariantRecord, ParityRecord, FloorVerdict, ModelSignature} <= records
    untyped = [f"{cls.__name__}.{name}" for cls in records for name, hint in typing.get_type_hints(cls).items()
               if any_inside(hint)]
    assert untyped == [], f"fields holding Any: {untyped}"


def test_the_host_record_has_a_field_for_every_key_the_fingerprint_writes(monkeypatch):
    from bench.measure import gpu, host
    from bench.measure.gpu import NvmlGpu
    from tests.fakes import FakeNvml

    monkeypatch.setattr(gpu, "open_cuda_gpu", lambda *_a, **_k: NvmlGpu(0, FakeNvml()).open())
    record = HostRecord.from_fingerprint(host.fingerprint())
    assert record.extra == {} and record.gpu_name and record.gpu_matched_by == "index" and record.gpu_cuda_device == 0
    assert set(record.cpu_flags) == set(host.FLAGS_OF_INTEREST) and isinstance(record.cpu_power.governor, str)

    class Driver:  # NVML missing, the CUDA driver present
        def name(self, _ordinal):
            return "NVIDIA T4"

        def version(self):
            return "12.4"

        def uuid(self, _ordinal):
            return "GPU-1"

    monkeypatch.setattr(gpu, "open_cuda_gpu", lambda *_a, **_k: None)
    monkeypatch.setattr("bench.measure.cuda_driver.load_driver", lambda: (Driver(), None))
    record = HostRecord.from_fingerprint(host.fingerprint())
    assert record.extra == {} and (record.gpu_name, record.gpu_uuid) == ("NVIDIA T4", "GPU-1") and record.gpu_note


def test_the_parity_record_has_a_field_for_every_key_the_gate_writes():
    """exporters.pipeline.run_parity's records: compare (classifier, synthetic or real weights), compare_vectors
    with spearman (embeddings), a variant that could not run; each with its seconds."""
    from exporters.parity import DEFAULT_THRESHOLDS, EMBEDDING_THRESHOLDS, compare, compare_vectors, spearman

    rng = np.random.default_rng(0)
    ref, vectors = rng.standard_normal((12, 2)), rng.standard_normal((8, 4))
    labels = (ref.argmax(-1) + (np.arange(12) % 5 == 0)) % 2
    written = [compare(ref, ref + 0.01, labels, DEFAULT_THRESHOLDS["int8"], synthetic, 0.01) for synthetic in (1, 0)]
    written.append({**compare_vectors(vectors, vectors + 0.001, EMBEDDING_THRESHOLDS["int8"]),
                    **spearman(vectors, vectors + 0.001, [0.1, 0.5, 0.9, 0.3])})
    written = [{**figures, "seconds": 1.0} for figures in written]
    written.append({"passed": None, "not_measured": "needs a CUDA execution provider"})
    names, floor = {f.name for f in fields(ParityRecord)}, {f.name for f in fields(FloorVerdict)}
    for figures in written:
        assert set(figures) <= names and set(figures.get("floor") or {}) <= floor, set(figures) - names
        assert_kept(figures, asdict(from_json(ParityRecord, json.loads(json.dumps(figures)))), "parity")


def test_the_variant_record_has_a_field_for_every_key_the_manifest_writes(tmp_path):
    from bench.model.artifacts import ALL_FILES, ONNX_FILES, OV_FILES
    from exporters.openvino import weights_of
    from exporters.pipeline import variant_entries

    for name in ALL_FILES.values():
        (tmp_path / name).write_bytes(b"x")
    for name in OV_FILES.values():
        weights_of(tmp_path / name).write_bytes(b"xy")
    info = {"not_built": {}, "export_seconds": {p: 1.0 for p in ALL_FILES}, "fusion": "onnxruntime optimizer",
            "fused_ops": {p: {"Attention": 2} for p in ONNX_FILES}}
    entries = variant_entries(tmp_path, info) | variant_entries(tmp_path, {**info, "not_built": {"ov-fp32": "no"}})
    names = {f.name for f in fields(VariantRecord)} | {"sha256"}  # the digest stays in the manifest
    for entry in entries.values():
        assert set(entry) <= names, set(entry) - names
    ov = from_json(VariantRecord, entries["ov-int8"])
    assert ov.weights.size_bytes == 2 and ov.total_bytes == 3 and ov.calibration["samples"] > 0


def test_the_floor_is_read_from_the_trained_twin_for_a_synthetic_model():
    from bench.model.artifacts import accuracy_records, below_floor, floor_exclusions

    twin = TrainedTwinAccuracy.from_manifest({"source": {"source": "twin:trained"},
                                              "variants": {"int8": {"parity": TWIN_PARITY}}}, 0.01, 1000)
    model = ModelRecord(spec="twin", synthetic=True, trained_twin=twin)
    records, whose = accuracy_records(model)
    assert below_floor(records) == {"int8": FLOOR["reason"]} and "trained twin (1000 held-out" in whose
    assert floor_exclusions(model) == {"ort-int8-cpu": f"below the accuracy floor on {whose}: {FLOOR['reason']}"}
    assert floor_exclusions(replace(model, synthetic=False)) == {}  # its own variants: none below the floor
    assert model.parity("int8") is None and twin.variants["int8"].parity.below_floor


def test_a_source_recorded_as_a_string_and_a_missing_gpu_peak_read_as_records():
    data = run_to_dict(full_run())
    data["schema_version"] = 2
    data["model"]["source"] = "twin:tiny"
    data["host"]["peak_gemm"]["gpu"] = {"error": "GPU peak not measured: TimeoutExpired"}
    run = run_from_dict(data)
    assert run.model.source == SourceMeta(source="twin:tiny") and run.host.peak_gemm.gpu.rate("fp16") is None
    assert run.host.peak_gemm.gpu.error.startswith("GPU peak not measured") and isinstance(run.host.peak_gemm, PeakGemm)
