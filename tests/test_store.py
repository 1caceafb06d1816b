"""The results store (bench.core.store): tidy Parquet tables per run, read across runs and hosts.

Three runs from two hosts, made from the saved runs in tests/data: two of the AMD host, and a renamed copy of one
whose results.json now says another host (Xeon + T4), with a GPU service configuration, an SLO search and a tune.
The two questions the store is for are answered by a few lines of pandas, and agree with the report."""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from bench.core import store
from bench.core.errors import BenchError
from bench.core.results import load_run, save_run
from bench.core.search_records import SearchProbe, SloSearch, TuneCandidate, TuneRecord
from tests.conftest import run_cli

DATA = Path(__file__).parent / "data"
XEON = {"cpu_model": "Intel(R) Xeon(R) Platinum 8375C CPU", "logical_cores": 8, "gpu_name": "NVIDIA T4"}
AMD_LABEL, XEON_LABEL = "AMD EPYC 2c", "Intel Xeon Platinum 8375C 8c + NVIDIA T4"
RUNS = ("tinyq", "tinyq-test-loadtests", "xeon-copy")
SLO_MS, TRAFFIC = 300.0, 500.0


def three_runs(root: Path) -> Path:
    """root/results holding three runs from two hosts, without stores; returns the results folder."""
    results = root / "results"
    for name, source in zip(RUNS, ("report_run.json", "report_run_loadtests.json")):
        (results / name).mkdir(parents=True)
        shutil.copy(DATA / source, results / name / "results.json")
    copy = results / "xeon-copy"
    shutil.copytree(results / "tinyq-test-loadtests", copy)  # renamed: its results.json keeps the old run id
    data = json.loads((copy / "results.json").read_text())
    data["host"].update(XEON)
    data["created"] = "2026-12-01T09:30:00+0100"
    for cell in data["cells"]:
        if cell["spec"]["backend"] == "ort-int8-cpu":  # a faster host: every latency halved
            cell["latencies_s"] = [x / 2 for x in cell["latencies_s"]]
            cell["window_s"] = cell["window_s"] / 2
    for level in data["loadtests"]:
        if level["config"]["label"] == "fp32 fused, no batching":
            level["config"].update(label="gpu fp16", backend="ort-fp16-cuda")
    (copy / "results.json").write_text(json.dumps(data))
    run = load_run(copy)
    save_run(replace(run, slo_searches=(searched(run),), tune=tuned()), copy)
    return results


def searched(run) -> SloSearch:
    setup = next(lv.config for lv in run.loadtests if lv.config.label == "int8 batching")
    probes = (SearchProbe(400.0, True, "meets the SLO", requests=800, achieved_rps=398.0, p95_ms=90.0),
              SearchProbe(620.0, True, "meets the SLO", requests=1240, achieved_rps=610.0, achieved_ci=(590.0, 630.0),
                          p95_ms=210.0),
              SearchProbe(700.0, False, "tail bound", requests=1400, over_slo=200, achieved_rps=650.0, p95_ms=480.0))
    return SloSearch(setup, SLO_MS, rate_rps=620.0, qps=610.0, qps_ci=(590.0, 630.0), first_failing_rps=700.0,
                     requests=1240, probes=probes, stopped="converged")


def tuned() -> TuneRecord:
    best = TuneCandidate(2, 4, 8, items_per_s=900.0, items_ci=(880.0, 920.0), p95_ms=9.0, rss_mb=700.0,
                         service_qps=700.0, service_qps_ci=(680.0, 720.0), backend="ort-int8-cpu")
    other = TuneCandidate(1, 8, 1, items_per_s=500.0, items_ci=(490.0, 510.0), p95_ms=4.0, rss_mb=350.0,
                          backend="ort-int8-cpu")
    return TuneRecord("ort-int8-cpu", 8, (best, other), recommended=best.label, pareto=(best.label,), users=32)


