"""What produced a result: CPU model and flags, cores, RAM, GPU, driver, CUDA, libraries, threads, commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the fingerprint itself is a plain dict: this module imports nothing of the records at run time
    from bench.core.run_records import HostRecord

FLAGS_OF_INTEREST = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
                     "f16c")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# What a GPU figure also depends on: CUDA/cuDNN runtimes as pip packages (onnxruntime-gpu's extras), TensorRT.
GPU_PACKAGES = ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu13", "nvidia-cudnn-cu12",
                "nvidia-cublas", "nvidia-cublas-cu12", "tensorrt", "tensorrt-cu13", "tensorrt-cu12", "nvidia-ml-py")
# HostRecord fields that must match for two runs to be compared without --force (pyperf's _CHECKED_METADATA idea).
CHECKED = ("cpu_model", "logical_cores", "gpu_name")


def available_cores() -> list[int]:
    """The cores this process may run on (a container's or taskset's limit, not the machine's count)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of these processes so far (a process already gone counts 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:  # it ended between the listing and the read
            continue
    return total


def cpuinfo_field(name: str) -> str | None:
    """The first `name : value` line of /proc/cpuinfo (None where there is no such file or line)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, avx512_vnni, …); empty where /proc/cpuinfo is absent."""
    return set((cpuinfo_field("flags") or "").split())


def library_versions() -> dict:
    """Installed versions of the libraries a figure depends on (absent ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "numpy",
                *GPU_PACKAGES):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}{'-dirty' if dirty else ''}" if commit else None


def gpu_info(ordinal: int = 0) -> dict:
    """The CUDA device GPU cells run on, as NVML sees it (found by UUID / PCI bus id); from the CUDA driver alone
    where NVML is missing, saying so."""
    from bench.measure.cuda_driver import load_driver
    from bench.measure.gpu import open_cuda_gpu

    gpu = open_cuda_gpu(ordinal)
    if gpu is not None:
        try:
            info = gpu.info()
        finally:
            gpu.close()
        return {"gpu_cuda_device": ordinal, **{f"gpu_{k}": v for k, v in info.items()}}
    driver, why = load_driver()
    if driver is None:
        return {"gpu_name": None, "gpu_note": f"no NVIDIA GPU/driver visible ({why})"}
    try:
        return {"gpu_name": driver.name(ordinal), "gpu_cuda": driver.version(), "gpu_uuid": driver.uuid(ordinal),
                "gpu_cuda_device": ordinal, "gpu_note": "NVML unavailable: no board power, energy or VRAM figures"}
    except OSError as exc:
        return {"gpu_name": None, "gpu_note": f"CUDA driver present, device {ordinal} unusable ({exc})"}


def fingerprint(gpu: int = 0) -> dict:
    import psutil

    flags = cpu_flags()
    return {
        "hostname": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
        "cpu_model": cpu_model(), "cpu_flags": {f: f in flags for f in FLAGS_OF_INTEREST},
        "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
        "ram_bytes": psutil.virtual_memory().total, **gpu_info(gpu),
        "rapl_readable": rapl_readable(), "libraries": library_versions(),
        "thread_env": {k: os.environ.get(k) for k in THREAD_VARS}, "git_commit": git_commit(),
        "cpu_power": cpu_power(),
    }


def read_sys(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_power() -> dict:
    """What sets the CPU's speed, where Linux shows it: the frequency governor, turbo/boost, SMT, and the clock
    /proc/cpuinfo reports now. A VM often shows none of the first three: they are then "not readable", not
    guessed."""
    no_turbo = read_sys("/sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = read_sys("/sys/devices/system/cpu/cpufreq/boost")
    turbo = {"0": "on", "1": "off"}.get(no_turbo or "") or {"1": "on", "0": "off"}.get(boost or "")
    smt = {"1": "on", "0": "off"}.get(read_sys("/sys/devices/system/cpu/smt/active") or "")
    mhz = cpuinfo_field("cpu MHz")
    return {"governor": read_sys("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or "not readable",
            "turbo": turbo or "not readable", "smt": smt or "not readable",
            "mhz_now": round(float(mhz)) if mhz else None}


def rapl_readable() -> bool:
    import glob

    return any(os.access(p, os.R_OK) for p in glob.glob("/sys/class/powercap/*/energy_uj"))


def same_host(a: HostRecord, b: HostRecord) -> list[str]:
    """Names of the checked fields that differ (empty list: comparable)."""
    return [k for k in CHECKED if getattr(a, k) != getattr(b, k)]
