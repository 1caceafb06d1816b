"""Test data only. The fake-GPU-host tests put this folder first on PYTHONPATH, so every Python process they start
(cell workers, the service, Locust) finds the fake CUDA backend in the backend table, as the test process does."""

try:
    from bench.backends import REGISTRY
except ImportError:  # a Python without structbench: nothing to register
    REGISTRY = None

if REGISTRY is not None:
    REGISTRY.setdefault("fake-fp16-cuda", "fake_gpu_backend:FakeCudaBackend")
