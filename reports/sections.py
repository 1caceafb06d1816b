"""Sections of the report built from engine cells and the model manifest: header, latency, resources, parity,
environment. Each returns plain dicts; numbers are already formatted strings (see reports.fmt)."""

from __future__ import annotations

import re
from collections import defaultdict

from bench.core.records import Energy
from bench.core.results import RunResult
from bench.core.run_records import CpuPower, HostRecord, ParityRecord, PeakGemm, SourceMeta, VariantRecord
from bench.core.summary import covers_gpu
from reports import fmt, gpu
from reports.common import batch1_corpus, cell_label, column, label, na, num, rows_for, table, text
from reports.hosts import EXAMPLE_PRICES, EXAMPLE_SOURCE
from reports.service import failed_configs, label_of, load_point, measured

ENERGY_SOURCES = {"nvml": "measured (NVML)", "rapl": "measured (RAPL)", "estimate": "estimated"}


def header(run: RunResult) -> dict:
    source = run.model.source or SourceMeta()
    synthetic = bool(run.model.synthetic if run.model.synthetic is not None else source.synthetic)
    return {
        "run_id": run.run_id, "created": run.created, "git_commit": run.host.git_commit or "not recorded",
        "model_spec": run.model.spec or "not recorded", "model_source": source.source,
        "synthetic": synthetic, "host": host_lines(run.host), "issues": issues(run), "task": task_line(run),
        "test_data": run.host.test_data or run.config.get("test_data"),  # built by tests: not measured
    }


def task_line(run: RunResult) -> str:
    """What the model does, from its signature (bench.core.signature); older runs measured the 2-label twin."""
    sig = run.model.signature
    if sig is None:
        return "sequence classification (signature not recorded: a run made before models carried one)"
    return f"{sig.what} · {sig.family} · inputs {', '.join(sig.inputs)}"


def host_lines(host: HostRecord) -> list[dict]:
    ram = host.ram_bytes
    return [
        {"label": "CPU", "value": f"{host.cpu_model or 'not recorded'} · {host.logical_cores or '?'} logical cores"},
        {"label": "CPU features", "value": ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in host.cpu_flags.items())
                                           or "not recorded"},
        {"label": "RAM", "value": f"{ram / 2**30:.1f} GiB" if ram else "not recorded"},
        {"label": "GPU", "value": host.gpu_name or f"none ({host.gpu_note or 'not recorded'})"},
        {"label": "Platform", "value": f"{host.platform or 'not recorded'} · Python {host.python or '?'}"},
    ]


def issues(run: RunResult) -> list[dict]:
    """What was skipped or failed and why, grouped so seven GPU cells skipped for one reason read as one line."""
    groups: dict = defaultdict(list)
    for cell in run.cells:
        if cell.status != "ok":
            groups[(cell.status, cell.reason or "no reason recorded")].append(cell.spec)
    out = [{"status": s, "reason": r, "what": spec_names(specs)} for (s, r), specs in groups.items()]
    for name, variant in run.model.variants.items():
        parity = variant.parity or ParityRecord()
        if parity.passed is None and parity.not_measured:
            out.append({"status": "not measured", "reason": parity.not_measured, "what": [f"{name} parity"]})
        elif parity.passed is False:
            out.append({"status": "failed", "reason": "; ".join(parity.failures or ["parity gate"]),
                        "what": [f"{name} parity"]})
    return out + loadtest_issues(run)


def spec_names(specs: list) -> list[str]:
    """Cells as people name them, one entry per backend: 'ort-fp32-cuda (batch 1, 8)', with a sequence length or a
    thread count where the cell had one."""
    by_backend: dict = defaultdict(list)
    for spec in specs:
        shape = f"batch {spec.batch}" + (f" × length {spec.seq_len}" if spec.workload == "bucket" else "")
        by_backend[spec.backend].append(shape + (f", {spec.threads} threads" if spec.threads else ""))
    return [f"{backend} ({', '.join(dict.fromkeys(shapes))})" for backend, shapes in by_backend.items()]


def loadtest_issues(run: RunResult) -> list[dict]:
    out = [{"status": "failed", "reason": reason, "what": [f"service {name}"]}
           for name, reason in failed_configs(run).items()]
    for lt in filter(measured, run.loadtests):
        wrong = [f"{n} {what}" for n, what in ((lt.failures, "failed"), (lt.invalid_answers, "wrong answers")) if n]
        if wrong:
            out.append({"status": "errors", "reason": f"{' and '.join(wrong)} of {lt.requests} requests",
                        "what": [f"load test {label_of(lt)} ({load_point(lt)})"]})
    return out


