"""`check gpu`'s service check, run here on the fake CUDA backend (tests/fake_gpu: a fixed launch cost per call plus
a little per item, as a GPU charges): the service's model side with its default two instances, GPU buckets and
warm-up, against the same replica called directly; a check that can fail, on figures it measured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

FAKE_GPU = Path(__file__).parent / "fake_gpu"


def test_service_check_sets_the_service_against_its_own_engine_on_a_gpu_shaped_backend(tiny_model, monkeypatch):
    from bench import backends
    from bench.app.checks.gpu_service import service_figures, service_verdict

    monkeypatch.syspath_prepend(str(FAKE_GPU))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(FAKE_GPU), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setitem(backends.REGISTRY, "fake-fp16-cuda", "fake_gpu_backend:FakeCudaBackend")
    f = service_figures(str(tiny_model), "fake-fp16-cuda", max_batch=32, duration_s=3.0)
    assert f["replicas"] == 2 and f["new_shapes_after_warmup"] == 0
    assert f["length"] % 64 == 0  # a GPU length bucket
    assert f["mean_batch"] > 4  # 128 clients: the calls are batched
    status, detail = service_verdict(f)
    assert status == ("pass" if f["saturation_ratio"] >= 0.5 and f["p95_ratio"] <= 2 else "fail")
    assert f"{f['saturation_ratio']:.2f} x engine" in detail

    slow = dict(f, saturation_ratio=0.054)  # the first GPU host's figure: a failure, named
    assert service_verdict(slow)[0] == "fail"
