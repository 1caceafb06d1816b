"""The measuring half of a run: the grid of cells (what to run × how to load it), each measured in several fresh
worker processes (where), round-robin over the grid. The pipeline (bench.app.pipeline) owns the run folder and
results.json; this module returns cells through a callback."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import backends
from bench.core.errors import BenchError, ConfigError
from bench.core.records import CellResult, CellSpec
from bench.core.stats import StopRule
from bench.engine.runner import WorkerLimits, WorkerRequest, run_cell
from bench.measure.isa import CpuIsa, left_out
from bench.model import artifacts


@dataclass(frozen=True)
class Profile:
    """What a named profile measures. batch1 backends see the ≈80-char corpus at batch 1; the sweeps
    add batch sizes and fixed token lengths for a few backends."""

    name: str
    batch1: tuple
    batch_sweep: tuple  # (backends, batches)
    length_sweep: tuple  # (backends, lengths)
    stop: dict
    processes: int  # fresh workers per cell: processes differ in speed, so one cannot give an honest CI
    gpu_batch_sweep: tuple = ((), ())  # (backends, batches): only on a host whose GPU can run them (host_grid)
    by_isa: bool = True  # leave out the CPU backends that cannot win on this CPU (bench.measure.isa.left_out)


ALL_BACKENDS = backends.CPU_BACKENDS + backends.GPU_BACKENDS
# On a GPU host: the decision's GPU backends at batch 1…64, where a GPU's throughput comes from. A batch past the
# device's memory fails with its reason and the run goes on; a CPU host never plans these cells (no skipped rows,
# no time).
GPU_BATCH_SWEEP = (("ort-fp16-cuda", "torch-fp16-cuda"), (1, 2, 4, 8, 16, 32, 64))
# Batch 8 (a batching service's call) for every CPU contender the CPU's instruction sets plan, so the decision and
# `check cpu` compare the best engines at the batch a service runs.
CPU_BATCH_SWEEP = ("ort-int8-cpu", "ov-int8-cpu", "ov-bf16-cpu")
# Windows per process are short (≥ 2 s, ≤ 5 s): a longer window narrows one process's CI, which the spread
# between processes dwarfs (docs/measurements.md); three short processes buy an honest CI for the time of one long
# one.
PROFILES = {
    "default": Profile("default", ALL_BACKENDS, ((*CPU_BATCH_SWEEP, "ort-fp32-cuda", "torch-fp16-cuda"), (8,)),
                       (("ort-fp32-cuda",), (128,)),
                       {"min_iters": 20, "min_time_s": 2.0, "max_time_s": 5.0, "target_rel_halfwidth": 0.05}, 3,
                       GPU_BATCH_SWEEP),
    "full": Profile("full", ALL_BACKENDS, ((*CPU_BATCH_SWEEP, "torch-bf16-cpu", "ort-fp32-cuda", "torch-fp16-cuda"),
                                           (4, 8, 16, 32, 64)),
                    (("ort-int8-cpu", "ov-int8-cpu", "ort-fp32-cuda"), (16, 64, 128, 256)),
                    {"min_iters": 20, "min_time_s": 3.0, "max_time_s": 10.0, "target_rel_halfwidth": 0.05}, 5,
                    GPU_BATCH_SWEEP, by_isa=False),
    "quick": Profile("quick", ALL_BACKENDS, (("ort-int8-cpu",), (4,)), (("ort-int8-cpu",), (128,)),
                     {"min_iters": 10, "min_time_s": 1.0, "max_time_s": 3.0, "target_rel_halfwidth": 0.10}, 2),
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
    service_shaped: tuple | None = None  # max batches at which to time service-shaped batches (records.WORKLOADS)
    threads: tuple = (None,)
    max_time_s: float | None = None
    min_time_s: float | None = None
    processes: int | None = None  # fresh workers per cell; None = the profile's
    run_id: str | None = None
    resume: str | None = None
    force: bool = False  # resume on another host or with other settings anyway
    tdp_w: float | None = None
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    backend_options: dict = field(default_factory=dict)
    eval_data: str | None = None  # the user's labelled data for the accuracy gate (bench.model.evaldata)
    gpu: int = 0  # the CUDA device GPU cells run on (CUDA's numbering, within CUDA_VISIBLE_DEVICES)

    def __post_init__(self) -> None:
        if self.gpu < 0:
            raise ConfigError(f"--gpu must be a CUDA device number >= 0 (got {self.gpu})")
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile '{self.profile}' (choose from {', '.join(PROFILES)})")
        for name in self.backends or ():
            backends.resolve(name)
        for b in self.batches or ():
            if b < 1:
                raise ConfigError(f"batch size must be >= 1 (got {b})")
        for b in self.service_shaped or ():
            if b < 1:
                raise ConfigError(f"service-shaped max batch must be >= 1 (got {b})")
        for n in self.lengths or ():
            if not 3 <= n <= 512:
                raise ConfigError(f"sequence length must be within 3..512 tokens (got {n})")
        if self.max_time_s is not None and self.max_time_s <= 0:
            raise ConfigError(f"duration must be > 0 (got {self.max_time_s})")
        if self.processes is not None and self.processes < 1:
            raise ConfigError(f"processes per cell must be >= 1 (got {self.processes})")

    def stop_rule(self) -> StopRule:
        stop = dict(PROFILES[self.profile].stop)
        if self.max_time_s is not None:
            stop["max_time_s"] = self.max_time_s
            stop["min_time_s"] = min(stop["min_time_s"], self.max_time_s)
        if self.min_time_s is not None:
            stop["min_time_s"] = self.min_time_s
        return StopRule(**stop)

    @property
    def n_processes(self) -> int:
        return self.processes or PROFILES[self.profile].processes


def build_grid(cfg: RunConfig, gpu_host: bool = False) -> list[CellSpec]:
    """The cells of the run, without duplicates, in a stable order; `gpu_host`: with the profile's GPU batch
    sweep (a grid given on the command line is taken as given)."""
    prof = PROFILES[cfg.profile]
    if cfg.backends or cfg.batches or cfg.lengths:
        names = cfg.backends or prof.batch1
        combos = [(n, b, None) for n in names for b in (cfg.batches or (1,))]
        combos += [(n, 1, L) for n in names for L in (cfg.lengths or ())]
    else:
        combos = [(n, 1, None) for n in prof.batch1]
        combos += [(n, b, None) for n in prof.batch_sweep[0] for b in prof.batch_sweep[1]]
        combos += [(n, b, None) for n in prof.gpu_batch_sweep[0] for b in prof.gpu_batch_sweep[1] if gpu_host]
        combos += [(n, 1, L) for n in prof.length_sweep[0] for L in prof.length_sweep[1]]
    if prof.by_isa and not (cfg.backends or cfg.batches or cfg.lengths):
        isa = CpuIsa.here()
        combos = [c for c in combos if backends.resolve(c[0]).on_gpu or not left_out(c[0], isa, c[1])]
    cells = [CellSpec(n, b, "bucket" if L else "corpus", L, t) for n, b, L in combos for t in cfg.threads]
    names = list(dict.fromkeys(c.backend for c in cells))
    cells += [CellSpec(n, b, "service", None, t) for n in names for b in cfg.service_shaped or () for t in cfg.threads]
    return list(dict.fromkeys(cells))


def left_out_here(cfg: RunConfig, isa: CpuIsa | None = None) -> dict[str, str]:
    """The CPU backends the profile leaves out on this CPU, with the reason (empty for a grid given by hand and for
    profiles that plan everything)."""
    prof = PROFILES[cfg.profile]
    if not prof.by_isa or cfg.backends or cfg.batches or cfg.lengths:
        return {}
    isa = isa or CpuIsa.here()
    planned = [(n, 1) for n in prof.batch1] + [(n, b) for n in prof.batch_sweep[0] for b in prof.batch_sweep[1]]
    reasons = {f"{n} b{b}": left_out(n, isa, b) for n, b in planned if not backends.resolve(n).on_gpu}
    return {n: why for n, why in reasons.items() if why}


def plan_record(cfg: RunConfig) -> dict:
    """What the results file says of the plan: the CPU's instruction sets and every backend left out, with why."""
    isa = CpuIsa.here()
    return {"isa": isa.describe(), "left_out": left_out_here(cfg, isa)}