def load_table(run: RunResult) -> dict:
    cols = [column("Backend", False), column("Imports s"), column("Create session s"), column("First inference s"),
            column("Total s")]
    rows = rows_for(batch1_corpus(run), load_row, span=4)
    notes = ["Each cell runs in fresh worker processes, so imports are cold: this is the time to a first answer "
             "after a service starts (文章: 首次加载时间). With several processes, each phase is their median."]
    return table("load", "Load time by phase (batch 1)", cols, rows, notes, empty="no batch-1 corpus cells in this run")


def load_row(cell) -> list:
    phases = cell.load
    return [label(cell_label(cell)), *[num(fmt.num(p)) for p in (phases.imports_s, phases.create_s,
                                                                  phases.first_infer_s)], num(fmt.num(phases.total_s))]


def latency_table(run: RunResult) -> dict:
    cols = [column("Backend", False), column("n"), column("Mean ms [95% CI]"), column("P50 ms [95% CI]"),
            column("P95 ms [95% CI]"), column("P99 ms [95% CI]"), column("Stop", False)]
    rows = rows_for(batch1_corpus(run), latency_row, span=6)
    notes = ["Engine latency of one review per call (inputs pre-tokenised; no HTTP), pooled over the cell's worker "
             "processes. Brackets: 95 % confidence interval of the statistic from a hierarchical bootstrap "
             "(processes, then samples); see the between-process spread below."]
    return table("latency", "Latency per backend (batch 1, ≈80-character reviews)", cols, rows, notes,
                 empty="no batch-1 corpus cells in this run")


def latency_row(cell) -> list:
    s = cell.stats
    return [label(cell_label(cell)), num(str(s["n"])),
            *[num(fmt.ms_ci(s[k], s.get(f"{k}_ci95"))) for k in ("mean", "p50", "p95", "p99")],
            label(cell.stop_reason or "")]


def spread_table(run: RunResult) -> dict:
    cols = [column("Backend", False), column("Processes"), column("P50 ms of each process", False),
            column("Spread of the P50s (max / min − 1)")]
    rows = rows_for(batch1_corpus(run), spread_row, span=3)
    notes = ["Every CI in this report comes from a hierarchical bootstrap: worker processes are resampled first, "
             "then samples within each, so the spread between fresh processes is part of the interval. With one "
             "process the interval covers that process's noise only and is too narrow; rankings then are not "
             "claimed (run with --processes 2 or more)."]
    return table("spread", "Between-process spread (batch 1)", cols, rows, notes, empty="no batch-1 corpus cells")


def spread_row(cell) -> list:
    s = cell.stats
    spread = num(f"{s['process_spread'] * 100:+.1f} %") if s["processes"] > 1 else text("n/a (one process)")
    return [label(cell_label(cell)), num(str(s["processes"])), text(", ".join(fmt.ms(p) for p in s["process_p50s"])),
            spread]


def resources_table(run: RunResult) -> dict:
    cols = [column("Backend", False), column("Peak RSS MiB"), column("Peak USS MiB"),
            column("Peak VRAM MiB (per-process or device-wide)"), column("Mean CPU % (timed window)"),
            column("Mean CPU % (whole worker life, load included)"), column("Peak CPU % (whole life)"),
            column("Host CPU power W"), column("Host CPU J / 1,000 inferences"),
            column("Host CPU energy source", False), column("GPU board power W (NVML)"),
            column("GPU board J / 1,000 inferences (NVML)")]
    assumptions: list = []  # filled by resources_row: footnotes for estimated energy
    rows = rows_for(batch1_corpus(run), lambda cell: resources_row(cell, assumptions), span=11)
    cores = run.host.logical_cores or "?"
    notes = [f"CPU %: 100 % is one fully busy logical core; this host has {cores}, so {cores}00 % is all of it. "
             "The timed window is the measured loop only; the whole-life figure includes imports and loading.",
             "Energy in two columns, never one: a GPU cell's board energy comes from NVML's counter (the whole "
             "board, idle included, host CPU excluded), the host CPU's (every cell) from RAPL or an estimate. "
             "VRAM: per-process where NVML listed the worker's PID, else device-wide (the whole board: a "
             "container hides the PID), else torch's allocator peak.",
             "(est.): power and energy estimated, not read from a counter (see the energy source).",
             *[f"[{i}] {a} (figures vary per cell; each cell's own note is in results.json)"
               for i, a in enumerate(assumptions, 1)]]
    return table("resources", "Resources per backend (batch 1)", cols, rows, notes, empty="no batch-1 corpus cells")


