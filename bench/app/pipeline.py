"""One pipeline owns a run: prepare (export, open or resume the run folder) → measure → sweep → report.

A `RunContext` travels through the stages; this module is the only writer of results.json. The stages below it
(bench.engine.harness, loadtests.sweep, reports) return records or write only their own files.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench.core import paths
from bench.core.errors import BenchError
from bench.core.results import RunResult, load_run, save_run
from bench.core.run_records import HostRecord, ModelRecord, TrainedTwinAccuracy
from bench.core.store import update_store
from bench.engine.harness import RunConfig, config_dict, measure_cells

# Settings a resumed run takes from its own results file; giving a different value needs --force.
RESUMED = ("model", "seed", "profile", "backends", "batches", "lengths", "threads", "max_time_s", "min_time_s",
           "processes", "tdp_w", "gpu")


@dataclass(frozen=True)
class RunContext:
    """What the stages share: the run folder, the results so far, and where the model's files are."""

    run_dir: Path
    result: RunResult
    model_dir: Path
    onnx_dir: Path | None

    def update(self, change: Callable[[RunResult], RunResult]) -> "RunContext":
        """Apply `change` to the run as it is on disk now and write it back, under the run folder's lock: another
        process adding to the same run meanwhile (a sweep beside `bench all`, two resumes) loses none of its
        records. Returns the context holding the merged run."""
        with paths.locked(self.run_dir / ".results.lock", f"the run {self.run_dir}"):
            current = load_run(self.run_dir) if (self.run_dir / "results.json").exists() else self.result
            result = change(current)
            save_run(result, self.run_dir)
            # then the tidy tables (bench.core.store), after every save so they match results.json wherever a run
            # stops; a store that cannot be written is a warning, and results.json, written first, is kept
            update_store(result, self.run_dir)
        return replace(self, result=result)


def export_model(model: str, seed: int = 0, eval_data: str | None = None) -> tuple[Path, Path, ModelRecord]:
    """Export (or reuse) the ONNX variants; the model block of the results file says what was measured."""
    from exporters.pipeline import ExportConfig, export_all

    onnx_dir, manifest = export_all(ExportConfig(model=model, seed=seed,
                                                 eval_data=Path(eval_data) if eval_data else None))
    print(f"[run] models: {onnx_dir}\n[run] manifest: {onnx_dir / 'manifest.json'}", file=sys.stderr, flush=True)
    return Path(manifest["model_dir"]), onnx_dir, ModelRecord.from_manifest(model, str(onnx_dir), manifest)


def resume_config(cfg: RunConfig, run: RunResult, run_dir: Path) -> RunConfig:
    """The interrupted run's own settings (grid, stop rule, processes), refusing conflicting flags or another
    host unless `cfg.force`."""
    from bench.measure.host import fingerprint, same_host

    stored = {k: v for k, v in run.config.items() if k in RESUMED}
    stored = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    given = RunConfig(model=cfg.model)  # flags equal to the defaults were not given
    conflicts = [k for k in RESUMED if getattr(cfg, k) != getattr(given, k) and getattr(cfg, k) != stored.get(k)]
    if conflicts and not cfg.force:
        raise BenchError(f"cannot resume {run_dir} with other settings ({', '.join(conflicts)}); "
                         f"leave them out to continue as it was, or add --force")
    differs = same_host(run.host, HostRecord.from_fingerprint(fingerprint(cfg.gpu)))
    if differs and not cfg.force:
        raise BenchError(f"cannot resume {run_dir}: it ran on another host ({', '.join(differs)} differ); "
                         f"add --force to mix hosts in one run")
    return replace(cfg, **{k: v for k, v in stored.items() if k not in conflicts})


def new_result(cfg: RunConfig, run_dir: Path, model: ModelRecord, hour_usd: float | None = None) -> RunResult:
    from bench.measure.host import fingerprint
    from bench.measure.roofline import measure_peak

    print("[run] measuring peak GEMM rate for the roofline …", file=sys.stderr, flush=True)
    peak = measure_peak()
    gpu = gpu_peak(cfg)
    peak = {**peak, "gpu": gpu} if gpu else peak
    return RunResult(run_id=run_dir.name, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     host=HostRecord.from_fingerprint(fingerprint(cfg.gpu), peak), model=model,
                     config={**config_dict(cfg), **priced(hour_usd)}, peak_gemm_flops=peak["peak_flops"])


