"""The results file's `host` and `model` blocks as frozen dataclasses (results schema 3): what produced a run and
what it measured. Readers use attributes, never string keys; `bench.core.results` reads and writes them.

`HostRecord` is bench.measure.host.fingerprint() plus the peak GEMM rates of the roofline; `ModelRecord` is the
model block bench.app.pipeline builds from the export manifest (exporters.pipeline), whose variants carry the
parity gate's figures (exporters.parity, exporters.accuracy). The manifest itself stays a plain dict: only the
results file's copy is typed.

Unknown keys (a file from another toolkit version, a hand edit, a test's own marker) never make a file unreadable
(`from_json`): the three open blocks — HostRecord, ModelRecord and SourceMeta (source.json differs per kind of
source) — keep them in their `extra` mapping, so a re-save loses nothing; the fixed-shape records inside them
(variants, parity, floor, quantisation, peaks …), written only by this toolkit's own code, drop them. Tests hold
the fields to the keys that code writes (tests/test_run_records.py).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any, TypeVar, Union

from bench.core.errors import BenchError
from bench.core.signature import ModelSignature

__all__ = ["JsonValue", "CpuPower", "GpuPeak", "PeakGemm", "HostRecord", "SourceMeta", "Quantization",
           "FloorVerdict", "ParityRecord", "FileRecord", "VariantRecord", "TrainedTwinAccuracy", "ModelRecord",
           "from_json"]

# A JSON value, for the `extra` mappings: whatever an unknown key held, kept as it was read.
JsonValue = Union[str, int, float, bool, None, list["JsonValue"], dict[str, "JsonValue"]]
EXTRA = "extra"
R = TypeVar("R")


@dataclass(frozen=True)
class CpuPower:
    """What set the CPU's speed at the start of the run (bench.measure.host.cpu_power): "not readable" where Linux
    did not show it."""

    governor: str | None = None
    turbo: str | None = None
    smt: str | None = None
    mhz_now: int | None = None


@dataclass(frozen=True)
class GpuPeak:
    """The GPU's dense GEMM peak per precision (bench.engine.gpu_peak), or `error`: why it was not measured."""

    fp32: float | None = None
    tf32: float | None = None
    fp16: float | None = None
    by_engine: dict[str, dict[str, float] | str] = field(default_factory=dict)  # rates, or why an engine did not run
    device: int | None = None
    kernel: str | None = None
    error: str | None = None

    def rate(self, precision: str) -> float | None:
        """The peak of "fp32", "tf32" or "fp16"; None for any other name or where it was not measured."""
        return {"fp32": self.fp32, "tf32": self.tf32, "fp16": self.fp16}.get(precision)


@dataclass(frozen=True)
class PeakGemm:
    """The host's peak GEMM rates (bench.measure.roofline.measure_peak): float32 over engines and shapes, INT8 and
    BF16 where measured, and the GPU's own (`gpu`) where the run had GPU cells."""

    peak_flops: float | None = None
    by_engine: dict[str, float] = field(default_factory=dict)
    onnxruntime_by_shape: dict[str, float] = field(default_factory=dict)
    bf16_peak_flops: float | None = None
    bf16_by_shape: dict[str, float] = field(default_factory=dict)
    bf16_kernel: str | None = None
    size: int | None = None  # numpy's square GEMM size
    dtype: str | None = None
    int8_peak_ops: float | None = None
    int8_by_shape: dict[str, float] = field(default_factory=dict)
    int8_kernel: str | None = None
    gpu: GpuPeak | None = None

    def shapes_of(self, engine: str) -> dict[str, float]:
        """The rate per GEMM shape behind an engine's float32 figure (ONNX Runtime's; numpy runs one size)."""
        return self.onnxruntime_by_shape if engine == "onnxruntime" else {}


