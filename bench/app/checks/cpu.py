"""`check cpu`: the best CPU engine this CPU's instruction sets plan against ONNX Runtime's dynamic INT8 (batch 1
P50 and batch 8 items/s, every cell in fresh processes, interleaved, ratios with a t interval across the rounds),
each engine against its vendor's own benchmark tool on the same file, shape, threads and settings (OpenVINO's
benchmark_app, ONNX Runtime's bert_perf_test), and the accuracy each runtime × precision keeps on real labels
(the trained twin's held-out reviews)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import backends
from bench.app.checks.common import cells_json, measure_cell, prepare_model, save, verdict
from bench.core.errors import BenchError
from bench.core.records import CellResult, CellSpec
from bench.core.signature import read_signature
from bench.measure.isa import CpuIsa, left_out
from bench.model import artifacts

REFERENCE = "ort-int8-cpu"
# Targets on a CPU with AMX (the issue's): the best engine's batch-1 P50 at most 0.75 × ORT INT8's, its batch-8
# items/s at least 1.7 × ORT INT8's. Without AMX they are printed, not judged.
TARGET_P50_RATIO, TARGET_ITEMS_RATIO = 0.75, 1.7
VENDOR_TOLERANCE = 0.10  # our cell within ±10 % of the vendor's tool on the same file and settings
VENDOR_TOKENS = 80  # the vendor tools feed a fixed shape: ours is measured at the same one (a bucket cell)
CONTENDER_PRECISIONS = ("int8", "bf16")


@dataclass(frozen=True)
class Race:
    """Per-round (fresh process) figures of every contender at batch 1 (P50 s) and batch 8 (items/s)."""

    p50_b1: dict[str, list[float]] = field(default_factory=dict)
    items_b8: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def best(self, figures: dict[str, list[float]], lower: bool) -> str | None:
        others = {k: np.mean(v) for k, v in figures.items() if k != REFERENCE and v}
        return (min if lower else max)(others, key=others.get) if others else None


@dataclass(frozen=True)
class Ratio:
    """best / reference per round, with a t interval across the rounds (on logs: a ratio is multiplicative)."""

    best: str
    value: float
    ci: tuple[float, float]
    rounds: int

    @classmethod
    def of(cls, best: str, mine: list[float], ref: list[float]) -> "Ratio":
        from scipy import stats as sps

        logs = np.log(np.asarray(mine) / np.asarray(ref))
        k = len(logs)
        half = sps.t.ppf(0.975, k - 1) * logs.std(ddof=1) / math.sqrt(k) if k > 1 else float("inf")
        return cls(best, float(np.exp(logs.mean())), (float(np.exp(logs.mean() - half)),
                                                       float(np.exp(logs.mean() + half))), k)

    def text(self) -> str:
        return f"{self.value:.3f} [95% CI {self.ci[0]:.3f}–{self.ci[1]:.3f}] over {self.rounds} rounds"


def contenders(isa: CpuIsa) -> tuple[str, ...]:
    """ORT INT8 and every INT8 / BF16 CPU engine the default plan keeps at batch 1 on this CPU."""
    keep = [n for n in backends.CPU_BACKENDS if backends.resolve(n).precision in CONTENDER_PRECISIONS
            and not left_out(n, isa)]
    return tuple(dict.fromkeys([REFERENCE, *keep]))


def per_process(cell: CellResult) -> tuple[list[float], list[float]]:
    """Each fresh process's P50 (s) and items/s."""
    p50s = [float(np.median(r.latencies_s)) for r in cell.runs]
    items = [len(r.latencies_s) * cell.spec.batch / r.window_s for r in cell.runs]
    return p50s, items


def race(model: str, names: tuple[str, ...], model_dir: Path, onnx_dir: Path, processes: int) -> tuple[Race, dict]:
    """Every contender at batch 1 and 8 in `processes` fresh workers each, round-robin (interleaved)."""
    from bench.engine.harness import RunConfig, measure_cells

    cfg = RunConfig(model=model, backends=names, batches=(1, 8), processes=processes)
    cells = measure_cells(cfg, (), model_dir, onnx_dir, on_cell=lambda _c: None)
    out = Race()
    for cell in cells.values():
        if cell.status != "ok":
            out.skipped[cell.spec.key] = cell.reason or cell.status
            continue
        p50s, items = per_process(cell)
        (out.p50_b1 if cell.spec.batch == 1 else out.items_b8)[cell.spec.backend] = p50s if cell.spec.batch == 1 \
            else items
    return out, cells