def host_grid(cfg: RunConfig) -> tuple[list[CellSpec], str | None]:
    """The grid on this host and why its GPU cells cannot run here (None: they can, or there are none). The GPU
    batch sweep is planned only where a GPU can run it: on a CPU host it would be rows of skips."""
    grid = build_grid(cfg)
    reason = host_gpu_reason(cfg.gpu) if any(on_gpu(s) for s in grid) else None
    return (build_grid(cfg, gpu_host=True) if reason is None else grid), reason


def host_gpu_reason(ordinal: int = 0, driver_loader=None) -> str | None:
    """Why GPU cells cannot run here, or None: asked of the CUDA driver, not NVML, so a host whose NVML is missing
    still runs its GPU cells (without NVML's power and VRAM figures). Saves spawning doomed workers."""
    from bench.measure.cuda_driver import cuda_device_reason, load_driver

    reason = cuda_device_reason(ordinal, driver_loader or load_driver)
    return f"no usable NVIDIA GPU: {reason}" if reason else None


def gpu_for(on_gpu: bool, ordinal: int = 0):
    """NVML's handle on the CUDA device of a GPU cell, for its sampler (VRAM, utilisation, power), else None."""
    if not on_gpu:
        return None
    from bench.measure.gpu import open_cuda_gpu

    return open_cuda_gpu(ordinal)


def on_gpu(spec: CellSpec) -> bool:
    return backends.resolve(spec.backend).on_gpu


