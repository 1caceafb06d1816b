"""export_all: model source → FP32 / fused FP32 / INT8 / FP16 ONNX, OpenVINO FP32 / calibrated INT8 IRs, parity gate
(with accuracy against FP32) + manifest.json.

Artifacts are written under temporary names and renamed when complete; the manifest is written last,
so a folder without a manifest (or with an older one) never looks complete. Re-running with unchanged
inputs reuses everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench.core import paths
from bench.core.errors import BenchError, ConfigError
from bench.measure.host import library_versions
from bench.model.artifacts import ALL_FILES, GIVEN_ONNX, MANIFEST, MANIFEST_VERSION, ONNX_FILES, OV_FILES
from exporters.accuracy import check_max_drop
from exporters.openvino import calibration_settings, convert_fp32, missing, quantize_int8, weights_of
from exporters.parity import DEFAULT_MAX_ACCURACY_DROP, DEFAULT_THRESHOLDS

SYNTHETIC_PARITY_N, TRAINED_PARITY_N = 128, 1000
FLOAT_VARIANTS = ("fp32", "fp32-fused", "ov-fp32")
TORCH_VARIANTS = ("torch-int8", "torch-bf16")
REFERENCE = "torch-fp32"  # the parity gate's reference; a user's ONNX file is its own (the "fp32" graph as given)
GATED = ("fp32", "fp32-fused", "int8", "torch-int8", "torch-bf16", "ov-fp32", "ov-bf16", "ov-int8")


@dataclass(frozen=True)
class ExportConfig:
    model: str = "twin"
    seed: int = 0
    out_dir: Path | None = None
    # held-out texts of the gate: None = 1,000 for trained weights (a 1-point accuracy change is then about two
    # standard errors), 128 for a synthetic twin (its labels mean nothing: the gate finds a broken graph, which
    # agrees on ~50 % of labels, against the 80 % bound, with a wide margin on 128 texts)
    parity_n: int | None = None
    parity_max_length: int = 48  # short texts keep the gate of 8 variants within make bench's budget
    # A synthetic twin's FP32 variants differ from torch by rounding alone (max |Δlogit| far inside the 1e-3..1e-2
    # bound; a broken graph moves logits by O(1)): the first parity_float_n texts find a broken one, and the gate's
    # time goes to the variants that quantise or round to BF16. Trained weights: every variant on every text.
    parity_float_n: int = 64
    # accuracy floor (a fraction: 0.01 = 1 point below FP32 on the same held-out texts); judged where labels mean
    # something (trained weights), not on a synthetic twin
    max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP
    threads: int | None = None
    force: bool = False  # rebuild even when a manifest with the same inputs exists
    # the user's labelled data (bench.model.evaldata): texts and labels for a classifier, scored pairs for an
    # embedding model; the gate's accuracy (and the decision's floor) is then judged on it, every row
    eval_data: Path | None = None
    thresholds: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    def __post_init__(self) -> None:
        if self.parity_n is not None and self.parity_n < 1:
            raise ConfigError(f"parity_n must be >= 1 (got {self.parity_n})")
        if not 3 <= self.parity_max_length <= 512:
            raise ConfigError(f"parity_max_length must be within 3..512 (got {self.parity_max_length})")
        check_max_drop(self.max_accuracy_drop)


def log(msg: str) -> None:
    print(f"[export] {msg}", file=sys.stderr, flush=True)


HASH_CACHE, RACY_S = ".sha256-cache.json", 2.0


def sha256_file(path: Path) -> str:
    """The file's sha256, read from its folder's hash cache while the file's size and mtime are those it was hashed
    at (as git's index does), so every service start does not re-read a model's ~0.5 GB; a file rewritten since is
    hashed again, and a cache that cannot be read or written only costs the re-hash. As in git ("racy" entries), a
    digest taken within RACY_S of the file's mtime is not trusted: a write in the same clock tick keeps the mtime."""
    stat = path.stat()
    cache_path = path.parent / HASH_CACHE
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    entry = cache.get(path.name)
    if isinstance(entry, list) and len(entry) == 4 and entry[:2] == [stat.st_size, stat.st_mtime_ns] \
            and entry[3] - stat.st_mtime_ns / 1e9 > RACY_S:
        return entry[2]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    try:
        cache[path.name] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest(), time.time()]
        paths.atomic_write_text(cache_path, json.dumps(cache, sort_keys=True))
    except OSError:
        pass
    return digest.hexdigest()