@dataclass(frozen=True)
class HostRecord:
    """What produced a run (bench.measure.host.fingerprint): CPU and flags, cores, RAM, the GPU as NVML or the CUDA
    driver saw it, libraries, thread settings, commit, CPU speed settings; every field defaulted, so older and
    partial files load ("not recorded")."""

    hostname: str | None = None
    platform: str | None = None
    python: str | None = None
    cpu_model: str | None = None
    cpu_flags: dict[str, bool] = field(default_factory=dict)
    logical_cores: int | None = None
    physical_cores: int | None = None
    ram_bytes: int | None = None
    # bench.measure.host.gpu_info: NVML's view (gpu_ + bench.measure.gpu.NvmlGpu.info's keys), else the driver's
    gpu_cuda_device: int | None = None
    gpu_index: int | None = None
    gpu_name: str | None = None
    gpu_driver: str | None = None
    gpu_cuda: str | None = None
    gpu_total_memory_bytes: int | None = None
    gpu_uuid: str | None = None
    gpu_matched_by: str | None = None
    gpu_note: str | None = None
    rapl_readable: bool | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    thread_env: dict[str, str | None] = field(default_factory=dict)
    git_commit: str | None = None
    cpu_power: CpuPower | None = None
    peak_gemm: PeakGemm | None = None
    test_data: str | None = None  # set by tests that invent a host's figures: the run is not a measurement
    extra: dict[str, JsonValue] = field(default_factory=dict)  # keys this toolkit does not know, kept as read

    @classmethod
    def from_fingerprint(cls, fingerprint: Mapping[str, Any], peak_gemm: Mapping[str, Any] | None = None,
                         ) -> HostRecord:
        """The record of bench.measure.host.fingerprint()'s dict, with the run's peak GEMM figures."""
        return from_json(cls, {**fingerprint, "peak_gemm": peak_gemm})


@dataclass(frozen=True)
class SourceMeta:
    """A model directory's source.json (bench.model.sources, bench.model.twin, bench.model.twin_trained): where the
    weights came from and whether they are synthetic."""

    source: str | None = None
    synthetic: bool | None = None
    trained: bool | None = None
    seed: int | None = None
    recipe: int | None = None
    shape: dict[str, int | float | str] = field(default_factory=dict)  # a twin's TwinShape
    train: dict[str, int | float | None] = field(default_factory=dict)  # the trained twin's TrainRecipe and steps
    heldout_accuracy: float | None = None
    heldout_n: int | None = None
    given_onnx: str | None = None  # an onnx:PATH model: the user's graph
    note: str | None = None
    extra: dict[str, JsonValue] = field(default_factory=dict)  # other keys of source.json, kept as read


@dataclass(frozen=True)
class Quantization:
    """The INT8 settings chosen for this CPU (exporters.quantize.choose_settings) and why."""

    weight_type: str | None = None
    per_channel: bool | None = None
    reduce_range: bool | None = None
    reason: str | None = None


@dataclass(frozen=True)
class FloorVerdict:
    """The accuracy floor's verdict on a variant (exporters.accuracy.accuracy_floor); `passed` None: not judged."""

    max_drop: float | None = None
    passed: bool | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ParityRecord:
    """A variant against the reference on the gate's texts (exporters.parity): a classifier's label agreement,
    |Δlogit| and accuracy with intervals; an embedding's cosines and Spearman's rho on scored pairs; the verdict.
    `passed` None with `not_measured`: the variant could not run here."""

    n: int | None = None
    label_agreement: float | None = None
    agreement_ci: tuple[float, float] | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    reference_accuracy: float | None = None
    accuracy_delta: float | None = None
    accuracy_delta_ci: tuple[float, float] | None = None
    floor: FloorVerdict | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    spearman: float | None = None
    spearman_ci: tuple[float, float] | None = None
    reference_spearman: float | None = None
    pairs: int | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    passed: bool | None = None
    failures: tuple[str, ...] = ()
    seconds: float | None = None
    not_measured: str | None = None

    @property
    def below_floor(self) -> bool:
        return self.floor is not None and self.floor.passed is False


@dataclass(frozen=True)
class FileRecord:
    """A file beside a variant (an OpenVINO IR's .bin weights) as the manifest lists it."""

    file: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class VariantRecord:
    """One exported variant (exporters.pipeline.variant_entries + run_parity; its sha256 stays in the manifest).
    `file` None: built at load time (`note`) or not built here (`not_built`, why)."""

    file: str | None = None
    size_bytes: int | None = None
    export_seconds: float | None = None
    weights: FileRecord | None = None
    fused_ops: dict[str, int] = field(default_factory=dict)
    fusion: str | None = None
    calibration: dict[str, int | float | str | bool] = field(default_factory=dict)
    note: str | None = None
    not_built: str | None = None
    parity: ParityRecord | None = None

    @property
    def total_bytes(self) -> int:
        """The variant's size on disk, its weights file included (0: nothing on disk)."""
        return (self.size_bytes or 0) + ((self.weights.size_bytes or 0) if self.weights else 0)


