"""Device code without a device: timers, NVML wrapper, energy sources and roofline, against fakes checked
against the real pynvml and torch.cuda APIs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from bench.measure.gpu import NvmlGpu, probe_gpu
from bench.measure.power import EnergyMeter, default_tdp_w, estimate_cpu_energy_j, rapl_counters
from bench.measure.roofline import bert_flops, efficiency, measure_peak_gemm_flops
from bench.measure.timer import CpuTimer, CudaTimer, make_timer
from tests.fakes import FakeClock, FakeCudaEvent, FakeGpuState, FakeNvml, FakeTorchCuda

BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072, "num_labels": 2,
             "seq_len": 128, "batch": 1}


def _params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def _public_functions(cls) -> list[str]:
    return [name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")
            and not isinstance(value, type)]


# --- the fakes match the real modules ---------------------------------------------------------------------

def test_fake_nvml_matches_real_pynvml():
    pynvml = pytest.importorskip("pynvml")
    names = _public_functions(FakeNvml)
    assert "nvmlDeviceGetTotalEnergyConsumption" in names
    for name in names:
        assert hasattr(pynvml, name), f"pynvml has no {name}"
        assert _params(getattr(FakeNvml, name)) == _params(getattr(pynvml, name)), name
    for name in ("NVMLError", "NVMLError_NotSupported", "NVMLError_DriverNotLoaded", "NVMLError_Uninitialized",
                 "NVMLError_InvalidArgument"):
        assert issubclass(getattr(pynvml, name), pynvml.NVMLError)
    for name in ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_DRIVER_NOT_LOADED", "NVML_ERROR_UNINITIALIZED"):
        assert getattr(FakeNvml, name) == getattr(pynvml, name)


def test_fake_torch_cuda_matches_real_torch_cuda():
    cuda = pytest.importorskip("torch.cuda")
    for name in _public_functions(FakeTorchCuda):
        assert hasattr(cuda, name), f"torch.cuda has no {name}"
        real = cuda.Event.__new__ if name == "Event" else getattr(cuda, name)
        assert [n for n, _ in _params(getattr(FakeTorchCuda, name))] == [
            n for n, _ in _params(real) if n != "cls"], name
    for name in _public_functions(FakeCudaEvent):
        assert [n for n, _ in _params(getattr(FakeCudaEvent, name))] == [
            n for n, _ in _params(getattr(cuda.Event, name))], name


# --- timers -----------------------------------------------------------------------------------------------

def test_cpu_timer_with_fake_clock():
    clock = FakeClock(100.0)
    timer = CpuTimer(clock_ns=clock.ns)
    assert timer.measure(lambda: clock.advance(0.0125)) == pytest.approx(0.0125)


def test_cuda_timer_uses_events_after_a_synchronize():
    clock = FakeClock()
    cuda = FakeTorchCuda(clock)
    clock.advance(5.0)  # earlier queued work must not count
    seconds = CudaTimer(cuda).measure(lambda: clock.advance(0.040))
    assert seconds == pytest.approx(0.040)
    assert cuda.calls == ["synchronize", "event.record", "event.record", "event.synchronize"]


def test_make_timer_picks_by_device():
    assert isinstance(make_timer("cpu"), CpuTimer)
    cuda = FakeTorchCuda()
    assert isinstance(make_timer("cuda:0", cuda_module=cuda), CudaTimer)
    assert isinstance(make_timer("tensorrt", cuda_module=cuda), CudaTimer)
    with pytest.raises(ValueError, match="unknown device"):
        make_timer("tpu")


# --- NVML -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_bytes", [False, True])
def test_nvml_gpu_reads_everything(as_bytes):
    clock = FakeClock()
    state = FakeGpuState(processes={4242: 3 * 2**30, 77: None}, power_mw=300_500, util_gpu=91)
    nvml = FakeNvml([state], clock, names_as_bytes=as_bytes, cuda=12040)
    with NvmlGpu(0, nvml) as gpu:
        assert gpu.info() == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "cuda": "12.4",
                              "total_memory_bytes": 80 * 2**30, "uuid": "GPU-00000000-0000-4000-8000-000000000000",
                              "matched_by": "index"}
        assert gpu.memory_used() == 2 * 2**30
        assert gpu.process_memory(4242) == 3 * 2**30
        assert gpu.process_memory(77) is None and gpu.process_memory(1) is None
        assert gpu.utilization() == 91
        assert gpu.power_w() == pytest.approx(300.5)
        e0 = gpu.energy_j()
        clock.advance(2.0)
        assert gpu.energy_j() - e0 == pytest.approx(601.0)
    assert nvml.init_count == 0  # closed


def test_nvml_energy_not_supported_is_none():
    nvml = FakeNvml([FakeGpuState(energy_supported=False)])
    with NvmlGpu(0, nvml) as gpu:
        assert gpu.energy_j() is None
        assert gpu.sample(pid=1)["power_w"] == pytest.approx(250.0)


def test_nvml_other_errors_propagate():
    nvml = FakeNvml()
    gpu = NvmlGpu(0, nvml).open()
    nvml.nvmlShutdown()  # behind the wrapper's back: calls now fail as Uninitialized, which is not "unsupported"
    with pytest.raises(nvml.NVMLError):
        gpu.energy_j()


def test_probe_gpu_none_without_driver_or_device():
    from bench.measure.cuda_driver import cuda_device_reason

    if cuda_device_reason() is not None:  # no NVIDIA driver here: the real NVML cannot start either
        assert probe_gpu() is None
    assert probe_gpu(nvml=FakeNvml(driver_loaded=False)) is None
    nvml = FakeNvml()
    assert probe_gpu(index=3, nvml=nvml) is None and nvml.init_count == 0  # no such GPU: init undone
    gpu = probe_gpu(nvml=nvml)
    assert gpu is not None and gpu.info()["cuda"] == "12.4"
    gpu.close()


def test_open_required():
    with pytest.raises(RuntimeError, match="open"):
        NvmlGpu(0, FakeNvml()).memory_used()


# --- energy -----------------------------------------------------------------------------------------------

def _zone(root: Path, name: str, energy_uj: int, max_uj: int = 262_143_328_850) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (zone / "name").write_text("package-0\n")
    return zone


def test_rapl_energy_with_wraparound(tmp_path):
    pkg0 = _zone(tmp_path, "intel-rapl:0", energy_uj=999_000_000, max_uj=1_000_000_000)
    pkg1 = _zone(tmp_path, "intel-rapl:1", energy_uj=5_000_000)
    _zone(tmp_path, "intel-rapl:0:0", energy_uj=1)  # core sub-zone: inside the package, must not be added
    assert [c.path.parent.name for c in rapl_counters(tmp_path)] == ["intel-rapl:0", "intel-rapl:1"]
    clock = FakeClock()
    meter = EnergyMeter(root=tmp_path, clock=clock, hwmon_root=tmp_path / "none")
    meter.start()
    (pkg0 / "energy_uj").write_text("3000000\n")  # wrapped: 1 J to the top, then 3 J
    (pkg1 / "energy_uj").write_text("11000000\n")  # +6 J
    clock.advance(2.0)
    result = meter.stop()
    assert result["source"] == "rapl" and result["estimated"] is False
    assert result["energy_j"] == pytest.approx(10.0)
    assert result["mean_power_w"] == pytest.approx(5.0)
    assert "intel-rapl:0" in result["assumptions"]


def test_amd_energy_hwmon_when_no_powercap(tmp_path):
    hwmon = tmp_path / "hwmon" / "hwmon2"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("amd_energy\n")
    for i, (label, value) in enumerate([("Ecore000", 7), ("Esocket0", 1_000_000), ("Esocket1", 2_000_000)], 1):
        (hwmon / f"energy{i}_label").write_text(f"{label}\n")
        (hwmon / f"energy{i}_input").write_text(f"{value}\n")
    meter = EnergyMeter(root=tmp_path / "no-powercap", hwmon_root=tmp_path / "hwmon", clock=FakeClock())
    meter.start()
    (hwmon / "energy2_input").write_text("4000000\n")
    (hwmon / "energy1_input").write_text("999999999\n")  # a core counter: already inside the socket's
    result = meter.stop()
    assert result["source"] == "rapl" and result["energy_j"] == pytest.approx(3.0)
    assert result["mean_power_w"] is None  # the fake clock did not move
    assert result["assumptions"].startswith("amd_energy socket counters (hwmon2")


def test_unreadable_rapl_falls_back_to_labelled_estimate(tmp_path):
    zone = _zone(tmp_path, "intel-rapl:0", energy_uj=1)
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()  # reading it raises IsADirectoryError, like the root-only file raises EACCES
    clock = FakeClock()
    meter = EnergyMeter(root=tmp_path, tdp_w=40.0, n_cores=4, clock=clock, hwmon_root=tmp_path / "none")
    meter.start()
    clock.advance(10.0)
    result = meter.stop(cpu_seconds=5.0)
    assert result["source"] == "estimate" and result["estimated"] is True
    assert result["energy_j"] == pytest.approx(50.0)  # 40 W × 5 s / 4 cores
    assert result["mean_power_w"] == pytest.approx(5.0)
    for words in ("40.0 W TDP", "4 logical cores", "idle power excluded", "no readable RAPL"):
        assert words in result["assumptions"]


def test_nvml_energy_comes_first(tmp_path):
    _zone(tmp_path, "intel-rapl:0", energy_uj=1)
    clock = FakeClock()
    with NvmlGpu(0, FakeNvml([FakeGpuState(power_mw=200_000)], clock)) as gpu:
        meter = EnergyMeter(root=tmp_path, gpu=gpu, clock=clock)
        meter.start()
        clock.advance(3.0)
        result = meter.stop()
    assert result["source"] == "nvml" and result["energy_j"] == pytest.approx(600.0)
    assert result["mean_power_w"] == pytest.approx(200.0)


def test_estimate_formula_and_default_tdp():
    assert estimate_cpu_energy_j(cpu_seconds=2.0, n_cores_total=8, tdp_w=65.0) == pytest.approx(16.25)
    with pytest.raises(ValueError):
        estimate_cpu_energy_j(-1.0, 8, 65.0)
    assert default_tdp_w(16, env={}) == (130.0, "65 W per 8 logical cores")
    assert default_tdp_w(2, env={"STRUCTBENCH_CPU_TDP_W": "35"})[0] == 35.0
    with pytest.raises(ValueError, match="STRUCTBENCH_CPU_TDP_W"):
        default_tdp_w(2, env={"STRUCTBENCH_CPU_TDP_W": "lots"})


def test_stop_before_start_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="start"):
        EnergyMeter(root=tmp_path).stop()


# --- roofline ---------------------------------------------------------------------------------------------

def test_bert_base_flops_about_22_gflop():
    assert bert_flops(BERT_BASE) == pytest.approx(22e9, rel=0.10)


def test_bert_flops_linear_in_batch_superlinear_in_seq():
    one = bert_flops(BERT_BASE)
    assert bert_flops({**BERT_BASE, "batch": 8}) == 8 * one
    assert bert_flops({**BERT_BASE, "seq_len": 512}) > 4 * one  # the s² attention terms
    with pytest.raises(ValueError, match="seq_len"):
        bert_flops({k: v for k, v in BERT_BASE.items() if k != "seq_len"})


def test_peak_gemm_and_efficiency():
    peak = measure_peak_gemm_flops(size=256, repeats=2)
    assert peak > 0
    assert efficiency(peak / 2, peak) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        efficiency(1.0, 0.0)


@pytest.mark.e2e
def test_peak_is_the_best_engine_and_shape(monkeypatch):
    from bench.measure import roofline

    monkeypatch.setattr(roofline, "ORT_PEAK_SHAPES", ((64, 64, 64), (128, 96, 32)))
    monkeypatch.setattr(roofline, "INT8_PEAK_SHAPES", ((64, 64, 64),))
    peak = roofline.measure_peak(size=128, repeats=2)
    assert set(peak["onnxruntime_by_shape"]) == {"64x64x64", "128x96x32"}
    assert peak["by_engine"]["onnxruntime"] == max(peak["onnxruntime_by_shape"].values())
    assert peak["peak_flops"] == max(peak["by_engine"].values()) > 0
    assert set(peak["int8_by_shape"]) == {"64x64x64"} and peak["int8_peak_ops"] > 0


def test_int8_peak_runs_the_int8_models_kernel_path():
    from bench.measure.roofline import measure_peak_int8_ort

    assert measure_peak_int8_ort(32, 64, 48, repeats=2, min_time_s=0.0) > 0


# --- GPU selection, VRAM scope, GPU energy, GPU roofline (issue 12) ---------------------------------------------

def two_boards(clock=None) -> FakeNvml:
    """CUDA's device 0 (fastest first) is NVML's board 1 (NVML numbers by PCI bus): the indices disagree."""
    return FakeNvml([FakeGpuState(name="NVIDIA L4", power_mw=70_000), FakeGpuState(power_mw=400_000)], clock)


def driver_for(nvml: FakeNvml, board: int):
    from bench.measure.cuda_driver import CudaDriver
    from tests.fakes_gpu import FakeLibcuda

    gpu = nvml.gpus[board]
    raw = bytes.fromhex(gpu.uuid[4:].replace("-", ""))
    return lambda: (CudaDriver(FakeLibcuda([(gpu.name, raw, gpu.pci_bus_id[4:].lower())])), None)


def test_cuda_driver_reads_identity_through_the_c_api():
    from bench.measure.cuda_driver import CudaDriver
    from tests.fakes_gpu import FakeLibcuda

    driver = CudaDriver(FakeLibcuda([("NVIDIA H100 80GB HBM3", bytes(range(16)), "0000:3b:00.0")], version=12040))
    assert (driver.version(), driver.device_count(), driver.name(0)) == ("12.4", 1, "NVIDIA H100 80GB HBM3")
    assert driver.uuid(0) == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f" and driver.pci_bus_id(0) == "0000:3b:00.0"
    with pytest.raises(OSError, match="cuDeviceGet"):
        driver.uuid(1)


def test_nvml_index_differs_from_cuda_index_so_the_right_boards_energy_is_read(tmp_path):
    from bench.measure.gpu import open_cuda_gpu

    clock = FakeClock()
    nvml = two_boards(clock)
    gpu = open_cuda_gpu(0, nvml, driver_for(nvml, board=1))
    assert gpu.index == 1 and gpu.matched_by == "uuid" and gpu.info()["name"] == "NVIDIA H100 80GB HBM3"
    meter = EnergyMeter(tmp_path, gpu=gpu, clock=clock, gpu_cell=True, n_cores=2, tdp_w=20.0,
                        hwmon_root=tmp_path)  # no RAPL: the host CPU's share is the estimate
    meter.start()
    clock.advance(2.0)
    result = meter.stop(cpu_seconds=1.0)
    gpu.close()
    assert result["source"] == "nvml" and result["energy_j"] == pytest.approx(800.0)  # board 1: 400 W × 2 s
    assert result["covers"] == "gpu" and "idle power included; host CPU excluded" in result["assumptions"]
    assert result["host_cpu_source"] == "estimate" and result["host_cpu_energy_j"] == pytest.approx(10.0)


def test_nvml_found_by_pci_bus_id_when_the_uuid_is_unknown():
    nvml = two_boards()
    gpu = probe_gpu(nvml=nvml, uuid="GPU-ffffffff-0000-0000-0000-000000000000", pci_bus_id="0000:18:00.0")
    assert gpu.index == 1 and gpu.matched_by == "pci bus id"
    gpu.close()
    assert probe_gpu(nvml=nvml, uuid="GPU-ffffffff-0000-0000-0000-000000000000") is None  # never index 0 instead


def test_cuda_visible_devices_names_the_board_when_the_driver_cannot():
    from bench.measure.gpu import cuda_identity

    none = lambda: (None, "no libcuda")  # noqa: E731
    env = {"CUDA_VISIBLE_DEVICES": "GPU-00000001-0000-4000-8000-000000000000,3"}
    assert cuda_identity(0, none, env) == {"uuid": "GPU-00000001-0000-4000-8000-000000000000"}
    assert cuda_identity(1, none, env) == {}  # a bare number in CUDA's fastest-first order: unknown to NVML
    assert cuda_identity(1, none, {**env, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}) == {"index": 3}


@pytest.mark.parametrize("ours,scope", [(True, "process"), (False, "device")])
def test_vram_is_labelled_device_wide_when_nvml_lists_no_pid_of_ours(ours, scope):
    """Inside a container NVML lists host PIDs: the figure is then the whole board's, and says so."""
    import os
    import time

    from bench.measure.sampler import ResourceSampler

    pid = os.getpid() if ours else 999_999  # a host PID, as NVML reports in a container
    gpu = NvmlGpu(0, nvml=FakeNvml([FakeGpuState(processes={pid: 3 * 2**30})])).open()
    with ResourceSampler(os.getpid(), 0.01, gpu=gpu) as sampler:
        time.sleep(0.05)
    summary = sampler.summary()
    assert summary["vram_scope"] == scope and summary["peak_vram_bytes"] == 2 * 2**30


