"""Figures as base64 PNG, drawn with matplotlib's object API (no pyplot: no global state, no GUI backend).

Labels are ASCII only: matplotlib's default font has no CJK glyphs. Each function returns
{"id", "title", "png"} or {"id", "title", "note"} when its data is absent, so the report says why a plot is missing.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import ScalarFormatter

from bench.core.results import RunResult
from bench.core.run_records import GpuPeak, PeakGemm
from bench.core.summary import board_energy, host_cpu_energy
from reports.common import backend_parts, batch1_corpus, cell_label, on_gpu
from reports.gpu import vram
from reports.service import closed, measured, opened, service_configs

DPI = 100


def figure(ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.4 * ncols, 3.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def png(fig: Figure, pid: str, title: str) -> dict:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same data, same bytes
    wide = len(fig.axes) > 1
    return {"id": pid, "title": title, "png": base64.b64encode(buf.getvalue()).decode("ascii"), "wide": wide}


def skipped(pid: str, title: str, why: str) -> dict:
    return {"id": pid, "title": title, "note": f"not drawn: {why}", "wide": False}


def latency_cdf(run: RunResult) -> dict:
    title = "Latency CDF per backend (batch 1)"
    cells = [c for c in batch1_corpus(run) if c.status == "ok"]
    if not cells:
        return skipped("cdf", title, "no measured batch-1 cells")
    fig, (ax,) = figure()
    for cell in cells:
        data = np.sort(np.asarray(cell.latencies_s)) * 1000
        ax.step(data, np.arange(1, data.size + 1) / data.size, where="post", label=cell_label(cell))
    lows = [min(c.latencies_s) for c in cells]
    if max(max(c.latencies_s) for c in cells) / min(lows) > 20:  # engines' latencies can lie far apart
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 1, 10 rather than 10^0, 10^1
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.text(ax.get_xlim()[0], 0.95, " P95", va="bottom", fontsize=8, color="grey")
    ax.set(xlabel="latency per call (ms)", ylabel="fraction of calls <= x", ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    return png(fig, "cdf", title)


def sweep_series(run: RunResult, workload: str, x_of) -> dict:
    """(backend label) -> sorted [(x, p50_ms, lo, hi, items_per_call)] over ok cells of one workload."""
    series = defaultdict(list)
    for cell in run.cells:
        if cell.status == "ok" and cell.spec.workload == workload:
            s = cell.stats
            lo, hi = (v * 1000 for v in s["p50_ci95"])
            series[cell_label(cell)].append((x_of(cell), s["p50"] * 1000, lo, hi, cell.spec.batch))
    return {k: sorted(v) for k, v in series.items()}


def latency_vs(run: RunResult, pid: str, title: str, workload: str, x_of, xlabel: str, per_item: bool) -> dict:
    """P50 (with its CI) against a swept parameter; one line per backend that has two or more points."""
    series = {k: v for k, v in sweep_series(run, workload, x_of).items() if len(v) >= 2}
    if not series:
        xs = sorted({p[0] for points in sweep_series(run, workload, x_of).values() for p in points})
        return skipped(pid, title, f"needs two or more values of {xlabel.split(' (')[0]} for one backend; this "
                                   f"run measured {', '.join(map(str, xs)) or 'none'}")
    fig, axes = figure(2 if per_item else 1)
    for name, points in series.items():
        x, p50, lo, hi, items = (np.array(v, dtype=float) for v in zip(*points))
        axes[0].errorbar(x, p50, yerr=[p50 - lo, hi - p50], marker="o", capsize=3, label=name)
        if per_item:
            axes[1].plot(x, p50 / items, marker="o", label=name)
    axes[0].set(ylabel="P50 latency per call (ms), 95% CI")
    if per_item:
        axes[1].set(ylabel="P50 latency per item (ms)")
    for ax in axes:
        integer_log2_axis(ax, sorted({p[0] for v in series.values() for p in v}), xlabel)
    axes[0].legend(fontsize=8)
    return png(fig, pid, title)


def integer_log2_axis(ax, ticks: list, xlabel: str) -> None:
    """Batch sizes and lengths grow in powers of two: log2 spacing, but ticks labelled 1, 4, 128, not 2^k."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylim(bottom=0)


def latency_vs_batch(run: RunResult) -> dict:
    return latency_vs(run, "batch", "Latency vs batch size (corpus reviews)", "corpus", lambda c: c.spec.batch,
                      "batch size (items per call)", per_item=True)


