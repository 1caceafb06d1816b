"""The harness: fresh workers, failures as cells, schema, grid validation, GPU cells skipped with reasons."""


from dataclasses import replace

import pytest

from bench.core.errors import ConfigError
from bench.core.results import CellSpec
from bench.core.stats import StopRule
from bench.engine.harness import RunConfig, build_grid, measure_cells
from bench.engine.runner import WorkerLimits, WorkerRequest, run_cell
from tests.conftest import run_cli

FAST_STOP = StopRule(min_iters=10, min_time_s=0.3, max_time_s=1.5, target_rel_halfwidth=0.2)


def request(model_dir, backend="fake-fp32-cpu", batch=1, **options):
    return WorkerRequest(CellSpec(backend, batch), str(model_dir), stop=FAST_STOP, options=options)


def test_fake_backend_latency_matches_its_sleep(tiny_model):
    cell = run_cell(request(tiny_model, sleep_s=0.02), WorkerLimits(timeout_s=60))
    assert cell.status == "ok", cell.reason
    ratio = cell.stats["p50"] / 0.02
    assert 1.0 <= ratio < 1.5, ratio
    load = cell.runs[0].load
    assert all(x is not None and x >= 0 for x in (load.imports_s, load.create_s, load.first_infer_s))
    assert len(cell.runs[0].warmup_s) == 3 and cell.stop_reason in ("ci-target-met", "time-cap", "iteration-cap")
    # throughput is measured over the window: close to 1/latency for a batch-1 sleeping backend
    assert 0.7 < cell.throughput * cell.stats["mean"] <= 1.01


@pytest.mark.parametrize("fault,limits,expect", [
    ("crash", WorkerLimits(60), "crashed: worker exited with code 70"),
    ("hang", WorkerLimits(timeout_s=8), "hung: no result within 8 s"),
    ("oom", WorkerLimits(60, memory_limit_mb=1500), "out of memory"),
    ("raise", WorkerLimits(60), "RuntimeError: injected backend failure"),
])
@pytest.mark.e2e
def test_faulty_workers_become_failed_cells(tiny_model, fault, limits, expect):
    cell = run_cell(request(tiny_model, fault=fault), limits)
    assert cell.status == "failed" and expect in cell.reason


@pytest.mark.e2e
def test_run_continues_past_failed_cells_and_skips_gpu_with_reason(tiny_model, monkeypatch):
    # the host's GPU is faked away, so this holds on a GPU host too
    monkeypatch.setattr("bench.engine.harness.host_gpu_reason", lambda ordinal=0: "no usable NVIDIA GPU: (faked)")
    cfg = RunConfig(backends=("fake-fp32-cpu", "ort-fp32-cuda"), batches=(1, 2), min_time_s=0.3, max_time_s=1.0,
                    processes=2, backend_options={"fake-fp32-cpu|b1|corpus|tall": {"fault": "crash"},
                                                  "fake-fp32-cpu|b2|corpus|tall": {"sleep_s": 0.005}})
    seen = []
    cells = measure_cells(cfg, (), tiny_model, None, seen.append)
    status = {k: (c.status, c.reason) for k, c in cells.items()}
    assert status["fake-fp32-cpu|b1|corpus|tall"][0] == "failed"
    assert status["fake-fp32-cpu|b2|corpus|tall"][0] == "ok" and len(cells["fake-fp32-cpu|b2|corpus|tall"].runs) == 2
    assert status["ort-fp32-cuda|b1|corpus|tall"] == ("skipped", "no usable NVIDIA GPU: (faked)")
    # round-robin: every cell's first worker before any cell's second; failed and skipped cells are not retried
    assert [c.spec.key for c in seen] == ["fake-fp32-cpu|b1|corpus|tall", "fake-fp32-cpu|b2|corpus|tall",
                                          "ort-fp32-cuda|b1|corpus|tall", "ort-fp32-cuda|b2|corpus|tall",
                                          "fake-fp32-cpu|b2|corpus|tall"]


@pytest.mark.e2e
def test_a_resumed_cell_keeps_its_workers_and_gets_only_the_missing_ones(tiny_model):
    cfg = RunConfig(backends=("fake-fp32-cpu",), batches=(1, 2), min_time_s=0.3, max_time_s=0.6, processes=2,
                    backend_options={"fake-fp32-cpu": {"sleep_s": 0.002}})
    first = measure_cells(replace(cfg, processes=1), (), tiny_model, None, lambda c: None)
    done = (first["fake-fp32-cpu|b1|corpus|tall"],)
    seen = []
    cells = measure_cells(cfg, done, tiny_model, None, seen.append)
    assert [c.spec.key for c in seen] == ["fake-fp32-cpu|b2|corpus|tall", "fake-fp32-cpu|b1|corpus|tall",
                                          "fake-fp32-cpu|b2|corpus|tall"]
    assert cells["fake-fp32-cpu|b1|corpus|tall"].runs[0] == done[0].runs[0]
    assert all(len(c.runs) == 2 for c in cells.values())