def test_gpu_energy_falls_back_to_sampled_board_power_labelled():
    import time

    with NvmlGpu(0, FakeNvml([FakeGpuState(energy_supported=False, power_mw=250_000)])) as gpu:
        meter = EnergyMeter(gpu=gpu, gpu_cell=True, power_period_s=0.01)
        t0 = time.monotonic()  # before start(): its first sample precedes the sampler thread's start, which can
        meter.start()  # take 10+ ms on a loaded 2-core host (seen: 29.4 J over a window timed as 0.103 s)
        time.sleep(0.1)
        result = meter.stop(cpu_seconds=0.0)
        elapsed = time.monotonic() - t0
    assert result["source"] == "nvml-power" and result["estimated"] is False and result["covers"] == "gpu"
    assert result["energy_j"] == pytest.approx(250.0 * elapsed, rel=0.1)
    assert "sampled every 0.01 s" in result["assumptions"]


def test_gpu_without_energy_or_power_gives_a_cpu_estimate_that_says_so(tmp_path):
    nvml = FakeNvml([FakeGpuState(energy_supported=False, power_supported=False)])
    with NvmlGpu(0, nvml) as gpu:  # no RAPL either (empty sysfs): whatever counters the machine itself has
        meter = EnergyMeter(tmp_path, gpu=gpu, gpu_cell=True, tdp_w=10.0, n_cores=2, clock=FakeClock(),
                            hwmon_root=tmp_path)
        meter.start()
        result = meter.stop(cpu_seconds=1.0)
    assert result["source"] == "estimate" and result["energy_j"] == pytest.approx(5.0)  # 10 W × 1 s / 2 cores
    assert result["covers"] == "cpu" and "GPU energy not included" in result["assumptions"]