def latency_vs_length(run: RunResult) -> dict:
    return latency_vs(run, "length", "Latency vs sequence length (fixed-length buckets)", "bucket",
                      lambda c: c.spec.seq_len, "sequence length (tokens)", per_item=False)


def qps_vs_concurrency(run: RunResult) -> dict:
    title = "QPS and P95 vs concurrency per service configuration"
    labels = [label for label in service_configs(run) if closed(run, label)]
    if not labels:
        return skipped("concurrency", title, "no closed-loop load tests in this run")
    fig, (left, right) = figure(2)
    for label in labels:
        pts = closed(run, label)
        users = [p.users for p in pts]
        left.errorbar(users, [p.qps for p in pts], yerr=ci_bars([(p.qps, p.qps_ci) for p in pts]), marker="o",
                      capsize=3, label=label)
        right.errorbar(users, [np.nan if p.p95_ms is None else p.p95_ms for p in pts], marker="o", capsize=3,
                       yerr=ci_bars([(p.p95_ms, p.p95_ci_ms) for p in pts]), label=label)
    left.set(ylabel="QPS (requests/s), 95% CI where recorded")
    right.set(ylabel="P95 latency (ms), 95% CI where recorded")
    users = sorted({p.users for label in labels for p in closed(run, label)})
    for ax in (left, right):
        integer_log2_axis(ax, users, "concurrent users")
    left.legend(fontsize=8)
    return png(fig, "concurrency", title)


def ci_bars(points: list) -> np.ndarray:
    """Error-bar lengths below and above each (value, ci) point; zero where the level has no CI (schema 1)."""
    bars = [(v - ci[0], ci[1] - v) if ci and v is not None else (0.0, 0.0) for v, ci in points]
    return np.array(bars, dtype=float).T.reshape(2, len(points))