def inputs_key(model_dir: Path, cfg: ExportConfig, quant: dict) -> str:
    """Everything that determines the artifacts: model files, export settings, the eval data, library versions."""
    from bench.model.evaldata import digest

    parts = {name: sha256_file(model_dir / name) for name in sorted(os.listdir(model_dir))
             if name.endswith((".json", ".safetensors", ".bin", ".txt", ".onnx"))
             and name not in ("source.json", HASH_CACHE)}
    parts["settings"] = {"parity_n": cfg.parity_n, "max_len": cfg.parity_max_length, "quant": quant,
                         "parity_float_n": cfg.parity_float_n, "parity_texts": "heldout",
                         "manifest_version": MANIFEST_VERSION, "eval_data": digest(cfg.eval_data),
                         "max_accuracy_drop": cfg.max_accuracy_drop,
                         "ov_calibration": calibration_settings(),
                         "thresholds": {k: asdict(v) for k, v in cfg.thresholds.items()}}
    parts["versions"] = library_versions()
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def reusable(out_dir: Path, key: str) -> dict | None:
    """The existing manifest if it was made from the same inputs. Files that no longer match their
    recorded sha256 are an error, not a reason to rebuild: someone changed them, and we do not overwrite."""
    from bench.model.artifacts import read_manifest

    if not (out_dir / MANIFEST).exists():
        return None
    try:
        stored = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8")).get("manifest_version")
    except (OSError, ValueError, AttributeError):
        stored = None
    if stored != MANIFEST_VERSION:  # written by an older toolkit: rebuilt, not refused
        log(f"{out_dir / MANIFEST} has manifest_version {stored!r} (this toolkit writes {MANIFEST_VERSION}): "
            f"rebuilding")
        return None
    manifest = read_manifest(out_dir)
    if manifest.get("inputs_key") != key:
        return None
    verify_files(out_dir, manifest)
    return manifest


def verify_files(out_dir: Path, manifest: dict) -> None:
    for name, entry in manifest.get("variants", {}).items():
        for part in (entry, entry.get("weights")):  # an OpenVINO IR: the .xml and its .bin
            if part and part.get("file"):
                verify_file(out_dir, part)


def verify_file(out_dir: Path, entry: dict) -> None:
    path = out_dir / entry["file"]
    if not path.exists():
        raise BenchError(f"{path} is missing but listed in {out_dir / MANIFEST}; re-export with --force")
    if path.stat().st_size != entry["size_bytes"] or sha256_file(path) != entry["sha256"]:
        raise BenchError(f"{path} does not match the sha256 in {out_dir / MANIFEST} (changed after export); "
                         f"re-export with --force")


def timed(label: str, fn, *args) -> tuple[object, float]:
    log(f"{label} …")
    start = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - start
    log(f"{label} done in {elapsed:.1f} s")
    return result, elapsed


def build_files(model_dir: Path, out_dir: Path, quant: dict) -> dict:
    """Export every file under a .partial name, renaming each only once it is complete."""
    from bench.core.signature import read_signature

    signature = read_signature(model_dir)
    tmp = {p: out_dir / (ONNX_FILES[p] + ".partial") for p in ONNX_FILES}
    tmp.update({p: out_dir / name.replace(".xml", ".partial.xml") for p, name in OV_FILES.items()})
    try:
        info = build_partials(model_dir, tmp, signature, quant)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)  # a failed step leaves nothing that looks like a model
            weights_of(path).unlink(missing_ok=True) if path.suffix == ".xml" else None
    return info


def build_partials(model_dir: Path, tmp: dict, signature, quant: dict) -> dict:
    from exporters.onnx_export import export_fp32
    from exporters.optimize import fuse, op_counts, to_fp16
    from exporters.quantize import quantize

    out_dir = tmp["fp32"].parent
    info: dict = {"export_seconds": {}}
    if signature.source == "graph":  # the user's own ONNX file, measured as given
        _, info["export_seconds"]["fp32"] = timed("copy the given ONNX graph", shutil.copyfile,
                                                  model_dir / GIVEN_ONNX, tmp["fp32"])
    else:
        _, info["export_seconds"]["fp32"] = timed("export FP32 ONNX", export_fp32, model_dir, tmp["fp32"])
    info["graph_inputs"] = graph_inputs(tmp["fp32"], signature)
    info["fusion"], info["export_seconds"]["fp32-fused"] = timed(
        f"fuse (onnxruntime optimizer, model_type={signature.ort_model_type or 'none'})", fuse, tmp["fp32"],
        tmp["fp32-fused"], signature)
    _, info["export_seconds"]["int8"] = timed("quantize INT8 (dynamic, QInt8)", quantize, tmp["fp32-fused"],
                                              tmp["int8"], quant)
    _, info["export_seconds"]["fp16"] = timed("convert FP16 (for CUDA)", to_fp16, tmp["fp32-fused"], tmp["fp16"])
    info["not_built"] = build_openvino(model_dir, tmp, info["export_seconds"])
    info["fused_ops"] = {p: op_counts(tmp[p]) for p in ONNX_FILES}
    for precision, path in tmp.items():
        if precision not in info["not_built"]:
            publish(path, out_dir / ALL_FILES[precision])
    return info