def three_stored_runs(parent: Path) -> Path:
    """The three runs, each with its store written as the pipeline writes it."""
    folder = three_runs(parent)
    for name in RUNS:
        store.write_store(load_run(folder / name), folder / name)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """three_stored_runs once for the module: statistics take a while."""
    return three_stored_runs(tmp_path_factory.mktemp("store"))


@pytest.fixture
def results(built, tmp_path) -> Path:
    """A copy of them, for the test to change."""
    return Path(shutil.copytree(built, tmp_path / "results"))


def cheapest_at(tables: dict, traffic: float, slo_ms: float) -> pd.DataFrame:
    """Every service configuration's monthly cost at `traffic`, cheapest first: capacity per instance is the
    searched QPS at the SLO where there is one, else the best load level within it; priced as reports.plan prices
    it (the run's own price, else reports.hosts' example price per CPU or GPU hour)."""
    from reports.hosts import EXAMPLE_PRICES, EXAMPLE_VCPUS
    from reports.plan import PlanInputs, PlanRow

    cols = ["run_id", "host_label", "config", "on_gpu", "qps"]
    lv, pr = tables["levels"], tables["probes"]
    grid = lv[(lv.status == "ok") & (lv.p95_ms <= slo_ms) & (lv.failures == 0) & (lv.invalid_answers == 0)]
    grid = grid.sort_values("qps").groupby(["run_id", "config"]).tail(1)[cols]
    found = pr[(pr.search_status == "ok") & (pr.slo_ms == slo_ms) & (pr.percentile == 95)]
    found = found.drop_duplicates(["run_id", "config"]).rename(columns={"search_qps": "qps"})[cols]
    cap = pd.concat([found, grid]).drop_duplicates(["run_id", "config"])  # searched first, as the plan prefers
    cap = cap.merge(tables["runs"][["run_id", "logical_cores", "hour_usd"]], on="run_id")
    example = (EXAMPLE_PRICES["cpu"] * cap.logical_cores / EXAMPLE_VCPUS).where(~cap.on_gpu, EXAMPLE_PRICES["gpu"])
    cap["usd_per_hour"] = cap.hour_usd.fillna(example)
    plan = PlanInputs(traffic)
    rows = [PlanRow(r.config, r.config, r.host_label, "GPU" if r.on_gpu else "CPU", float(r.usd_per_hour), "", "",
                    float(r.qps)) for r in cap.itertuples()]
    return cap.assign(instances=[r.instances(plan, traffic) for r in rows],
                      usd_per_month=[r.monthly_usd(plan, traffic) for r in rows]).sort_values("usd_per_month")


def p50_by_host(tables: dict, backend: str = "ort-int8-cpu") -> pd.DataFrame:
    c = tables["cells"]
    c = c[(c.backend == backend) & (c.batch == 1) & (c.workload == "corpus") & (c.status == "ok")]
    return c.groupby("host_label").agg(runs=("run_id", "nunique"), p50_ms=("p50_ms", "median"),
                                       p50_lo_ms=("p50_lo_ms", "min"), p50_hi_ms=("p50_hi_ms", "max"))


@pytest.mark.e2e
def test_cheapest_configuration_at_500_rps(results):
    answer = cheapest_at(store.read_store([results]), TRAFFIC, SLO_MS)
    best = answer.iloc[0]
    assert (best.run_id, best.host_label, best.config) == ("tinyq-test-loadtests", AMD_LABEL, "int8 batching")
    assert best.qps == 520.0 and best.instances == 1 and best.usd_per_month == pytest.approx(0.10 * 730)
    xeon = answer[answer.run_id == "xeon-copy"].set_index("config")
    assert xeon.loc["int8 batching", "qps"] == 610.0  # the searched figure, not the grid's 520
    assert xeon.loc["int8 batching", "usd_per_hour"] == pytest.approx(0.40)  # 8 vCPUs at the 2-vCPU example
    assert xeon.loc["gpu fp16", ["instances", "usd_per_hour"]].tolist() == [2, 0.53]


