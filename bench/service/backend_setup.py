"""The backend a service runs, built from its ServiceConfig: the model materialised and exported once (in the front,
so replicas never race to export), and the options a GPU backend needs to serve bucket shapes. No web framework
here: `check gpu` builds a service's model side on a bare GPU host with this module.
"""

from __future__ import annotations

from pathlib import Path

from bench.backends import Backend, BackendConfig
from bench.service.config import ServiceConfig


def backend_config(config: ServiceConfig) -> BackendConfig:
    """Materialise the model and export ONNX when an ort backend needs it (once, in the front, so replicas never
    race to export); the config every replica's backend is created from."""
    from bench import backends
    from bench.model.artifacts import model_file, variant_for
    from bench.model.sources import materialize

    spec = backends.resolve(config.backend)
    model_dir = materialize(config.model)
    onnx_dir = Path(config.onnx_dir) if config.onnx_dir else None
    if variant_for(spec.engine, spec.precision, spec.device) and onnx_dir is None:
        from exporters.pipeline import ExportConfig, export_all

        onnx_dir, _ = export_all(ExportConfig(model=config.model, threads=config.threads))
    path = model_file(onnx_dir, spec.engine, spec.precision, spec.device)
    return BackendConfig(spec, model_dir, path, config.replica_threads, gpu_options(config, model_dir))


def gpu_options(config: ServiceConfig, model_dir: Path) -> dict:
    """The backend options as given, plus what a GPU backend needs to serve the bucket shapes without launch
    overhead: CUDA graphs of the warmed shapes (torch CUDA, ORT CUDA), TensorRT profiles covering them. Options
    given on the command line win; with shape buckets off there is no fixed shape set, so no graphs."""
    from bench import backends

    options: dict = dict(config.backend_options)
    spec, buckets = backends.resolve(config.backend), config.buckets
    if not spec.on_gpu or buckets is None:
        return options
    shapes = buckets.warmed(config.effective_warm_max_length)
    if spec.device == "cuda":
        options.setdefault("cuda_graphs", "1" if config.cuda_graphs else "0")
        options.setdefault("graph_shapes", tuple(shapes))
    if spec.device == "tensorrt":  # an explicit profile either way: without one TensorRT rebuilds while serving
        from bench.backends.ort_gpu import bucket_profiles
        from bench.core.signature import read_signature

        options.setdefault("shape_profile", bucket_profiles(shapes, read_signature(model_dir).inputs,
                                                            per_batch=config.trt_bucket_profiles))
    return options


def build_backend(config: ServiceConfig) -> Backend:
    """The backend of a one-replica service, created (not loaded)."""
    from bench import backends

    return backends.create(backend_config(config))