def graph_inputs(path: Path, signature) -> list[str]:
    """The exported graph's inputs; one the exporter dropped (the model ignores it) is fine, since backends feed a
    graph only what it takes, but one the signature does not know means the two disagree: an error."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [i.name for i in graph.input]
    extra = [n for n in names if n not in signature.inputs]
    if extra:
        raise BenchError(f"the exported graph takes {', '.join(extra)}, which the model's signature does not "
                         f"({', '.join(signature.inputs)})")
    return names


def build_openvino(model_dir: Path, tmp: dict, seconds: dict) -> dict:
    """The OpenVINO IRs; {variant: reason} for those not built (openvino or nncf missing)."""
    why = missing()
    if why:
        log(f"OpenVINO IRs not built: {why}")
        return {p: why for p in OV_FILES}
    _, seconds["ov-fp32"] = timed("convert to OpenVINO IR (FP32)", convert_fp32, tmp["fp32"], tmp["ov-fp32"])
    _, seconds["ov-int8"] = timed("quantize OpenVINO INT8 (NNCF, calibrated on corpus texts)", quantize_int8,
                                  tmp["ov-fp32"], tmp["ov-int8"], model_dir)
    return {}


def publish(partial: Path, final: Path) -> None:
    """Rename a finished file (and an IR's weights beside it) to its final name."""
    if partial.suffix == ".xml":
        os.replace(weights_of(partial), weights_of(final))
    os.replace(partial, final)


def variant_entries(out_dir: Path, info: dict) -> dict:
    entries = {}
    for precision, name in ALL_FILES.items():
        if precision in info["not_built"]:
            entries[precision] = {"file": None, "not_built": info["not_built"][precision]}
            continue
        entries[precision] = {**file_entry(out_dir / name),
                              "export_seconds": round(info["export_seconds"][precision], 3)}
        if precision in OV_FILES:
            entries[precision]["weights"] = file_entry(weights_of(out_dir / name))
    for precision in ONNX_FILES:
        if entries[precision].get("file"):
            entries[precision]["fused_ops"] = info["fused_ops"][precision]
    entries["fp32-fused"]["fusion"] = info["fusion"]
    if "ov-int8" not in info["not_built"]:
        entries["ov-int8"]["calibration"] = calibration_settings()
    entries["ov-bf16"] = {"file": None, "note": "the OpenVINO FP32 IR compiled with INFERENCE_PRECISION_HINT=bf16, "
                                                "at load time (AMX / AVX512-BF16 CPUs only)"}
    entries["torch-bf16"] = {"file": None, "note": "the model's weights and activations in torch.bfloat16, applied "
                                                   "at load time (AMX / AVX512-BF16 CPUs only)"}
    entries["torch-int8"] = {"file": None, "note": "torch.ao.quantization.quantize_dynamic on nn.Linear, "
                                                   "applied at load time"}
    return entries


def file_entry(path: Path) -> dict:
    return {"file": path.name, "size_bytes": path.stat().st_size, "sha256": sha256_file(path)}


def parity_runners(model_dir: Path, out_dir: Path, threads: int | None, torch_weights: bool = True) -> dict:
    """Backends to check, keyed by variant; FP16 only where a CUDA provider exists; torch's load-time variants only
    where there are torch weights (not for a user's ONNX file)."""
    import onnxruntime as ort

    from bench.backends import BackendConfig, BackendSpec

    def cfg(engine, precision, device, path=None):  # the manifest is not written yet: the file is given
        return BackendConfig(BackendSpec(engine, precision, device), model_dir, path, threads)

    runners = {p: cfg("ort", p, "cpu", out_dir / ONNX_FILES[p]) for p in ("fp32", "fp32-fused", "int8")}
    if torch_weights:
        runners["torch-int8"] = cfg("torch", "int8", "cpu")
        runners["torch-bf16"] = cfg("torch", "bf16", "cpu")  # unavailable without BF16 hardware: not measured, why
    if (out_dir / OV_FILES["ov-fp32"]).exists():
        runners["ov-fp32"] = cfg("ov", "fp32", "cpu", out_dir / OV_FILES["ov-fp32"])
        runners["ov-bf16"] = cfg("ov", "bf16", "cpu", out_dir / OV_FILES["ov-fp32"])
    if (out_dir / OV_FILES["ov-int8"]).exists():
        runners["ov-int8"] = cfg("ov", "int8", "cpu", out_dir / OV_FILES["ov-int8"])
    if "CUDAExecutionProvider" in ort.get_available_providers():
        runners["fp16"] = cfg("ort", "fp16", "cuda", out_dir / ONNX_FILES["fp16"])
    return runners


def parity_texts(cfg: ExportConfig, signature, synthetic: bool):
    """(workload, pairs, why accuracy is not judged): the user's eval data (--eval-data) when given, else held-out
    corpus reviews, whose 2-way sentiment labels judge only a 2-label classifier with real weights."""
    from bench.model import evaldata
    from bench.model.corpus import heldout_sample

    if cfg.eval_data is not None:
        if signature.is_embedding:
            pairs = evaldata.pairs(Path(cfg.eval_data))
            return pairs.workload(), pairs, None
        return evaldata.labelled(Path(cfg.eval_data), signature.labels), None, None
    workload = heldout_sample(cfg.parity_n, seed=cfg.seed)  # reviews no trained twin learned from
    if synthetic:
        return workload, None, "not judged: synthetic weights, labels mean nothing"
    if signature.is_embedding or len(signature.labels) != 2:
        return workload, None, (f"not judged: the corpus' labels are 2-way sentiment, the model's are "
                                f"{signature.what}; give --eval-data FILE")
    return workload, None, None


def run_parity(model_dir: Path, out_dir: Path, cfg: ExportConfig, synthetic: bool) -> dict:
    from bench.model.tokenize import load_tokenizer
    from exporters.parity import EMBEDDING_THRESHOLDS, compare, compare_vectors, spearman

    tok = load_tokenizer(str(model_dir))
    signature = tok.signature
    workload, pairs, why_not = parity_texts(cfg, signature, synthetic)
    given = signature.source == "graph"  # a user's ONNX file: the reference is that graph as given, on ORT
    reference = "fp32" if given else REFERENCE
    outputs, unavailable, seconds = parity_outputs(model_dir, out_dir, cfg, tok, workload, reference,
                                                   short=synthetic and cfg.eval_data is None)
    if given:
        unavailable.update({v: "the model was given as an ONNX file: no PyTorch weights" for v in TORCH_VARIANTS})
    ref = outputs[reference] if given else outputs.pop(reference)

    def judged(name: str, out) -> dict:
        if signature.is_embedding:
            figures = compare_vectors(ref[:len(out)], out, EMBEDDING_THRESHOLDS[name])
            return {**figures, **(spearman(ref, out, pairs.scores) if pairs is not None else {})}
        return compare(ref[:len(out)], out, workload.labels[:len(out)], cfg.thresholds[name], why_not is not None,
                       cfg.max_accuracy_drop, why_not)

    results = {name: {**judged(name, out), "seconds": seconds[name]} for name, out in outputs.items()}
    return {**{n: {"passed": None, "not_measured": why} for n, why in unavailable.items() if n not in results},
            **results}


def parity_outputs(model_dir: Path, out_dir: Path, cfg: ExportConfig, tok, workload, reference: str, short: bool):
    """Every runner's outputs on the gate's texts ({variant: array}), the variants not available and why, and the
    seconds each took. With `short` (synthetic weights: labels mean nothing), float variants other than the
    reference see the first parity_float_n texts only: rounding alone moves them, and a broken graph is found on
    those as surely."""
    from tqdm import tqdm

    from bench import backends
    from exporters.parity import run_logits

    given = reference != REFERENCE
    runners = {} if given else {REFERENCE: backends.BackendConfig(backends.BackendSpec("torch", "fp32"), model_dir,
                                                                  None, cfg.threads)}
    runners.update(parity_runners(model_dir, out_dir, cfg.threads, torch_weights=not given))
    outputs, unavailable, seconds = {}, {"fp16": "needs a CUDA execution provider"}, {}
    sizes = {name: min(cfg.parity_float_n, len(workload))
             if short and cfg.parity_float_n and name in FLOAT_VARIANTS and name != reference else len(workload)
             for name in runners}
    with tqdm(total=sum(sizes.values()), desc="parity", unit="text", file=sys.stderr) as bar:
        for name, bcfg in runners.items():
            started = time.perf_counter()
            backend = backends.create(bcfg)
            try:
                backend.load()
            except backends.Unavailable as exc:  # e.g. CUDA listed but its libraries missing: ORT fell back
                unavailable[name] = str(exc)
                continue
            outputs[name] = run_logits(backend.infer, tok, workload.head(sizes[name]), cfg.parity_max_length,
                                       progress=bar)
            backend.close()
            seconds[name] = round(time.perf_counter() - started, 2)
    return outputs, unavailable, seconds


def export_all(cfg: ExportConfig, gate: bool = True) -> tuple[Path, dict]:
    """Build (or reuse) every variant for `cfg.model`; raise BenchError when a variant fails the gate (`gate`;
    without it the manifest records the failure and the caller reads it, as the accuracy stage does)."""
    from bench.model.sources import materialize, read_source_meta
    from exporters.quantize import choose_settings

    model_dir = materialize(cfg.model, cfg.seed)  # a model it cannot measure is refused here, nothing written
    check_memory(model_dir)
    out_dir = paths.ensure_writable(Path(cfg.out_dir) if cfg.out_dir
                                    else paths.artifacts_dir() / "onnx" / model_dir.name)
    source = read_source_meta(model_dir)
    if cfg.parity_n is None:
        cfg = replace(cfg, parity_n=SYNTHETIC_PARITY_N if source.get("synthetic") else TRAINED_PARITY_N)
    quant = choose_settings()
    key = inputs_key(model_dir, cfg, quant)
    with paths.locked(out_dir / ".export.lock", f"the exported files in {out_dir}"):  # one exporter per folder
        manifest = None if cfg.force else reusable(out_dir, key)
        if manifest is not None:
            log(f"artifacts in {out_dir} are up to date (same inputs): reusing them")
        else:
            manifest = build_manifest(model_dir, out_dir, cfg, source, quant, key)
    if gate:
        check_gate(manifest, out_dir)
    return out_dir, manifest


EXPORT_MEMORY_FACTOR = 4  # torch's weights, the traced graph, the optimizer's copy and ORT's session at once


def check_memory(model_dir: Path, available: int | None = None) -> None:
    """Refuse, before anything is written, a model whose export would not fit in free memory."""
    import psutil

    weights = sum(p.stat().st_size for p in model_dir.iterdir()
                  if p.suffix in (".safetensors", ".bin", ".onnx") and p.is_file())
    free = psutil.virtual_memory().available if available is None else available
    if weights * EXPORT_MEMORY_FACTOR > free:
        raise BenchError(f"the model's weights are {weights / 2**30:.1f} GiB; exporting it needs about "
                         f"{weights * EXPORT_MEMORY_FACTOR / 2**30:.1f} GiB and {free / 2**30:.1f} GiB is free: "
                         f"free memory or use a host with more")


def build_manifest(model_dir: Path, out_dir: Path, cfg: ExportConfig, source: dict, quant: dict, key: str) -> dict:
    from bench.core.signature import read_signature

    (out_dir / MANIFEST).unlink(missing_ok=True)  # the old manifest must not describe new files
    info = build_files(model_dir, out_dir, quant)
    variants = variant_entries(out_dir, info)
    texts = f"the rows of {cfg.eval_data}" if cfg.eval_data else f"{cfg.parity_n} held-out corpus texts"
    parity, parity_s = timed(f"parity gate on {texts}", run_parity, model_dir, out_dir,
                             cfg, bool(source.get("synthetic")))
    for name, figures in parity.items():
        variants[name]["parity"] = figures
    manifest = {"manifest_version": MANIFEST_VERSION, "inputs_key": key,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source": source, "synthetic": bool(source.get("synthetic")), "model_dir": str(model_dir),
                "signature": {**read_signature(model_dir).to_dict(), "graph_inputs": info["graph_inputs"]},
                "quantization": quant, "opset": 17, "parity_seconds": round(parity_s, 2),
                "parity_settings": {"n": cfg.parity_n, "float_n": cfg.parity_float_n,
                                    "texts": f"your data ({cfg.eval_data})" if cfg.eval_data else "held-out reviews",
                                    "max_accuracy_drop": cfg.max_accuracy_drop,
                                    "max_length": cfg.parity_max_length, "reference": "torch-fp32"},
                "versions": library_versions(), "variants": variants}
    paths.atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2))
    return manifest


def check_gate(manifest: dict, out_dir: Path) -> None:
    # a variant only below the accuracy floor is recorded and left out of the decision (floor_exclusions), not fatal
    failed = {name: reasons for name, v in manifest["variants"].items() if v.get("parity", {}).get("passed") is False
              and (reasons := [r for r in v["parity"]["failures"]
                               if r != ((v["parity"].get("floor") or {}).get("reason"))])}
    if failed:
        detail = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in failed.items())
        raise BenchError(f"parity gate failed ({detail}); see {out_dir / MANIFEST}")