def knee(run: RunResult, slo_ms: float) -> dict:
    title = "P95 vs achieved QPS (the knee), with the SLO"
    levels = [lt for lt in run.loadtests if measured(lt) and lt.p95_ms is not None]
    if not levels:
        return skipped("knee", title, "no measured load-test levels in this run")
    fig, (ax,) = figure()
    for label in service_configs(run):
        pts = [p for p in closed(run, label) if p.p95_ms is not None]
        line = ax.plot([p.qps for p in pts], [p.p95_ms for p in pts], marker="o", label=label if pts else None)
        extra = [lt for lt in opened(run, label) if lt.p95_ms is not None]
        color = line[0].get_color() if line else None
        ax.scatter([lt.qps for lt in extra], [lt.p95_ms for lt in extra], marker="x", s=60,
                   color=color, label=f"{label} (open loop)" if extra else None)
    highest = max(lt.p95_ms for lt in levels)
    if slo_ms <= 2 * highest:
        ax.axhline(slo_ms, color="red", ls="--", lw=1, label=f"SLO: P95 = {slo_ms:g} ms")
    else:  # drawing a far-away line would squash every point against the axis
        ax.set_title(f"SLO (P95 = {slo_ms:g} ms) is far above every point: all meet it", fontsize=9, color="red")
    ax.set(xlabel="achieved QPS (requests/s)", ylabel="P95 latency (ms)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return png(fig, "knee", title)


def memory_energy(run: RunResult) -> dict:
    """Memory (CPU rows: peak RSS; GPU rows: VRAM) and energy per 1,000 inferences, the host CPU's and a GPU
    board's as separate bars: the two are different quantities and are never stacked into one."""
    title = "Peak memory and energy per 1,000 inferences (batch 1)"
    cells = [c for c in batch1_corpus(run) if c.status == "ok"]
    if not cells:
        return skipped("memory", title, "no measured batch-1 cells")
    fig, (mem, energy) = figure(2)
    names = [cell_label(c) for c in cells]
    gpu_rows = [on_gpu(c.spec.backend) for c in cells]
    memory = [(vram(c)[0] if g else c.resources.peak_rss_bytes) or 0 for c, g in zip(cells, gpu_rows)]
    mem.barh(names, [m / 2**20 for m in memory], color=["#55a868" if g else "#4c72b0" for g in gpu_rows])
    mem.set(xlabel="peak RSS (MiB)" + ("; green: GPU rows, peak VRAM" if any(gpu_rows) else ""))
    y, half = np.arange(len(cells)), 0.2 if any(gpu_rows) else 0.0
    cpu = [host_cpu_energy(c) for c in cells]
    for i, (joules, source) in enumerate(cpu):  # one bar at a time: a hatch per bar
        energy.barh(i - half, (joules or 0) * 1000, height=0.8 - 2 * half, color="#dd8452", edgecolor="white",
                    hatch="//" if source == "estimate" else "", label="host CPU" if i == 0 else None)
    if any(gpu_rows):
        energy.barh(y + half, [(board_energy(c)[0] or 0) * 1000 for c in cells], height=0.4, color="#55a868",
                    label="GPU board (NVML)")
    estimated = ", hatched = estimated" if any(source == "estimate" for _, source in cpu) else ""
    energy.set(xlabel=f"energy per 1,000 inferences (J){estimated}", yticks=y)
    energy.tick_params(labelleft=False)
    energy.legend(fontsize=7, loc="lower right")
    for ax in (mem, energy):
        ax.invert_yaxis()
    return png(fig, "memory", title)


def roofline(run: RunResult) -> dict:
    from bench.measure.roofline import peak_for

    title = "Roofline efficiency: achieved FLOP/s / measured peak GEMM rate of the cell's precision"
    record = run.host.peak_gemm or PeakGemm()
    # GPU cells against the GPU's own peak of their precision only (none measured: not drawn)
    judged = [(c, *peak_for(precision_of(c.spec.backend), record, run.peak_gemm_flops,
                            "cuda" if on_gpu(c.spec.backend) else "cpu", c.meta.tf32))
              for c in run.cells if c.achieved_flops]
    judged = [(c, peak, kind) for c, peak, kind in judged if peak]
    if not judged:
        flops = any(c.achieved_flops for c in run.cells)
        return skipped("roofline", title, "no peak GEMM measurement" if flops else "no cell records its FLOPs")
    fig, (ax,) = figure()
    fp32, int8 = peak_for("fp32", record, run.peak_gemm_flops)[0], record.int8_peak_ops
    # Orange: INT8 judged against a float32 peak (runs without an INT8 peak), which it can pass.
    bf16 = record.bf16_peak_flops
    kinds = {"fp32": ("#55a868", f"float32 cells (peak {fp32 / 1e9:.0f} GFLOP/s)" if fp32 else "float32 cells"),
             "int8": ("#4c72b0", f"INT8 cells (INT8 peak {int8 / 1e9:.0f} GOP/s)" if int8 else "INT8 cells"),
             "bf16": ("#64b5cd", f"BF16 cells (BF16 peak {bf16 / 1e9:.0f} GFLOP/s)" if bf16 else "BF16 cells"),
             "int8-vs-fp32": ("#dd8452", "INT8 cells vs the float32 peak (no INT8 peak measured)"),
             "bf16-vs-fp32": ("#c44e52", "BF16 cells vs the float32 peak (no BF16 peak measured)")}
    gpu = record.gpu or GpuPeak()
    kinds.update({f"gpu-{k}": (color, f"GPU {k.upper()} cells (GPU peak {(gpu.rate(k) or 0) / 1e12:.0f} TFLOP/s)")
                  for k, color in (("fp32", "#8172b3"), ("tf32", "#937860"), ("fp16", "#da8bc3"))})
    kind_of = [kind if kind.startswith("gpu") or kind in ("int8", "bf16") else
               f"{precision_of(c.spec.backend)}-vs-fp32" if precision_of(c.spec.backend) in ("int8", "bf16") else
               "fp32" for c, _, kind in judged]
    ax.barh([c.spec.key for c, _, _ in judged], [100 * c.achieved_flops / peak for c, peak, _ in judged],
            color=[kinds[k][0] for k in kind_of])
    ax.axvline(100, color="grey", linewidth=0.8, linestyle=":")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.set(xlabel="% of the peak GEMM rate of the cell's precision")
    fig.legend(handles=[Patch(color=kinds[k][0], label=kinds[k][1]) for k in dict.fromkeys(kind_of)],
               fontsize=7, loc="outside lower center", ncols=2, frameon=False)  # below the axes: hides no bar
    return png(fig, "roofline", title)


def precision_of(backend: str) -> str:
    spec = backend_parts(backend)
    return spec.precision if spec else "fp32"


def all_plots(run: RunResult, slo_ms: float) -> list[dict]:
    # Ordered so that single-panel figures sit side by side in pairs on a wide page.
    return [latency_cdf(run), latency_vs_length(run), latency_vs_batch(run), qps_vs_concurrency(run),
            knee(run, slo_ms), roofline(run), memory_energy(run)]