@pytest.mark.e2e
def test_the_cheapest_query_agrees_with_the_reports_capacity_plan(results):
    from reports.render import ReportOptions, build_context

    answer = cheapest_at(store.read_store([results]), TRAFFIC, SLO_MS).set_index(["run_id", "config"])
    for name in ("tinyq-test-loadtests", "xeon-copy"):
        plan = build_context(load_run(results / name), ReportOptions(traffic_rps=TRAFFIC, slo_p95_ms=SLO_MS))["plan"]
        served = [r for r in plan["rows"] if r["capacity"] and r["basis"] != "engine-only, not load-tested"]
        assert served
        for row in served:
            mine = answer.loc[(name, row["config"])]
            assert (mine.qps, mine.usd_per_hour) == (pytest.approx(row["capacity"]), pytest.approx(row["hour_usd"]))


def test_p50_of_ort_int8_cpu_by_host(results):
    by_host = p50_by_host(store.read_store([results]))
    assert by_host.runs.to_dict() == {AMD_LABEL: 2, XEON_LABEL: 1}
    amd = load_run(results / "tinyq").cell("ort-int8-cpu|b1|corpus|tall").stats["p50"] * 1000
    assert by_host.loc[AMD_LABEL, "p50_ms"] == pytest.approx(amd, abs=1e-3)
    assert by_host.loc[XEON_LABEL, "p50_ms"] == pytest.approx(amd / 2, abs=1e-3)


def test_duckdb_reads_the_parquet_files_directly(results):
    cells = pd.concat(pd.read_parquet(results / name / "store" / "cells.parquet") for name in RUNS)
    assert set(cells.host_label) == {AMD_LABEL, XEON_LABEL}  # pandas reads them without bench
    if importlib.util.find_spec("duckdb") is None:
        return  # optional: the SQL below runs where duckdb is installed
    import duckdb

    rows = duckdb.sql(f"""SELECT host_label, median(p50_ms) AS p50_ms, count(DISTINCT run_id) AS runs
                         FROM read_parquet('{results}/*/store/cells.parquet', union_by_name = true)
                         WHERE backend = 'ort-int8-cpu' AND batch = 1 AND workload = 'corpus' AND status = 'ok'
                         GROUP BY host_label ORDER BY host_label""").fetchall()
    assert [(h, n) for h, _, n in rows] == [(AMD_LABEL, 2), (XEON_LABEL, 1)]
    assert rows[1][1] == pytest.approx(rows[0][1] / 2, abs=1e-3)


def test_every_table_has_one_row_per_record_and_the_runs_identity(results):
    tables = store.read_store([results])
    xeon = load_run(results / "xeon-copy")
    assert len(tables["runs"]) == 3 and len(tables["cells"]) == 3 * len(xeon.cells)
    assert len(tables["levels"]) == 2 * len(xeon.loadtests)
    assert len(tables["probes"]) == 3 and len(tables["tune"]) == 2
    for name, table in tables.items():
        assert list(table.columns) == list(store.SCHEMAS[name]), name
        assert table[list(store.IDENTITY)].drop(columns=["gpu_name", "commit"]).notna().all().all(), name
    probes = tables["probes"]
    assert probes.found.tolist() == [False, True, False] and probes.passed.tolist() == [True, True, False]
    assert set(probes.search_qps) == {610.0} and probes.step.tolist() == [0, 1, 2]
    tune = tables["tune"].set_index("label")
    assert tune.recommended.tolist() == [True, False] and tune.loc["ort-int8-cpu 2×4t b8", "service_qps_lo"] == 680.0
    gpu = tables["levels"].query("config == 'gpu fp16'")
    assert gpu.on_gpu.all() and set(gpu.device) == {"cuda"} and set(gpu.host_label) == {XEON_LABEL}


def test_host_label_is_the_reports_label_or_the_runs_own(results):
    from reports.hosts import host_label

    for name in RUNS:
        run = load_run(results / name)
        assert store.host_label(run) == host_label(run)
    run = load_run(results / "tinyq")
    assert store.host_label(replace(run, config={**run.config, "host_label": "lab box 3"})) == "lab box 3"


