"""A benchmark run: the grid of cells (what to run × how to load it), each in a fresh worker (where)."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import backends, paths
from bench.errors import BenchError
from bench.results import CellResult, CellSpec, RunResult, load_run, save_run
from bench.runner import WorkerLimits, run_cell


@dataclass(frozen=True)
class Profile:
    """What a named profile measures. batch1 backends see the ≈80-char corpus at batch 1; the sweeps
    add batch sizes and fixed token lengths for a few backends."""

    name: str
    batch1: tuple
    batch_sweep: tuple  # (backends, batches)
    length_sweep: tuple  # (backends, lengths)
    stop: dict


ALL_BACKENDS = backends.CPU_BACKENDS + backends.GPU_BACKENDS
PROFILES = {
    "default": Profile("default", ALL_BACKENDS,
                       (("ort-int8-cpu", "ort-fp32-cuda", "torch-fp16-cuda"), (4, 8)),
                       (("ort-int8-cpu", "ort-fp32-cuda"), (16, 64, 128, 256)),
                       {"min_iters": 20, "min_time_s": 3.0, "max_time_s": 10.0, "target_rel_halfwidth": 0.05}),
    "quick": Profile("quick", ALL_BACKENDS, (("ort-int8-cpu",), (4,)), (("ort-int8-cpu",), (128,)),
                     {"min_iters": 10, "min_time_s": 1.0, "max_time_s": 3.0, "target_rel_halfwidth": 0.10}),
}


@dataclass(frozen=True)
class RunConfig:
    """Command line > environment > defaults; validated here, before any work starts."""

    model: str = "twin"
    seed: int = 0
    profile: str = "default"
    backends: tuple | None = None
    batches: tuple | None = None
    lengths: tuple | None = None
    threads: tuple = (None,)
    max_time_s: float | None = None
    min_time_s: float | None = None
    run_id: str | None = None
    resume: str | None = None
    tdp_w: float | None = None
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    backend_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile '{self.profile}' (choose from {', '.join(PROFILES)})")
        for name in self.backends or ():
            backends.resolve(name)
        for b in self.batches or ():
            if b < 1:
                raise ValueError(f"batch size must be >= 1 (got {b})")
        for n in self.lengths or ():
            if not 3 <= n <= 512:
                raise ValueError(f"sequence length must be within 3..512 tokens (got {n})")
        if self.max_time_s is not None and self.max_time_s <= 0:
            raise ValueError(f"duration must be > 0 (got {self.max_time_s})")

    def stop_rule(self) -> dict:
        stop = dict(PROFILES[self.profile].stop)
        if self.max_time_s is not None:
            stop["max_time_s"] = self.max_time_s
            stop["min_time_s"] = min(stop["min_time_s"], self.max_time_s)
        if self.min_time_s is not None:
            stop["min_time_s"] = self.min_time_s
        return stop


def build_grid(cfg: RunConfig) -> list[CellSpec]:
    """The cells of the run, without duplicates, in a stable order."""
    prof = PROFILES[cfg.profile]
    if cfg.backends or cfg.batches or cfg.lengths:
        names = cfg.backends or prof.batch1
        combos = [(n, b, None) for n in names for b in (cfg.batches or (1,))]
        combos += [(n, 1, L) for n in names for L in (cfg.lengths or ())]
    else:
        combos = [(n, 1, None) for n in prof.batch1]
        combos += [(n, b, None) for n in prof.batch_sweep[0] for b in prof.batch_sweep[1]]
        combos += [(n, 1, L) for n in prof.length_sweep[0] for L in prof.length_sweep[1]]
    cells = [CellSpec(n, b, "bucket" if L else "corpus", L, t) for n, b, L in combos for t in cfg.threads]
    return list(dict.fromkeys(cells))


def host_gpu_reason() -> str | None:
    """Why GPU cells cannot run here (None if an NVIDIA GPU is visible): saves spawning doomed workers."""
    from bench.measure.gpu import probe_gpu

    gpu = probe_gpu()
    if gpu is None:
        return "no NVIDIA GPU on this host (NVML found no driver/device)"
    gpu.close()
    return None


def gpu_for(on_gpu: bool):
    """An opened NVML handle for the sampler of a GPU cell (VRAM, utilisation, power), else None."""
    if not on_gpu:
        return None
    from bench.measure.gpu import probe_gpu

    return probe_gpu()


def new_run(cfg: RunConfig, run_dir: Path, model: dict) -> RunResult:
    from bench.host import fingerprint
    from bench.measure.roofline import measure_peak

    print("[run] measuring peak GEMM rate for the roofline …", file=sys.stderr, flush=True)
    peak = measure_peak()
    host = {**fingerprint(), "peak_gemm": peak}
    return RunResult(run_id=run_dir.name, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), host=host,
                     model=model, config=config_dict(cfg), peak_gemm_flops=peak["peak_flops"])


def config_dict(cfg: RunConfig) -> dict:
    out = asdict(cfg)
    out["stop_rule"] = cfg.stop_rule()
    out["method"] = {"percentiles": "numpy linear interpolation", "ci": "percentile bootstrap, 1000 resamples, 95 %",
                     "latency": "engine only (inputs pre-tokenised); CPU: perf_counter_ns; CUDA: events + sync",
                     "throughput": "items / wall time of the timed window", "process": "one fresh worker per cell"}
    return out


def prepare_model(cfg: RunConfig) -> tuple[Path, Path, dict]:
    """Export (or reuse) the ONNX variants; the model block of the results file says what was measured."""
    from exporters.pipeline import ExportConfig, export_all

    onnx_dir, manifest = export_all(ExportConfig(model=cfg.model, seed=cfg.seed))
    print(f"[run] models: {onnx_dir}\n[run] manifest: {onnx_dir / 'manifest.json'}", file=sys.stderr, flush=True)
    model = {"spec": cfg.model, "source": manifest["source"], "synthetic": manifest["synthetic"],
             "model_dir": manifest["model_dir"], "onnx_dir": str(onnx_dir), "quantization": manifest["quantization"],
             "variants": {k: {kk: vv for kk, vv in v.items() if kk != "sha256"} for k, v in manifest["variants"].items()}}
    return Path(manifest["model_dir"]), onnx_dir, model


def resume_dir(spec: str) -> Path:
    return Path(spec) if Path(spec).is_dir() else paths.results_dir() / spec


def open_run(cfg: RunConfig, model: dict) -> tuple[Path, RunResult]:
    if cfg.resume:
        run_dir = resume_dir(cfg.resume)
        run = load_run(run_dir)
        if run.model.get("source") != model["source"]:
            raise BenchError(f"cannot resume {run_dir}: it measured {run.model.get('spec')}, not {cfg.model}")
        return run_dir, run
    run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = paths.ensure_writable(paths.results_dir() / run_id)
    if (run_dir / "results.json").exists():
        raise BenchError(f"{run_dir} already holds a run; use --resume {run_id} or another --run-id")
    run = new_run(cfg, run_dir, model)
    save_run(run, run_dir)
    return run_dir, run


def cell_request(cfg: RunConfig, spec: CellSpec, model_dir: Path, onnx_dir: Path) -> dict:
    return {"spec": asdict(spec), "model_dir": str(model_dir), "onnx_dir": str(onnx_dir), "seed": cfg.seed,
            "stop": cfg.stop_rule(), "tdp_w": cfg.tdp_w, "options": cfg.backend_options.get(spec.key, cfg.backend_options.get(spec.backend, {}))}


def measure_cells(cfg: RunConfig, run_dir: Path, run: RunResult, model_dir: Path, onnx_dir: Path) -> RunResult:
    from tqdm import tqdm

    from bench.measure.sampler import ResourceSampler

    grid = build_grid(cfg)
    done = {c.spec.key for c in run.cells if c.status in ("ok", "skipped")}
    gpu_reason = host_gpu_reason()
    todo = [s for s in grid if s.key not in done]
    print(f"[run] {len(grid)} cells, {len(grid) - len(todo)} already done, results in {run_dir}", file=sys.stderr)
    with tqdm(total=len(todo), desc="cells", unit="cell", position=0, file=sys.stderr) as outer:
        for spec in todo:
            outer.set_postfix_str(spec.key)
            on_gpu = backends.resolve(spec.backend).device != "cpu"
            if gpu_reason and on_gpu:
                cell = CellResult(spec, "skipped", gpu_reason)
            else:
                with tqdm(total=cfg.stop_rule()["max_time_s"], desc="  timed s", position=1, leave=False,
                          file=sys.stderr, bar_format="{desc} {bar} {n:.1f}/{total:.0f}") as inner:
                    cell = run_cell(cell_request(cfg, spec, model_dir, onnx_dir), cfg.limits,
                                    sampler_factory=lambda pid: ResourceSampler(pid, 0.01, gpu=gpu_for(on_gpu)),
                                    on_progress=lambda s: setattr(inner, "n", min(s, inner.total)) or inner.refresh())
            run = run.with_cell(cell)
            save_run(run, run_dir)  # after every cell: a killed run loses at most the cell in flight
            outer.update(1)
    return run


def start_run(cfg: RunConfig) -> tuple[Path, RunResult, Path, Path]:
    """Export (or reuse) the models and open (or resume) the run folder; nothing is measured yet."""
    paths.ensure_writable(paths.results_dir())  # fail before the (minutes-long) export, not after
    if cfg.resume:
        load_run(resume_dir(cfg.resume))  # a missing or corrupt run to resume fails here too
    model_dir, onnx_dir, model = prepare_model(cfg)
    run_dir, result = open_run(cfg, model)
    return run_dir, result, model_dir, onnx_dir


def run(cfg: RunConfig) -> tuple[Path, RunResult]:
    """Export, measure every cell in a fresh worker, save after each. Returns the run folder and result."""
    run_dir, result, model_dir, onnx_dir = start_run(cfg)
    return run_dir, measure_cells(cfg, run_dir, result, model_dir, onnx_dir)