def resources_row(cell, assumptions: list) -> list:
    r = cell.resources
    source = gpu.cpu_source_cell(cell)
    if not covers_gpu(cell.energy) and cell.energy.source:  # the cell's own estimate: its assumptions footnoted
        source = energy_source(cell.energy, assumptions)
    return [label(cell_label(cell)), num(fmt.mib(r.peak_rss_bytes)), num(fmt.mib(r.peak_uss_bytes)),
            gpu.vram_cell(cell),
            num(fmt.percent(cell.meta.worker_cpu_percent_window), "no CPU time over the timed window recorded"),
            num(fmt.percent(r.mean_cpu_percent)), num(fmt.percent(r.max_cpu_percent)), gpu.cpu_power_cell(cell),
            gpu.cpu_energy_cell(cell, 1000), source, gpu.gpu_power_cell(cell), gpu.gpu_energy_cell(cell, 1000)]


def energy_source(energy: Energy, assumptions: list) -> dict:
    """Measured or estimated, with a numbered footnote for each distinct set of estimate assumptions."""
    if energy.source is None:
        return na("no energy reading")
    label = ENERGY_SOURCES.get(energy.source, str(energy.source))
    note = energy.assumptions
    if energy.estimated and note:
        keys = [number_blind(a) for a in assumptions]
        if number_blind(note) not in keys:
            assumptions.append(note)
            keys.append(number_blind(note))
        label = f"{label} [{keys.index(number_blind(note)) + 1}]"
    return text(label)


def number_blind(note: str) -> str:
    """Estimate notes that differ only in per-cell figures (e.g. each worker's CPU seconds) share one footnote."""
    return re.sub(r"\d+(\.\d+)?", "#", note)


def parity_table(run: RunResult) -> dict:
    cols = [column("Variant", False), column("File MiB"), column("n"), column("Label agreement [95% CI]"),
            column("Max |Δ logit|"), column("Mean |Δ logit|"), column("Accuracy [95% CI]"),
            column("Δ accuracy vs FP32, points [95% CI]"), column("Gate", False)]
    synthetic = bool(run.model.synthetic)
    rows = [parity_row(name, v, synthetic) for name, v in run.model.variants.items()]
    notes = ["Against PyTorch FP32 on the same inputs; labels are 负面 (negative) / 正面 (positive). Agreement and "
             "accuracy intervals: Wilson; the accuracy change: a paired interval on the same texts."]
    quant = run.model.quantization
    if quant:
        notes.append(f"INT8: {quant.weight_type} weights, per-channel {quant.per_channel}, "
                     f"reduce_range {quant.reduce_range}. {quant.reason or ''}")
    return table("parity", "Parity of each variant vs PyTorch FP32", cols, rows, notes,
                 empty="the results file records no exported variants")


def accuracy_table(run: RunResult) -> dict | None:
    """A synthetic twin's labels mean nothing: each runtime × precision's accuracy on real labels comes from the
    trained twin, exported and gated the same way (None when the run has no such record)."""
    twin = run.model.trained_twin
    if not run.model.synthetic or not twin:
        return None
    cols = [column("Variant", False), column("File MiB"), column("n"), column("Label agreement [95% CI]"),
            column("Max |Δ logit|"), column("Mean |Δ logit|"), column("Accuracy [95% CI]"),
            column("Δ accuracy vs FP32, points [95% CI]"), column("Floor", False)]
    rows = [parity_row(name, v, False) for name, v in twin.variants.items()]
    drop = twin.max_accuracy_drop
    floor = f"at most {100 * drop:.1f} points below FP32" if drop is not None else "not set"
    notes = [f"The trained twin ({(twin.source.source if twin.source else None) or 'twin:trained'}): a small BERT "
             f"trained on the corpus's training split, every variant judged on {twin.texts} held-out reviews it never "
             f"saw. Accuracy floor: {floor}; variants below it are left out of the decision and the tune."]
    return table("accuracy", "Accuracy on real labels per runtime × precision (trained twin)", cols, rows, notes)


def parity_row(name: str, variant: VariantRecord, synthetic: bool) -> list:
    p = variant.parity or ParityRecord()
    size_bytes = variant.total_bytes
    size = num(fmt.num(size_bytes / 2**20)) if size_bytes else text("n/a (built at load time)")
    if p.label_agreement is None:
        why = p.not_measured or variant.not_built or "no parity figures"
        return [label(name), size, na(why, span=7)]
    accuracy_reason = "synthetic weights: labels are meaningless" if synthetic else "no labelled evaluation set"
    gate = {True: text("passed"), False: text("FAILED: " + "; ".join(p.failures))}.get(p.passed)
    delta = p.accuracy_delta
    delta_ci = [100 * x for x in p.accuracy_delta_ci or ()]
    return [label(name), size, num(str(p.n)), num(three_ci(p.label_agreement, p.agreement_ci)),
            num(fmt_e(p.max_abs_diff)), num(fmt_e(p.mean_abs_diff)),
            num(three_ci(p.accuracy, p.accuracy_ci), accuracy_reason),
            num(None if delta is None else f"{100 * delta:+.2f}{fmt.ci_suffix(delta_ci, lambda x: f'{x:+.2f}')}",
                accuracy_reason),
            gate or na(p.not_measured or "gate not run")]


