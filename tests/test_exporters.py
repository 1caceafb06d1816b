"""Export of the tiny twin to every variant, the parity gate (passing and failing), reuse, bad input."""

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bench.core.errors import BenchError
from bench.model.artifacts import ONNX_FILES, variant_path
from exporters.pipeline import ExportConfig, check_gate, export_all, run_parity
from exporters.quantize import choose_settings
from tests.conftest import run_cli


def test_every_variant_exported_with_manifest(tiny_onnx):
    out_dir, manifest = tiny_onnx
    assert manifest["synthetic"] is True and manifest["source"]["source"] == "twin:tiny"
    for precision, name in ONNX_FILES.items():
        entry = manifest["variants"][precision]
        assert (out_dir / name).stat().st_size == entry["size_bytes"] > 0
        assert len(entry["sha256"]) == 64
    model = onnx.load(str(out_dir / ONNX_FILES["fp32"]))
    assert model.opset_import[0].version >= 17
    dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {n: ["batch", "sequence"] for n in ("input_ids", "attention_mask", "token_type_ids")}


def test_fused_model_has_one_attention_per_layer(tiny_onnx):
    _, manifest = tiny_onnx
    ops = manifest["variants"]["fp32-fused"]["fused_ops"]
    assert ops["Attention"] == 2 and ops["EmbedLayerNormalization"] == 1 and ops["SkipLayerNormalization"] == 4


def test_parity_passes_for_every_runnable_variant(tiny_onnx):
    _, manifest = tiny_onnx
    assert manifest["parity_settings"]["n"] == 128  # a synthetic twin's gate (trained weights: 1,000 texts)
    float_n = manifest["parity_settings"]["float_n"]  # FP32 variants differ by rounding: fewer texts find a break
    for name in ("fp32", "fp32-fused", "ov-fp32", "int8", "torch-int8", "ov-int8"):
        parity = manifest["variants"][name]["parity"]
        n = float_n if name in ("fp32", "fp32-fused", "ov-fp32") else manifest["parity_settings"]["n"]
        assert parity["passed"] is True and parity["n"] == n and parity["accuracy"] is None  # synthetic
        assert parity["agreement_ci"][0] <= parity["label_agreement"] <= parity["agreement_ci"][1]
    assert manifest["variants"]["fp32"]["parity"]["max_abs_diff"] < 1e-4
    import onnxruntime as ort

    fp16 = manifest["variants"]["fp16"]["parity"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert fp16["passed"] is None and fp16["not_measured"]  # not measured without CUDA, with the reason
    else:  # measured on a GPU host, or "not measured" with ORT's reason where the provider could not load
        assert fp16["passed"] is True or (fp16["passed"] is None and "did not load" in fp16["not_measured"])


def test_quantisation_settings_follow_cpu_flags(tiny_onnx):
    assert choose_settings({"avx2"})["reduce_range"] is True
    assert choose_settings({"avx2", "avx512_vnni"})["reduce_range"] is False
    assert tiny_onnx[1]["quantization"] == choose_settings()


def test_rerun_with_same_inputs_reuses_artifacts(tiny_onnx):
    out_dir, manifest = tiny_onnx
    mtime = (out_dir / ONNX_FILES["int8"]).stat().st_mtime_ns
    _, again = export_all(ExportConfig(model="twin:tiny"))
    assert again["created"] == manifest["created"]
    assert (out_dir / ONNX_FILES["int8"]).stat().st_mtime_ns == mtime


def break_weights(path):
    """Zero the largest initializers: the graph still runs, its answers are wrong."""
    model = onnx.load(str(path))
    for init in sorted(model.graph.initializer, key=lambda t: -np.prod(t.dims))[:4]:
        arr = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(np.zeros_like(arr), init.name))
    onnx.save(model, str(path))