def vendor_command(name: str, path: Path, threads: int, out_dir: Path, inputs: tuple[str, ...]) -> list[str]:
    """The vendor tool's command for `name` on `path` at batch 1 × VENDOR_TOKENS, our threads and settings."""
    spec = backends.resolve(name)
    if spec.engine == "ov":
        from bench.backends.ov_backend import compile_settings

        config = out_dir / f"{name}.json"
        config.write_text(json.dumps({"CPU": {k: str(v) for k, v in
                                              compile_settings(spec.precision, threads, {}).items()}}))
        shape = ",".join(f"{i}[1,{VENDOR_TOKENS}]" for i in inputs)
        # -data_shape feeds that shape to the model as exported (dynamic); -shape would reshape it to a static
        # graph, which OpenVINO compiles into faster code than the dynamic one our cells run
        return [str(Path(sys.executable).with_name("benchmark_app")), "-m", str(path), "-d", "CPU", "-api", "sync",
                "-load_config", str(config), "-t", "8", "-data_shape", shape]
    return [sys.executable, "-m", "onnxruntime.transformers.bert_perf_test", "--model", str(path), "-b", "1",
            "-s", str(VENDOR_TOKENS), "--samples", "20", "-t", "15", "-n", str(threads), "--mask_type", "2"]


def vendor_ms(name: str, path: Path, threads: int, inputs: tuple[str, ...]) -> tuple[float, str]:
    """(milliseconds, which statistic) the vendor's tool reports: benchmark_app's median, bert_perf_test's mean.
    bert_perf_test writes its summary beside the model: it gets a copy in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / path.name
        target.symlink_to(path)
        weights = path.with_suffix(".bin")
        if weights.exists():
            target.with_suffix(".bin").symlink_to(weights)
        out = subprocess.run(vendor_command(name, target, threads, Path(tmp), inputs), capture_output=True, text=True,
                             timeout=300)
    text = out.stdout + out.stderr
    found = re.search(r"Median:\s*([\d.]+) ms", text) or re.search(r"Average latency = ([\d.]+) ms", text)
    if out.returncode != 0 or not found:
        raise BenchError(f"the vendor tool for {name} failed (exit {out.returncode}): {text.strip()[-300:]}")
    return float(found.group(1)), "median" if "Median" in found.group(0) else "mean"


def vendor_agreement(names: tuple[str, ...], model_dir: Path, onnx_dir: Path, threads: int) -> dict:
    """Ours, the vendor's, the vendor's, ours (A B B A) per engine on the same file and shape, each a fresh
    process: a process's own speed varies on this host, so each side is the mean of two; vendor / ours."""
    rows = {}
    for name in names:
        b = backends.resolve(name)
        path = artifacts.model_file(onnx_dir, b.engine, b.precision, b.device)
        spec = CellSpec(name, 1, "bucket", VENDOR_TOKENS, threads)
        ours = [measure_cell(spec, model_dir, onnx_dir)]
        vendor = [vendor_ms(name, path, threads, read_signature(model_dir).inputs) for _ in range(2)]
        ours.append(measure_cell(spec, model_dir, onnx_dir))
        stat = vendor[0][1]
        mine = [c.stats["p50" if stat == "median" else "mean"] * 1000 for c in ours]
        theirs = [ms for ms, _ in vendor]
        rows[name] = {"ours_ms": float(np.mean(mine)), "vendor_ms": float(np.mean(theirs)), "statistic": stat,
                      "ours_runs_ms": mine, "vendor_runs_ms": theirs, "ratio": float(np.mean(theirs) / np.mean(mine)),
                      "tool": "benchmark_app" if b.engine == "ov" else "bert_perf_test"}
    return rows


def trained_accuracy() -> dict:
    """The trained twin's accuracy per runtime × precision (bench.app.pipeline.trained_twin_accuracy)."""
    from bench.app.pipeline import trained_twin_accuracy
    from exporters.parity import DEFAULT_MAX_ACCURACY_DROP

    block = trained_twin_accuracy(DEFAULT_MAX_ACCURACY_DROP)
    return {name: asdict(v.parity) for name, v in block.variants.items() if v.parity}  # check.json's own dicts


def check_cpu(model: str = "twin", processes: int = 3) -> int:
    from bench.measure.host import available_cores

    isa, threads = CpuIsa.here(), len(available_cores())
    print(f"CPU: {isa.describe()}; AMX: {'yes' if isa.amx else 'no'}")
    model_dir, onnx_dir, what = prepare_model(model)
    names = contenders(isa)
    result, cells = race(model, names, model_dir, onnx_dir, processes)
    ratios = ratios_of(result)
    vendors = vendor_agreement(tuple(n for n in names if backends.resolve(n).engine in ("ov", "ort")), model_dir,
                               onnx_dir, threads)
    accuracy = trained_accuracy()
    print_cpu(result, ratios, vendors, accuracy, isa)
    figures = {"isa": isa.describe(), "amx": isa.amx, "contenders": names, "race": asdict(result),
               "ratios": {k: asdict(v) for k, v in ratios.items() if v}, "vendors": vendors, "accuracy": accuracy}
    print(f"saved: {save('cpu', what, figures, cells=cells_json(cells))}")
    if len(names) == 1:
        print(f"this CPU ({isa.describe()}) plans no engine beside {REFERENCE}: it is the best CPU engine here")
    return verdict(cpu_misses(ratios, vendors, accuracy, isa, alone=len(names) == 1))