def test_cell_figures_are_summary_csvs_and_the_reports(results):
    from bench.core.summary import summary_row
    from reports.common import throughput_ci

    run = load_run(results / "tinyq")
    cells = store.tables(run)["cells"].set_index("key")
    for cell in (c for c in run.cells if c.status == "ok"):
        row, mine = summary_row(cell), cells.loc[cell.spec.key]
        assert (mine.p50_ms, mine.p50_lo_ms, mine.p95_hi_ms) == (row["p50_ms"], row["p50_ci_lo_ms"],
                                                                  row["p95_ci_hi_ms"])
        assert (mine.items_lo, mine.items_hi) == pytest.approx(throughput_ci(cell))
    skipped = cells[cells.status == "skipped"]
    assert skipped.p50_ms.isna().all() and skipped.reason.notna().all()


def test_write_store_is_parquet_with_typed_columns_and_no_temp_files(results):
    folder = results / "tinyq"
    written = sorted(p.name for p in (folder / "store").iterdir())
    assert written == sorted(f"{name}.parquet" for name in store.TABLES)  # no .tmp left behind
    built = store.tables(load_run(folder), run_id="tinyq", source_sha256=store.digest(folder / "results.json"))
    for name in store.TABLES:
        read = pd.read_parquet(folder / "store" / f"{name}.parquet").astype(store.SCHEMAS[name])
        pd.testing.assert_frame_equal(read, built[name], check_exact=False)
    assert pd.read_parquet(folder / "store" / "levels.parquet").empty  # an empty table keeps its columns
    assert list(pd.read_parquet(folder / "store" / "levels.parquet").columns) == list(store.SCHEMAS["levels"])


def test_a_run_without_a_store_is_rebuilt_from_its_results_json(results):
    with_store = store.read_store([results])
    shutil.rmtree(results / "tinyq" / "store")  # an older run: results.json only
    rebuilt = store.read_store([results])
    for name in store.TABLES:
        pd.testing.assert_frame_equal(rebuilt[name], with_store[name], check_exact=False)
    assert not (results / "tinyq" / "store").exists()  # reading never writes


def test_a_store_built_from_another_results_json_is_rebuilt(results):
    data = json.loads((results / "tinyq" / "results.json").read_text())
    data["host"]["cpu_model"] = "AMD EPYC 9654"  # results.json changed after its store was written
    (results / "tinyq" / "results.json").write_text(json.dumps(data))
    runs = store.read_store([results / "tinyq"])["runs"]
    assert runs.cpu_model.tolist() == ["AMD EPYC 9654"]


def test_a_renamed_copy_of_a_run_folder_is_its_own_run(results):
    shutil.copytree(results / "tinyq", results / "tinyq-again")  # store and all
    runs = store.read_store([results])["runs"].set_index("run_id")
    assert runs.loc["tinyq-again", "stored_run_id"] == "tinyq" and len(runs) == 4
    cells = store.read_store([results / "tinyq-again"])["cells"]
    assert set(cells.run_id) == {"tinyq-again"}


def test_read_store_takes_folders_results_files_parents_and_globs(results):
    ids = lambda paths: sorted(store.read_store(paths)["runs"].run_id)  # noqa: E731
    assert ids([results]) == sorted(RUNS)
    assert ids([results / "tinyq", results / "xeon-copy" / "results.json"]) == ["tinyq", "xeon-copy"]
    assert ids([Path(f"{results}/tinyq*")]) == ["tinyq", "tinyq-test-loadtests"]
    assert ids([results, results / "tinyq"]) == sorted(RUNS)  # each run once
    assert ids([DATA / "report_run.json"]) == ["tinyq"]  # a results file of another name: its own run id
    for bad in ([results / "missing"], [Path(f"{results}/nothing*")], [results / "tinyq" / "store"]):
        with pytest.raises(BenchError, match="no runs"):
            store.read_store(bad)