def fmt_e(value: float | None) -> str | None:
    return None if value is None else f"{value:.2e}"


def three_ci(value: float | None, ci) -> str | None:
    """A fraction with three decimals and its interval, e.g. '0.941 [0.905–0.964]'."""
    return None if value is None else f"{value:.3f}{fmt.ci_suffix(ci, lambda x: f'{x:.3f}', missing='')}"


def peak_source(peak: PeakGemm) -> str:
    """Which engine and shape gave the peak, from the run's host.peak_gemm record."""
    engines = peak.by_engine
    if not engines:
        return "source not recorded"
    best = max(engines, key=engines.__getitem__)
    shapes = peak.shapes_of(best)
    shape = max(shapes, key=shapes.__getitem__) if shapes else f"{peak.size or '?'}²"
    others = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in engines.items() if k != best)
    return f"best: {best} at {shape}" + (f"; {others} GFLOP/s" if others else "")


def int8_peak_text(peak: PeakGemm) -> str | None:
    ops = peak.int8_peak_ops
    return f"{ops / 1e9:.1f} GOP/s ({peak.int8_kernel or 'INT8 GEMM'}); INT8 cells' roofline uses it" if ops else None


def bf16_peak_text(peak: PeakGemm) -> str | None:
    flops = peak.bf16_peak_flops
    return f"{flops / 1e9:.1f} GFLOP/s ({peak.bf16_kernel}); BF16 cells' roofline uses it" if flops else None


def plan_text(plan: dict | None) -> str | None:
    """The CPU's instruction sets and the CPU backends the default plan left out, with why."""
    if not plan:
        return None
    out = ", ".join(f"{name}: {why}" for name, why in (plan.get("left_out") or {}).items())
    return f"instruction sets {plan.get('isa')}; left out: {out or 'none'}"


def example_prices(options: dict) -> bool:
    """Whether the report prices anything at the built-in example prices (no host price, default flags)."""
    return not options.get("price_note") and bool(options.get("example_cpu") or options.get("example_gpu") or
                                                  options["cpu_hour_usd"] == EXAMPLE_PRICES["cpu"])


def power_text(power: CpuPower | None) -> str | None:
    """Governor, turbo, SMT and the clock at the start of the run (older runs: not recorded)."""
    if not power:
        return None
    mhz = f"{power.mhz_now} MHz at the start" if power.mhz_now else "clock not readable"
    return f"governor {power.governor}, turbo {power.turbo}, SMT {power.smt}, {mhz}"


def environment(run: RunResult, options: dict) -> list[dict]:
    """Label/value pairs: versions, threads, stop rule, statistics methods, and the report's own inputs."""
    host, config = run.host, run.config
    record = host.peak_gemm or PeakGemm()
    peak = record.peak_flops or run.peak_gemm_flops
    threads = ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in host.thread_env.items())
    pairs = [("Python", host.python), ("Platform", host.platform), *host.libraries.items(),
             ("Thread settings", threads),
             ("Cores", f"{host.logical_cores or '?'} logical, {host.physical_cores or '?'} physical"),
             ("CPU speed settings", power_text(host.cpu_power)),
             ("Peak GEMM", f"{peak / 1e9:.1f} GFLOP/s (float32; {peak_source(record)})" if peak else None),
             ("Peak INT8 GEMM", int8_peak_text(record)), ("Peak BF16 GEMM", bf16_peak_text(record)),
             ("CPU plan", plan_text(config.get("plan"))), *gpu.gpu_stack(run),
             ("Stop rule", ", ".join(f"{k}={v}" for k, v in (config.get("stop_rule") or {}).items())),
             *[(f"Method: {k}", v) for k, v in (config.get("method") or {}).items()],
             ("Profile", config.get("profile")), ("Seed", config.get("seed")),
             ("Report SLO", f"P95 ≤ {options['slo_p95_ms']:g} ms"),
             ("Prices (inputs, not measured)", options.get("price_note") or
              f"CPU ${options['cpu_hour_usd']:.2f}/h, GPU ${options['gpu_hour_usd']:.2f}/h"),
             ("Example prices", EXAMPLE_SOURCE if example_prices(options) else None),
             ("GPU example price", options.get("example_gpu") if run.host.gpu_name else None)]
    return [{"label": k, "value": "not recorded" if v in (None, "") else str(v)} for k, v in pairs
            if k not in ("Example prices", "GPU example price") or v]