def test_broken_variant_fails_the_gate(tiny_onnx, tmp_path, tiny_model):
    out_dir = tmp_path / "broken"
    shutil.copytree(tiny_onnx[0], out_dir)
    break_weights(out_dir / ONNX_FILES["int8"])
    parity = run_parity(tiny_model, out_dir, ExportConfig(model="twin:tiny", parity_n=64), synthetic=True)
    assert parity["int8"]["passed"] is False and parity["fp32"]["passed"] is True
    manifest = json.loads((out_dir / "manifest.json").read_text())
    manifest["variants"]["int8"]["parity"] = parity["int8"]
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BenchError, match="parity gate failed \\(int8"):
        check_gate(manifest, out_dir)
    with pytest.raises(BenchError, match="failed the parity gate"):
        variant_path(out_dir, "int8")


def test_cli_export_prints_where_models_and_manifest_are(tiny_onnx, bench_home):
    result = run_cli("export", "--model", "twin:tiny")
    assert result.returncode == 0, result.stderr
    assert f"manifest: {tiny_onnx[0] / 'manifest.json'}" in result.stdout
    assert "parity ok" in result.stdout and "up to date" in result.stderr


def test_exporters_module_is_runnable(tiny_onnx):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "exporters", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--parity-n" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--model", "no-such-source"], "unknown model source"),
    (["--model", "twin:tiny", "--out", "/proc/forbidden"], "not writable"),
    (["--model", "twin:tiny", "--parity-n", "0"], "parity_n"),
])
def test_bad_export_input_gives_one_error_line(bench_home, args, message):
    result = run_cli("export", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


@pytest.mark.e2e
def test_local_dir_with_corrupt_weights_is_one_error_line(tmp_path, tiny_model, bench_home):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    (bad / "model.safetensors").write_bytes(b"\0" * 100)
    result = run_cli("export", "--model", str(bad), "--out", str(tmp_path / "out"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot load the model" in errors[0]
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix == ".onnx"]


def test_tampered_artifact_is_refused_not_overwritten(tiny_onnx, tmp_path):
    out_dir = tmp_path / "tampered"
    shutil.copytree(tiny_onnx[0], out_dir)
    target = out_dir / ONNX_FILES["int8"]
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    result = run_cli("export", "--model", "twin:tiny", "--out", str(out_dir))
    assert result.returncode == 2 and "does not match the sha256" in result.stderr
    assert target.read_bytes() == bytes(data)  # nothing overwritten


def test_missing_artifact_gives_a_clear_error(tiny_onnx, tmp_path):
    out_dir = tmp_path / "missing"
    shutil.copytree(tiny_onnx[0], out_dir)
    (out_dir / ONNX_FILES["fp32-fused"]).unlink()
    with pytest.raises(BenchError, match="no fp32-fused model"):
        variant_path(out_dir, "fp32-fused")
    result = run_cli("export", "--model", "twin:tiny", "--out", str(out_dir))
    assert result.returncode == 2 and "is missing but listed" in result.stderr


def test_file_hash_is_cached_by_size_and_mtime_and_redone_after_a_change(tmp_path, monkeypatch):
    import hashlib

    import exporters.pipeline as pipeline

    path = tmp_path / "model.onnx"
    path.write_bytes(b"a" * 1000)
    os.utime(path, (1e9, 1e9))  # written long ago: a digest taken now is trusted later
    assert pipeline.sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: reads.append(p) or real_open(p, *a, **k))
    assert pipeline.sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert path not in reads  # unchanged size and mtime: the cached digest, the file not read
    path.write_bytes(b"b" * 1000)  # same size, new content and mtime
    assert pipeline.sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert path in reads
    reads.clear()  # hashed within RACY_S of its mtime: a rewrite in the same clock tick would keep it, so re-read
    assert pipeline.sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest() and path in reads


def test_openvino_int8_uses_half_range_weights_where_the_cpu_has_no_vnni():
    from exporters.openvino import calibration_settings

    assert calibration_settings({"avx2"})["overflow_fix"] == "enable"
    assert calibration_settings({"avx2", "avx512_vnni"})["overflow_fix"] == "first_layer_only"
    assert "VNNI" in calibration_settings({"avx2"})["overflow_reason"]