def config_dict(cfg: RunConfig) -> dict:
    out = asdict(cfg)
    out["plan"] = plan_record(cfg)
    out["stop_rule"] = asdict(cfg.stop_rule())
    out["processes"] = cfg.n_processes
    out["method"] = {"percentiles": "numpy linear interpolation, pooled over processes",
                     "ci": "hierarchical bootstrap (processes, then samples within each), 1000 resamples, 95 %, "
                           "widened for few processes (see bench.core.stats.hierarchical_bootstrap_ci)",
                     "latency": "engine only (inputs pre-tokenised); CPU: perf_counter_ns; torch CUDA: events + sync; "
                                "ORT GPU: host clock around IO binding with synchronize_inputs/outputs",
                     "throughput": "items / wall time of the timed windows",
                     "process": f"{cfg.n_processes} fresh workers per cell, round-robin over the grid"}
    return out


def cell_request(cfg: RunConfig, spec: CellSpec, model_dir: Path, onnx_dir: Path | None) -> WorkerRequest:
    """The worker's request, with the ONNX file resolved here (a missing variant fails the cell, not the run)."""
    b = backends.resolve(spec.backend)
    path = artifacts.model_file(onnx_dir, b.engine, b.precision, b.device)
    options = cfg.backend_options.get(spec.key, cfg.backend_options.get(spec.backend, {}))
    return WorkerRequest(spec, str(model_dir), str(path) if path else None, cfg.seed, cfg.stop_rule(),
                         tdp_w=cfg.tdp_w, options=options, gpu=cfg.gpu)


def pending(cells: dict[str, CellResult], spec: CellSpec, round_no: int) -> bool:
    """Does `spec` still need its worker number `round_no`? Skipped or failed cells are not retried."""
    cell = cells.get(spec.key)
    return cell is None or (cell.status == "ok" and len(cell.runs) <= round_no)


def skipped_backend(cells: dict[str, CellResult], spec: CellSpec) -> str | None:
    """The reason a backend was skipped here (unavailable: no such provider, no CUDA device …): it is unavailable
    at every batch size and length, so its other cells take the reason without a worker to learn it again."""
    return next((c.reason for c in cells.values() if c.spec.backend == spec.backend and c.status == "skipped"), None)


def measure_cells(cfg: RunConfig, done: tuple[CellResult, ...], model_dir: Path, onnx_dir: Path | None,
                  on_cell) -> dict[str, CellResult]:
    """Measure every cell of the grid in `cfg.n_processes` fresh workers, round-robin (A B C A B C …) so slow
    drift of the host spreads over all cells; `done` cells (a resumed run) keep their workers. `on_cell(cell)`
    is called after every worker, so the caller can save."""
    from tqdm import tqdm

    (grid, gpu_reason), rounds = host_grid(cfg), cfg.n_processes
    cells = {c.spec.key: c for c in done}
    todo = [(r, s) for r in range(rounds) for s in grid if pending(cells, s, r)]
    print(f"[run] {len(grid)} cells × {rounds} processes, {len(todo)} workers to run", file=sys.stderr)
    with tqdm(total=len(todo), desc="workers", unit="proc", position=0, file=sys.stderr) as bar:
        for round_no, spec in todo:
            if not pending(cells, spec, round_no):  # skipped or failed in an earlier round
                bar.update(1)
                continue
            bar.set_postfix_str(f"{spec.key} #{round_no + 1}")
            known = skipped_backend(cells, spec)
            cell = CellResult(spec, "skipped", known) if known else measure_one(cfg, spec, model_dir, onnx_dir,
                                                                                  gpu_reason)
            cells[spec.key] = cells[spec.key].with_run(cell) if spec.key in cells else cell
            on_cell(cells[spec.key])
            bar.update(1)
    return cells


def measure_one(cfg: RunConfig, spec: CellSpec, model_dir: Path, onnx_dir: Path | None,
                gpu_reason: str | None) -> CellResult:
    """One worker for one cell, with the resource sampler and a progress bar of its timed window."""
    from tqdm import tqdm

    from bench.measure.sampler import ResourceSampler

    gpu_cell = on_gpu(spec)
    if gpu_reason and gpu_cell:
        return CellResult(spec, "skipped", gpu_reason)
    try:
        request = cell_request(cfg, spec, model_dir, onnx_dir)
    except BenchError as exc:
        return CellResult(spec, "failed", str(exc))
    with tqdm(total=request.stop.max_time_s, desc="  timed s", position=1, leave=False, file=sys.stderr,
              bar_format="{desc} {bar} {n:.1f}/{total:.0f}") as inner:
        return run_cell(request, cfg.limits,
                        sampler_factory=lambda pid: ResourceSampler(pid, 0.01, gpu=gpu_for(gpu_cell, cfg.gpu)),
                        on_progress=lambda s: setattr(inner, "n", min(s, inner.total)) or inner.refresh())