def test_update_store_failing_keeps_results_json(results, monkeypatch, capsys):
    from bench.app import pipeline

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "write_store", full_disk)
    folder = results / "fresh"
    folder.mkdir()
    run = replace(load_run(results / "tinyq"), run_id="fresh")
    ctx = pipeline.RunContext(folder, run, folder, None).update(lambda _: run)
    assert load_run(folder).run_id == "fresh" and ctx.result is run
    assert not (folder / "store").exists() and "store not written (OSError" in capsys.readouterr().err
    assert store.read_store([folder])["runs"].run_id.tolist() == ["fresh"]  # rebuilt from results.json


def test_the_pipeline_writes_the_store_with_results_json(tmp_path):
    from bench.app import pipeline

    run = load_run(DATA / "report_run_loadtests.json")
    pipeline.RunContext(tmp_path, run, tmp_path, None).update(lambda _: run)
    stored = store.stored_tables(tmp_path)
    assert stored is not None and len(stored["levels"]) == len(run.loadtests)
    assert stored["runs"].source_sha256.iloc[0] == store.digest(tmp_path / "results.json")


def bench_runs(capsys, *args: str) -> tuple[int, str, str]:
    from bench.app.cli import main

    code = main(["runs", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bench_runs_lists_runs_across_hosts(results):
    result = run_cli("runs", env={"STRUCTBENCH_HOME": str(results.parent)}, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["run_id", "created", "host_label"] and len(lines) == 4
    listed = {line.split()[0]: line for line in lines[1:]}
    assert set(listed) == set(RUNS) and XEON_LABEL in listed["xeon-copy"]
    assert "7/14" in listed["tinyq"] and "2026-12-01 08:30" in listed["xeon-copy"]  # created, in UTC
    assert "520.0" in listed["tinyq-test-loadtests"] and "ca9e54448e-dirty" in listed["tinyq"]


def test_bench_runs_filters_by_host_backend_and_date(results, capsys):
    def listed(*args: str) -> list[str]:
        code, out, _ = bench_runs(capsys, str(results), *args)
        assert code == 0
        return sorted(line.split()[0] for line in out.splitlines()[1:])

    assert listed("--host", "xeon t4") == ["xeon-copy"]
    assert listed("--host", "epyc") == ["tinyq", "tinyq-test-loadtests"]
    assert listed("--backend", "ort-fp16-cuda") == ["xeon-copy"]
    assert listed("--backend", "ort-fp32-fused-cpu") == sorted(RUNS)  # engine cells count as measured
    assert listed("--since", "2026-11-30") == ["xeon-copy"]
    code, out, _ = bench_runs(capsys, str(results), "--host", "graviton")
    assert code == 0 and out.strip() == "no runs match"


def test_bench_runs_prints_a_table_of_the_matching_rows(results, capsys):
    code, out, _ = bench_runs(capsys, str(results), "--table", "levels", "--backend", "ort-fp16-cuda")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 + 4 and all("xeon-copy" in line for line in lines[1:])
    code, out, _ = bench_runs(capsys, str(results / "xeon-copy"), "--table", "probes")
    assert code == 0 and len(out.splitlines()) == 1 + 3 and "tail bound" in out


@pytest.mark.parametrize("args,message", [
    (["{results}/missing"], "error: no runs at "),
    (["{results}", "--since", "last week"], "error: --since needs a date YYYY-MM-DD, got 'last week'"),
    (["{results}", "--backend", "fast"], "error: backend 'fast' must look like ENGINE-PRECISION[-DEVICE]"),
])
def test_bench_runs_bad_input_is_one_error_line_and_exit_2(results, capsys, args, message):
    code, out, err = bench_runs(capsys, *(a.format(results=results) for a in args))
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1


def test_bench_runs_without_any_run_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STRUCTBENCH_HOME", str(tmp_path))
    code, _, err = bench_runs(capsys)
    assert code == 2 and err.startswith(f"error: no runs at {tmp_path / 'results'}")