def gpu_peak(cfg: RunConfig, timeout_s: float = 300.0) -> dict | None:
    """The GPU's own dense GEMM peak (FP32, TF32, FP16) for the roofline of GPU cells, once per run and in a fresh
    process, so this one never holds a CUDA context beside the workers; None without GPU cells or a usable GPU."""
    import json
    import subprocess

    from bench.engine.harness import build_grid, host_gpu_reason, on_gpu

    if not any(on_gpu(s) for s in build_grid(cfg)) or host_gpu_reason(cfg.gpu):
        return None
    print(f"[run] measuring the GEMM peak of CUDA device {cfg.gpu} …", file=sys.stderr, flush=True)
    try:
        out = subprocess.run([sys.executable, "-m", "bench.engine.gpu_peak", "--gpu", str(cfg.gpu)],
                             capture_output=True, text=True, timeout=timeout_s)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return {"error": f"GPU peak not measured: {type(exc).__name__}: {str(exc)[:200]}"}


def priced(hour_usd: float | None) -> dict:
    """The host's price per hour, an input the report uses for cost (absent: the report's example prices)."""
    return {"hour_usd": hour_usd} if hour_usd is not None else {}


def new_run_dir(cfg: RunConfig) -> Path:
    run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = paths.ensure_writable(paths.results_dir() / run_id)
    if (run_dir / "results.json").exists():
        raise BenchError(f"{run_dir} already holds a run; use --resume {run_id} or another --run-id")
    return run_dir


def prepare(cfg: RunConfig, hour_usd: float | None = None) -> tuple[RunConfig, RunContext]:
    """Export (or reuse) the models and open a new run folder, or the one `cfg.resume` names (with its own
    settings); nothing is measured yet. `hour_usd`: this host's price per hour, stored in the run's config.
    Returns the effective settings and the context."""
    paths.ensure_writable(paths.results_dir())  # fail before the (minutes-long) export, not after
    if cfg.resume:
        run_dir = paths.resolve_run(cfg.resume)
        stored = load_run(run_dir)  # a missing or corrupt run to resume fails here, before the export
        cfg = resume_config(cfg, stored, run_dir)
    model_dir, onnx_dir, model = export_model(cfg.model, cfg.seed, cfg.eval_data)
    if cfg.resume:
        if stored.model.source != model.source:
            raise BenchError(f"cannot resume {run_dir}: it measured {stored.model.spec}, not {cfg.model}")
        ctx = RunContext(run_dir, stored, model_dir, onnx_dir)
        return cfg, ctx.update(lambda r: replace(r, config={**r.config, **priced(hour_usd)})) if hour_usd else ctx
    run_dir = new_run_dir(cfg)
    ctx = RunContext(run_dir, new_result(cfg, run_dir, model, hour_usd), model_dir, onnx_dir)
    return cfg, ctx.update(lambda r: r)


def measure(cfg: RunConfig, ctx: RunContext) -> RunContext:
    """Every cell of the grid; results.json is written after every worker (a killed run loses one worker)."""
    holder = [ctx]

    def saved(cell) -> None:
        holder[0] = holder[0].update(lambda r: r.with_cell(cell))

    measure_cells(cfg, ctx.result.cells, ctx.model_dir, ctx.onnx_dir, saved)
    return holder[0]


