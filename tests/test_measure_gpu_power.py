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
                              "total_memory_bytes": 80 * 2**30}
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
    assert probe_gpu() is None  # this host: pynvml installed, no NVIDIA driver
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