def test_default_grid_has_batch1_for_every_backend_and_the_full_profile_the_sweeps():
    keys = {c.key for c in build_grid(RunConfig())}
    assert "torch-fp32-cpu|b1|corpus|tall" in keys and "ort-fp16-tensorrt|b1|corpus|tall" in keys
    assert "ort-int8-cpu|b8|corpus|tall" in keys and "ort-int8-cpu|b1|L256|tall" not in keys
    full = {c.key for c in build_grid(RunConfig(profile="full"))}
    assert keys < full and "ort-int8-cpu|b1|L256|tall" in full and "ort-int8-cpu|b64|corpus|tall" in full
    assert RunConfig().n_processes == 3 and RunConfig(profile="quick").n_processes == 2


@pytest.mark.parametrize("kwargs,message", [
    ({"backends": ("onnx-int3-cpu",)}, "unknown engine"),
    ({"backends": ("ort-int4-cpu",)}, "unknown precision"),
    ({"batches": (0,)}, "batch size must be >= 1"),
    ({"lengths": (600,)}, "within 3..512"),
    ({"profile": "fastest"}, "unknown profile"),
])
def test_impossible_configs_are_refused_up_front(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**kwargs)


def test_cli_refuses_bad_grid_before_any_work(bench_home):
    for args, message in ((["--backends", "tf-fp32-cpu"], "unknown engine"), (["--batches", "0"], "batch size"),
                          (["--lengths", "1024"], "3..512")):
        result = run_cli("run", "--model", "twin:tiny", *args, timeout=60)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert "[export]" not in result.stderr


def test_unwritable_results_folder_fails_before_export(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("run", "--model", "twin:tiny", env={"STRUCTBENCH_HOME": str(blocker)}, timeout=60)
    assert result.returncode == 2 and "not writable" in result.stderr and "[export]" not in result.stderr


GPU_SWEEP = {f"{b}|b{n}|corpus|tall" for b in ("ort-fp16-cuda", "torch-fp16-cuda") for n in (1, 2, 4, 8, 16, 32, 64)}


def test_the_default_profile_sweeps_gpu_batches_1_to_64_only_where_a_gpu_can_run_them(monkeypatch):
    from bench.engine import harness

    monkeypatch.setattr(harness, "host_gpu_reason", lambda ordinal=0: None)  # a (fake) GPU host
    on_gpu, reason = harness.host_grid(RunConfig())
    keys = {c.key for c in on_gpu}
    assert reason is None and GPU_SWEEP <= keys
    assert {"ort-fp32-cuda|b8|corpus|tall", "torch-fp16-cuda|b8|corpus|tall", "ort-fp32-cuda|b1|L128|tall"} <= keys
    monkeypatch.setattr(harness, "host_gpu_reason", lambda ordinal=0: "no usable NVIDIA GPU: (faked)")
    on_cpu, reason = harness.host_grid(RunConfig())
    assert reason == "no usable NVIDIA GPU: (faked)" and on_cpu == build_grid(RunConfig())
    kept = {"ort-fp16-cuda|b1|corpus|tall", "torch-fp16-cuda|b1|corpus|tall", "torch-fp16-cuda|b8|corpus|tall"}
    assert {c.key for c in on_cpu} == (keys - GPU_SWEEP) | kept  # batch 1 of every backend, the b8 sweep's
    # a grid given on the command line is taken as given, GPU host or not
    given = RunConfig(backends=("ort-fp16-cuda",), batches=(4,))
    assert [c.key for c in build_grid(given, gpu_host=True)] == ["ort-fp16-cuda|b4|corpus|tall"]


def test_gpu_cells_on_a_cpu_host_cost_no_worker_and_no_time(tiny_model, monkeypatch):
    import time

    from bench.engine import harness

    monkeypatch.setattr(harness, "host_gpu_reason", lambda ordinal=0: "no usable NVIDIA GPU: (faked)")
    monkeypatch.setattr(harness, "run_cell", lambda *a, **k: pytest.fail("a worker was started for a GPU cell"))
    cfg = RunConfig(backends=("ort-fp16-cuda", "torch-fp16-cuda"), batches=(1, 8, 64), processes=3)
    started = time.perf_counter()
    cells = measure_cells(cfg, (), tiny_model, None, lambda c: None)
    assert time.perf_counter() - started < 2.0
    assert {c.status for c in cells.values()} == {"skipped"} and len(cells) == 6


def test_a_backend_skipped_at_batch_1_is_skipped_at_every_batch_without_a_worker(tiny_model, monkeypatch):
    from bench.core.records import CellResult
    from bench.engine import harness

    started = []

    def measure_one(cfg, spec, model_dir, onnx_dir, gpu_reason):
        started.append(spec.key)
        return CellResult(spec, "skipped", "CUDAExecutionProvider did not load (faked)")

    monkeypatch.setattr(harness, "host_gpu_reason", lambda ordinal=0: None)
    monkeypatch.setattr(harness, "measure_one", measure_one)
    cells = measure_cells(RunConfig(backends=("ort-fp16-cuda",), batches=(1, 2, 64)), (), tiny_model, None,
                          lambda c: None)
    assert started == ["ort-fp16-cuda|b1|corpus|tall"]
    assert {(c.status, c.reason) for c in cells.values()} == {("skipped", "CUDAExecutionProvider did not load (faked)")}
    assert len(cells) == 3