def test_gpu_cells_are_judged_against_the_gpus_own_peak_of_their_precision():
    from bench.core.run_records import GpuPeak, PeakGemm
    from bench.measure.roofline import peak_for

    record = PeakGemm(peak_flops=1e11, gpu=GpuPeak(fp32=5e13, tf32=4e14, fp16=8e14))
    assert peak_for("fp16", record, device="cuda") == (8e14, "gpu-fp16")
    assert peak_for("fp32", record, device="cuda", tf32="off") == (5e13, "gpu-fp32")
    assert peak_for("fp32", record, device="tensorrt", tf32="trt-default") == (4e14, "gpu-tf32")
    assert peak_for("fp32", PeakGemm(peak_flops=1e11), 1e11, device="cuda") == (None, "gpu-fp32")  # never the CPU's
    assert peak_for("fp32", record) == (1e11, "float32")


def test_gpu_peak_takes_the_best_engine_and_says_why_one_did_not_run():
    from bench.engine.gpu_peak import measure_gpu_peak

    def torch_missing(ordinal):
        raise ImportError("No module named 'torch'", name="torch")

    peak = measure_gpu_peak(1, {"torch": torch_missing, "onnxruntime": lambda o: {"fp32": 5e13, "tf32": 3e14,
                                                                                   "fp16": 7e14}})
    assert (peak["fp32"], peak["tf32"], peak["fp16"], peak["device"]) == (5e13, 3e14, 7e14, 1)
    assert peak["by_engine"]["torch"] == "not installed (torch)"