def ratios_of(result: Race) -> dict[str, Ratio | None]:
    b1 = result.best(result.p50_b1, lower=True)
    b8 = result.best(result.items_b8, lower=False)
    have = REFERENCE in result.p50_b1 and REFERENCE in result.items_b8
    return {"p50_b1": Ratio.of(b1, result.p50_b1[b1], result.p50_b1[REFERENCE]) if b1 and have else None,
            "items_b8": Ratio.of(b8, result.items_b8[b8], result.items_b8[REFERENCE]) if b8 and have else None}


def cpu_misses(ratios: dict, vendors: dict, accuracy: dict, isa: CpuIsa, alone: bool = False) -> list[str]:
    """The targets missed; `alone`: this CPU plans no engine beside ORT INT8 (nothing to race: no speed target)."""
    misses = [f"{name}: {row['tool']} {row['vendor_ms']:.1f} ms vs ours {row['ours_ms']:.1f} ms "
              f"(ratio {row['ratio']:.3f}, outside ±{VENDOR_TOLERANCE:.0%})"
              for name, row in vendors.items() if abs(row["ratio"] - 1) > VENDOR_TOLERANCE]
    misses += [f"accuracy floor: {name} {', '.join(p.get('failures', []))}" for name, p in accuracy.items()
               if p.get("passed") is False]
    if alone:
        return misses
    if not (ratios["p50_b1"] and ratios["items_b8"]):
        return misses + ["the race measured no contender beside ORT INT8 at batch 1 and 8"]
    if isa.amx:
        p, i = ratios["p50_b1"], ratios["items_b8"]
        misses += [f"best P50 ratio {p.value:.3f} > {TARGET_P50_RATIO}"] if p.value > TARGET_P50_RATIO else []
        misses += [f"best items/s ratio {i.value:.3f} < {TARGET_ITEMS_RATIO}"] if i.value < TARGET_ITEMS_RATIO else []
    return misses


def print_cpu(result: Race, ratios: dict, vendors: dict, accuracy: dict, isa: CpuIsa) -> None:
    ms = lambda xs: " | ".join(f"{x * 1000:.1f}" for x in xs)  # noqa: E731
    for name, xs in result.p50_b1.items():
        print(f"  {name:<15} b1 P50 per process {ms(xs)} ms;  b8 items/s per process "
              f"{' | '.join(f'{x:.2f}' for x in result.items_b8.get(name, []))}")
    for key, why in result.skipped.items():
        print(f"  {key}: not measured ({why})")
    judged = "" if isa.amx else " — not judged: this CPU has no AMX (the targets are set for AMX hosts)"
    if ratios["p50_b1"]:
        print(f"fastest batch-1 engine beside ORT INT8, {ratios['p50_b1'].best}: "
              f"P50 / ORT INT8's = {ratios['p50_b1'].text()}  "
              f"(target <= {TARGET_P50_RATIO}{judged})")
    if ratios["items_b8"]:
        print(f"fastest batch-8 engine beside ORT INT8, {ratios['items_b8'].best}: "
              f"items/s / ORT INT8's = {ratios['items_b8'].text()}  "
              f"(target >= {TARGET_ITEMS_RATIO}{judged})")
    for name, row in vendors.items():
        runs = lambda xs: " | ".join(f"{x:.1f}" for x in xs)  # noqa: E731
        print(f"  {name:<15} ours {row['ours_ms']:.1f} ms ({runs(row['ours_runs_ms'])}) vs {row['tool']} "
              f"{row['vendor_ms']:.1f} ms ({runs(row['vendor_runs_ms'])}) ({row['statistic']}, b1 × {VENDOR_TOKENS} "
              f"tokens): ratio {row['ratio']:.3f}  (target within ±{VENDOR_TOLERANCE:.0%})")
    print_accuracy(accuracy)


def print_accuracy(accuracy: dict) -> None:
    """One line per variant: agreement with FP32, max |Δlogit|, accuracy and its change, each with its CI."""
    ci = lambda c: f"[{c[0]:.3f}–{c[1]:.3f}]" if c else "[no CI]"  # noqa: E731
    for name, p in accuracy.items():
        if "label_agreement" not in p:
            print(f"  accuracy {name:<11} not measured: {p.get('not_measured')}")
            continue
        acc = (f"accuracy {p['accuracy']:.3f} {ci(p.get('accuracy_ci'))}, Δ vs FP32 "
               f"{100 * p['accuracy_delta']:+.1f} points {ci([100 * x for x in p['accuracy_delta_ci']])}"
               if p.get("accuracy_delta") is not None else "accuracy not measured (synthetic labels)")
        print(f"  accuracy {name:<11} n={p['n']} agree {p['label_agreement']:.3f} {ci(p.get('agreement_ci'))} "
              f"max|Δlogit| {p['max_abs_diff']:.3g}; {acc}; {'ok' if p['passed'] else 'FAILED'}")