@dataclass(frozen=True)
class TrainedTwinAccuracy:
    """A synthetic model's stand-in for accuracy (bench.app.pipeline.trained_twin_accuracy): the trained twin's
    variants judged on `texts` held-out reviews against the floor `max_accuracy_drop`."""

    source: SourceMeta | None = None
    max_accuracy_drop: float | None = None
    texts: int | None = None
    variants: dict[str, VariantRecord] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], max_drop: float | None, texts: int) -> TrainedTwinAccuracy:
        """The trained twin's export manifest's parity records (variants without one are left out)."""
        variants = {name: {"parity": v["parity"]} for name, v in manifest["variants"].items() if v.get("parity")}
        return from_json(cls, {"source": manifest["source"], "max_accuracy_drop": max_drop, "texts": texts,
                               "variants": variants})


@dataclass(frozen=True)
class ModelRecord:
    """What was measured: the model's spec and source, whether its weights are synthetic, where its files are, its
    signature (and the exported graph's inputs), the INT8 settings and every exported variant with its parity
    figures; for a synthetic model, the trained twin's accuracy (`trained_twin`)."""

    spec: str | None = None
    source: SourceMeta | None = None
    synthetic: bool | None = None
    model_dir: str | None = None
    onnx_dir: str | None = None
    quantization: Quantization | None = None
    signature: ModelSignature | None = None  # None: a run made before models carried one
    graph_inputs: tuple[str, ...] = ()  # the exported FP32 graph's inputs (the manifest keeps them in its signature)
    accuracy_texts: str | None = None  # what the gate's accuracy was judged on
    variants: dict[str, VariantRecord] = field(default_factory=dict)
    trained_twin: TrainedTwinAccuracy | None = None
    extra: dict[str, JsonValue] = field(default_factory=dict)  # keys this toolkit does not know, kept as read

    @classmethod
    def from_manifest(cls, spec: str, onnx_dir: str, manifest: Mapping[str, Any]) -> ModelRecord:
        """The model block of an export manifest (exporters.pipeline.build_manifest)."""
        signature = dict(manifest.get("signature") or {})
        graph_inputs = signature.pop("graph_inputs", ())
        return from_json(cls, {
            "spec": spec, "source": manifest["source"], "synthetic": manifest["synthetic"],
            "model_dir": manifest["model_dir"], "onnx_dir": onnx_dir, "quantization": manifest["quantization"],
            "signature": signature or None, "graph_inputs": graph_inputs,
            "accuracy_texts": manifest["parity_settings"]["texts"], "variants": manifest["variants"]})

    def to_dict(self) -> dict[str, Any]:
        """The block as results.json holds it; the signature as ModelSignature writes itself."""
        out = asdict(replace(self, signature=None))
        out["signature"] = self.signature.to_dict() if self.signature else None
        return out

    def parity(self, variant: str | None) -> ParityRecord | None:
        """The parity figures of one exported variant (None: no such variant, or no figures)."""
        entry = self.variants.get(variant or "")
        return entry.parity if entry else None


def from_json(cls: type[R], data: Any) -> R:
    """A host/model record from its JSON object, leniently (see the module's docstring): nested records, tuples and
    mappings of records converted; unknown keys into `extra` where `cls` has one, else dropped; None: defaults."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise BenchError(f"{cls.__name__} must be an object, got {type(data).__name__}")
    hints = _hints(cls)
    values = {k: _typed(hints[k], v) for k, v in data.items() if k in hints and k != EXTRA}
    if EXTRA in hints:
        values[EXTRA] = {**(data.get(EXTRA) or {}), **{k: v for k, v in data.items() if k not in hints}}
    return cls(**values)


_HINTS: dict[type[Any], dict[str, Any]] = {}  # a record type's resolved annotations, read once


def _hints(cls: type[Any]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _typed(hint: Any, value: Any) -> Any:
    """`value` as the annotated type where that is a record, a tuple or a mapping of records (JSON has only
    objects and lists); scalars and plain mappings as they are."""
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):  # X | None: X's conversion
        return _typed(args[0], value) if len(args) == 1 else value
    if hint is ModelSignature:
        return ModelSignature.from_dict(_shaped(value, Mapping, hint))
    if isinstance(hint, type) and is_dataclass(hint):
        return from_json(hint, value)
    if origin is tuple:
        return tuple(_shaped(value, (list, tuple), hint))
    if origin is dict:
        return {k: _typed(args[1], v) for k, v in _shaped(value, Mapping, hint).items()}
    return value


def _shaped(value: Any, kind: Any, hint: Any) -> Any:
    """`value` itself where it is a JSON object (Mapping) or array as `hint` needs; else a TypeError, which
    bench.core.results reports with the file's path."""
    if not isinstance(value, kind):
        raise TypeError(f"expected {hint} in the host or model block, got {type(value).__name__}")
    return value