def sweep(sweep_cfg, ctx: RunContext, deadline: float | None = None) -> RunContext:
    """The load-test sweep (loadtests.sweep), its levels merged into the run; then, when `sweep_cfg.slo_search`
    is set, each configuration's QPS at the SLO (loadtests.slo_search), saved after the levels. With a
    `deadline` (time.monotonic), the searches share what is left of it; too little for a bracket (two probes at
    each one's start rate), and they are recorded as not run, with the reason and the command that runs them."""
    from loadtests.sweep import run_sweep

    def saved(levels: list) -> None:  # after every window: a sweep stopped half-way keeps what it measured
        ctx.update(lambda r: r.with_levels(tuple(levels)))

    levels = run_sweep(sweep_cfg, ctx.run_dir / "loadtests", saved)
    ctx = ctx.update(lambda r: r.with_levels(tuple(levels)))
    if sweep_cfg.slo_search is None:
        return ctx
    from loadtests.slo_search import bracket_seconds, run_searches, skipped_searches, start_hints

    hints = start_hints(levels)
    cap, need = sweep_cfg.slo_search.time_cap_s, bracket_seconds(sweep_cfg, hints)
    if deadline is not None:
        cap = min(cap, (deadline - time.monotonic()) / len(sweep_cfg.variants))
    if cap < need:
        why = (f"not run: the run's time budget left {max(cap, 0):.0f} s per configuration (a search needs "
               f"≥ {need:.0f} s here); run `python -m bench sweep --run {ctx.run_dir.name} --slo-search`")
        return ctx.update(lambda r: r.with_searches(tuple(skipped_searches(sweep_cfg, why))))
    searches = run_searches(sweep_cfg, ctx.run_dir / "loadtests" / "search", hints, deadline)
    return ctx.update(lambda r: r.with_searches(tuple(searches)))


ACCURACY_TEXTS = 1000  # held-out reviews per variant: a 1-point change is then about 2 standard errors


def accuracy(ctx: RunContext, max_drop: float | None) -> RunContext:
    """Accuracy on real labels for every runtime × precision. A model with trained weights has it in its own
    export's parity records; for a synthetic twin (labels meaningless) the trained twin — a small BERT trained on
    the corpus's training split — is exported the same way and its variants judged on ACCURACY_TEXTS held-out
    reviews, as the proxy the decision and the tune use for the accuracy floor."""
    if not ctx.result.model.synthetic:
        return ctx
    block = trained_twin_accuracy(max_drop)
    return ctx.update(lambda r: replace(r, model=replace(r.model, trained_twin=block)))


def trained_twin_accuracy(max_drop: float | None) -> TrainedTwinAccuracy:
    """The trained twin exported (or reused) with every variant judged on ACCURACY_TEXTS held-out reviews; a variant
    below the floor is recorded as such, not raised (the callers leave it out and say why)."""
    from bench.model.twin_trained import SOURCE as TRAINED_TWIN
    from exporters.pipeline import ExportConfig, export_all

    print(f"[run] accuracy on real labels: {TRAINED_TWIN} on {ACCURACY_TEXTS} held-out reviews …", file=sys.stderr,
          flush=True)
    # trained weights: every variant is judged on every text (the FP32 shortcut is the synthetic twin's only)
    _, manifest = export_all(ExportConfig(model=TRAINED_TWIN, parity_n=ACCURACY_TEXTS, max_accuracy_drop=max_drop),
                             gate=False)
    return TrainedTwinAccuracy.from_manifest(manifest, max_drop, ACCURACY_TEXTS)


def tune(tune_cfg, ctx: RunContext) -> RunContext:
    """The serving-config search (bench.app.tune): its record, and its service runs as load levels of the run, so the
    decision can choose the tuned service."""
    from bench.app.tune.search import run_tune

    record, levels = run_tune(tune_cfg, ctx.run_dir / "loadtests" / "tune")
    return ctx.update(lambda r: r.with_tune(record).with_levels(tuple(levels)))


def report(ctx: RunContext, options=None) -> tuple[Path, Path]:
    from reports.render import ReportOptions, write_report

    return write_report(ctx.run_dir, options or ReportOptions())


def sweep_context(model: str, seed: int, run: str | None, run_id: str | None) -> RunContext:
    """The run a stand-alone sweep adds to: an existing one (`run`), or a new run with no engine cells."""
    if run:
        run_dir = paths.resolve_run(run)
        result = load_run(run_dir)
        model_dir = Path(result.model.model_dir) if result.model.model_dir else None
        return RunContext(run_dir, result, model_dir, None)
    return prepare(RunConfig(model=model, seed=seed, run_id=run_id))[1]


__all__ = ["RunContext", "prepare", "measure", "sweep", "tune", "report", "sweep_context", "export_model"]
