"""GPU rows in the report and in summary.csv, from typed records built in the test (the GPU figures are invented:
no GPU here): the board's energy (NVML) and the host CPU's in separate columns, VRAM as a GPU row's memory with
whose it is, the GPU stack the cells used in the environment, and the libraries a GPU worker loaded."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench.core.records import Energy, ProcessRun, Resources, WorkerMeta
from bench.core.results import CellResult, CellSpec, cell_from_dict, cell_to_dict, load_run, save_run
from bench.measure.gpu_libs import decode, loaded_gpu_libraries, loaded_paths
from reports import fmt
from reports.render import ReportOptions, build_context, render_context
from tests.test_report import RUN_FILE, row_of, tables_of

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
MiB = 2**20
HOST = {"gpu_name": "NVIDIA L4 (invented)", "gpu_driver": "550.54.15", "gpu_cuda": "12.4",
        "libraries": {"nvidia-cudnn-cu12": "9.1.0.70"}}


def cell(backend: str, energy: Energy, resources: Resources = Resources(), meta: WorkerMeta = WorkerMeta(),
         processes: int = 2) -> CellResult:
    """A batch-1 cell of `processes` workers, 50 samples of ≈10 ms each over a 0.5 s window."""
    lat = tuple(float(x) for x in np.linspace(0.0097, 0.0103, 50))
    run = ProcessRun(latencies_s=lat, window_s=0.5, resources=resources, energy=energy, meta=meta)
    return CellResult(CellSpec(backend), "ok", runs=(run,) * processes, items_per_batch=1)


CPU_CELL = cell("ort-int8-cpu", Energy(2.0, "estimate", True, "TDP", mean_power_w=4.0, covers="cpu"),
                Resources(peak_rss_bytes=300 * MiB))
ORT_GPU = cell("ort-fp16-cuda", Energy(3.0, "nvml", False, "board", mean_power_w=6.0, covers="gpu",
                                       host_cpu_energy_j=0.5, host_cpu_source="estimate"),
               Resources(peak_rss_bytes=900 * MiB, peak_vram_bytes=2048 * MiB, peak_proc_vram_bytes=1024 * MiB,
                         vram_scope="process", mean_power_w=6.5),
               WorkerMeta(providers=(CUDA, CPU), tf32="off", gpu_libraries={"cuda_runtime": "12.4", "cudnn": "9.1.0"}))
TORCH_GPU = cell("torch-fp16-cuda", Energy(4.0, "nvml", False, "board", covers="gpu", host_cpu_energy_j=1.0,
                                           host_cpu_source="rapl"),
                 Resources(peak_rss_bytes=1500 * MiB, peak_vram_bytes=3072 * MiB, vram_scope="device"),
                 WorkerMeta(torch_max_memory_allocated_bytes=700 * MiB))
ITEMS = 100  # 2 processes × 50 batches of 1


def gpu_run(*cells: CellResult, host: dict = HOST):
    base = load_run(RUN_FILE)
    return replace(base, cells=cells or (CPU_CELL, ORT_GPU, TORCH_GPU), loadtests=(), host=replace(base.host, **host))


def tables(run, **options) -> dict:
    return tables_of(render_context(build_context(run, ReportOptions(**options)), "report.html.j2"))


def column_of(table: list, row: str, header: str) -> str:
    return row_of(table, row)[table[0].index(header)]


def test_gpu_energy_and_host_cpu_energy_are_separate_columns_never_one():
    resources = tables(gpu_run())["resources"]
    gpu_j, cpu_j = "GPU board J / 1,000 inferences (NVML)", "Host CPU J / 1,000 inferences"
    assert column_of(resources, "ort-fp16-cuda", gpu_j) == fmt.num(2 * 3.0 / ITEMS * 1000)
    assert column_of(resources, "ort-fp16-cuda", cpu_j) == f"{fmt.num(2 * 0.5 / ITEMS * 1000)} (est.)"
    assert column_of(resources, "torch-fp16-cuda", cpu_j) == fmt.num(2 * 1.0 / ITEMS * 1000)  # RAPL: measured
    assert column_of(resources, "torch-fp16-cuda", "Host CPU energy source") == "measured (RAPL)"
    assert column_of(resources, "ort-int8-cpu", cpu_j) == f"{fmt.num(2 * 2.0 / ITEMS * 1000)} (est.)"
    assert column_of(resources, "ort-int8-cpu", gpu_j) == "n/a (CPU)"
    assert column_of(resources, "ort-fp16-cuda", "GPU board power W (NVML)") == fmt.num(6.0)
    assert column_of(resources, "ort-fp16-cuda", "Host CPU power W") == f"{fmt.num(1.0 / 1.0)} (est.)"  # 1 J / 1 s
    decision = tables(gpu_run())["decision"]
    engine = "ort-fp16-cuda · batch 1"
    assert column_of(decision, engine, "GPU board energy kJ / 1M inferences (NVML)") == fmt.num(6.0 / ITEMS * 1e3)
    assert column_of(decision, engine, "Host CPU energy kJ / 1M inferences") == f"{fmt.num(1.0 / ITEMS * 1e3)} (est.)"
    assert column_of(decision, "ort-int8-cpu · batch 1", "GPU board energy kJ / 1M inferences (NVML)") == "n/a (CPU)"


def test_a_gpu_cell_without_nvml_energy_says_so_and_keeps_its_host_cpu_estimate():
    blind = cell("ort-fp16-cuda", Energy(2.0, "estimate", True, "TDP; GPU energy not included", covers="cpu"))
    old = cell("torch-fp16-cuda", Energy(4.0, "nvml", False, "board"))  # written before `covers`: NVML by source
    resources = tables(gpu_run(blind, old))["resources"]
    gpu_j, cpu_j = "GPU board J / 1,000 inferences (NVML)", "Host CPU J / 1,000 inferences"
    assert column_of(resources, "ort-fp16-cuda", gpu_j) == "not measured: NVML gave neither energy nor power"
    assert column_of(resources, "ort-fp16-cuda", cpu_j) == f"{fmt.num(4.0 / ITEMS * 1000)} (est.)"
    assert column_of(resources, "torch-fp16-cuda", gpu_j) == fmt.num(8.0 / ITEMS * 1000)
    assert column_of(resources, "torch-fp16-cuda", cpu_j) == "not measured: no host CPU energy reading"


def test_gpu_rows_show_vram_with_whose_it_is_instead_of_rss():
    t = tables(gpu_run())
    memory = "Resource cost: memory MiB (CPU: peak RSS; GPU: peak VRAM)"
    assert column_of(t["summary"], "ort-int8-cpu", memory) == "300"
    assert column_of(t["summary"], "ort-fp16-cuda", memory) == "1,024 VRAM, per-process"
    assert column_of(t["summary"], "torch-fp16-cuda", memory) == "3,072 VRAM, device-wide"
    vram = "Peak VRAM MiB (per-process or device-wide)"
    assert column_of(t["resources"], "ort-fp16-cuda", vram) == "1,024 (per-process)"
    assert column_of(t["resources"], "ort-int8-cpu", vram) == "n/a (CPU)"
    no_nvml = cell("torch-fp16-cuda", Energy(), meta=WorkerMeta(torch_max_memory_allocated_bytes=700 * MiB))
    assert column_of(tables(gpu_run(no_nvml))["summary"], "torch-fp16-cuda", memory) == "700 VRAM, torch allocator"


def test_the_capacity_plan_keeps_board_energy_apart_and_gives_gpu_rows_their_vram():
    plan = tables(gpu_run(), traffic_rps=100.0)["plan"]
    row = next(r for r in plan if r[1] == "ort-fp16-cuda · batch 1")
    header = plan[0]
    month_kwh = lambda j: fmt.num(j * 100.0 * 730 * 3600 / 3.6e6)  # noqa: E731  J per inference × traffic × month
    assert row[header.index("GPU board energy kWh / month (NVML)")] == month_kwh(6.0 / ITEMS)
    assert row[header.index("Host CPU energy kWh / month")] == f"{month_kwh(1.0 / ITEMS)} (est.)"
    assert row[header.index("Memory per instance MiB (CPU: RSS; GPU: VRAM)")] == "1,024 (VRAM, per-process)"
    cpu_row = next(r for r in plan if r[1] == "ort-int8-cpu · batch 1")
    assert cpu_row[header.index("GPU board energy kWh / month (NVML)")] == "n/a (CPU)"


def test_the_environment_names_the_gpu_stack_the_cells_used_and_what_was_not_recorded():
    env = {e["label"]: e["value"] for e in build_context(gpu_run())["environment"]}
    assert env["NVIDIA driver"] == "550.54.15"
    assert env["CUDA"] == "12.4 (runtime loaded by the GPU cells); 12.4 (the driver's CUDA version)"
    assert env["cuDNN"] == "9.1.0 (loaded by the GPU cells); 9.1.0.70 (pip nvidia-cudnn-cu12)"
    assert env["TensorRT"] == "n/a: no TensorRT cell was measured"
    assert env["ONNX Runtime providers used"] == f"ort-fp16-cuda: {CUDA}, {CPU}"
    trt = cell("ort-fp16-tensorrt", Energy(), meta=WorkerMeta(providers=("TensorrtExecutionProvider", CUDA, CPU)))
    bare = {e["label"]: e["value"] for e in build_context(gpu_run(trt, host={"gpu_name": "x"}))["environment"]}
    assert bare["NVIDIA driver"] == bare["CUDA"] == bare["cuDNN"] == bare["TensorRT"] == "not recorded"
    cpu_only = {e["label"]: e["value"] for e in build_context(gpu_run(CPU_CELL))["environment"]}
    assert cpu_only["GPU stack"] == "n/a: no GPU cell was measured in this run" and "NVIDIA driver" not in cpu_only


def test_summary_csv_has_gpu_columns_empty_for_cpu_cells(tmp_path):
    save_run(gpu_run(), tmp_path)
    frame = pd.read_csv(tmp_path / "summary.csv").set_index("backend")
    gpu, cpu = frame.loc["ort-fp16-cuda"], frame.loc["ort-int8-cpu"]
    assert gpu["gpu_energy_j_per_item"] == pytest.approx(6.0 / ITEMS) and gpu["gpu_energy_source"] == "nvml"
    assert gpu["energy_j_per_item"] == pytest.approx(1.0 / ITEMS) and gpu["energy_source"] == "estimate"
    assert gpu["peak_vram_mb"] == 1024 and gpu["vram_scope"] == "per-process" and gpu["providers"] == f"{CUDA} {CPU}"
    assert frame.loc["torch-fp16-cuda", "vram_scope"] == "device-wide"
    assert cpu["energy_j_per_item"] == pytest.approx(4.0 / ITEMS) and cpu["energy_source"] == "estimate"
    assert cpu[["gpu_energy_j_per_item", "gpu_energy_source", "peak_vram_mb", "vram_scope", "providers"]].isna().all()


def test_the_memory_and_energy_plot_draws_gpu_rows():
    from reports.plots import memory_energy

    plot = memory_energy(gpu_run())
    assert plot["id"] == "memory" and len(plot["png"]) > 1000


# --- the libraries a GPU worker loaded --------------------------------------------------------------------------

MAPS = """7f00 r-xp 00000000 08:01 11 /venv/nvidia/cuda_runtime/lib/libcudart.so.12
7f01 r-xp 00000000 08:01 12 /usr/lib/x86_64-linux-gnu/libcudnn_graph.so.9.1.0
7f02 r-xp 00000000 08:01 13 /usr/lib/x86_64-linux-gnu/libcudnn.so.9.1.0
7f03 rw-p 00000000 00:00 0
7f04 r-xp 00000000 08:01 14 /opt/tensorrt/lib/libnvinfer.so.10.3.0
7f05 r-xp 00000000 08:01 15 /usr/lib/libc.so.6
"""


def fake_library(path: str):
    """Like ctypes.CDLL of an already loaded library: the C version calls (cudart writes through its pointer)."""
    def cuda_runtime_get_version(version):
        version._obj.value = 12040
        return 0

    if "cudart" in path:
        return SimpleNamespace(cudaRuntimeGetVersion=cuda_runtime_get_version)
    if "libcudnn.so" in path:
        return SimpleNamespace(cudnnGetVersion=lambda: 90100)
    if "nvinfer" in path:
        return SimpleNamespace()  # a library without the call: left out, not guessed
    raise OSError(f"{path}: cannot open shared object file")


def test_a_gpu_worker_records_the_libraries_it_loaded_with_their_own_versions(tmp_path):
    assert loaded_paths(MAPS) == {"cuda_runtime": "/venv/nvidia/cuda_runtime/lib/libcudart.so.12",
                                  "cudnn": "/usr/lib/x86_64-linux-gnu/libcudnn.so.9.1.0",
                                  "tensorrt": "/opt/tensorrt/lib/libnvinfer.so.10.3.0"}
    maps = tmp_path / "maps"
    maps.write_text(MAPS)
    assert loaded_gpu_libraries(maps, fake_library) == {"cuda_runtime": "12.4", "cudnn": "9.1.0"}
    assert loaded_gpu_libraries(tmp_path / "absent", fake_library) == {}
    assert [decode("cudnn", 8907), decode("tensorrt", 100300), decode("tensorrt", 8601)] == ["8.9.7", "10.3.0",
                                                                                          "8.6.1"]
    back = cell_from_dict(cell_to_dict(ORT_GPU))
    assert back == ORT_GPU and back.meta.gpu_libraries == {"cuda_runtime": "12.4", "cudnn": "9.1.0"}
    old = cell_to_dict(ORT_GPU)
    for r in old["runs"]:
        del r["meta"]["gpu_libraries"]
    assert cell_from_dict(old).meta.gpu_libraries == {}  # a file written before the field: "not recorded"
