"""Shape buckets through the real service (uvicorn on 127.0.0.1): a fake backend that charges a one-off cost the
first time a thread calls with a shape (as cuDNN's per-thread attention graphs do) is warmed at every bucket on
the thread that serves, so traffic of varied lengths at 1, 8 and 32 users meets no new shape; without buckets
(each batch padded to its own longest text) the same traffic pays for new shapes while serving."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from bench.model.buckets import Buckets
from bench.service.app import create_app
from bench.service.config import ServiceConfig
from bench.service.server import ThreadedServer
from tests.service_helpers import concurrent_posts, wait_ready

pytestmark = pytest.mark.e2e  # the slow tier: real processes (make test runs it, make test-fast does not)

CHARS = "这部电影太烂了完全不值得一看今天天气真好心情很棒服务态度一般价格便宜质量不错"


def series(text: str, name: str) -> dict[str, float]:
    """label set -> value for every sample of one metric, e.g. series(text, 'new_shapes_total')."""
    out = {}
    for line in text.splitlines():
        if line.startswith(f"structbench_{name}{{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(f"structbench_{name}"):]] = float(value)
    return out


def varied_texts(rng: np.random.Generator, n: int) -> list[str]:
    """Reviews of 3 to 400 characters (most under 128 tokens, some in the long buckets)."""
    lengths = np.minimum(rng.lognormal(4.0, 0.8, n).astype(int) + 3, 400)
    return ["".join(rng.choice(list(CHARS), k)) for k in lengths]


@pytest.mark.parametrize("buckets", [True, False], ids=["buckets", "per-batch-longest"])
def test_after_warm_up_no_new_shape_is_paid_while_serving(tiny_model, buckets):
    config = ServiceConfig(model=str(tiny_model), backend="fake-fp32-cpu", cache_size=0, max_batch=8, max_queue=64,
                           warmup_runs=2, warm_max_length=512, shape_buckets=buckets,
                           backend_options=(("sleep_s", "0.002"), ("new_shape_s", "0.02")))
    rng = np.random.default_rng(7)
    with ThreadedServer(create_app(config)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            health = wait_ready(client, timeout=120)
        for users in (1, 8, 32):
            for _ in range(4):
                responses = concurrent_posts(url, varied_texts(rng, users))
                assert [r.status_code for r in responses] == [200] * users
        text = httpx.get(url + "/metrics").text
    calls = series(text, "model_calls_total")
    new = sum(series(text, "new_shapes_total").values())
    assert sum(calls.values()) >= 3 * 4  # every round made at least one model call
    if buckets:
        warmed = {f'{{shape="{r}x{n}"}}' for r, n in Buckets.for_device("cpu", 8).shapes()}
        assert health["warmup"] == {"seconds": health["warmup"]["seconds"], "shapes": len(warmed), "buckets": True}
        assert set(calls) <= warmed, set(calls) - warmed  # only bucket shapes reach the model
        assert new == 0, series(text, "new_shapes_total")
        engine = series(text, "engine_seconds")
        assert len(engine) == len(warmed) and all(v > 0.002 for v in engine.values())  # timed on the serving thread
    else:
        assert new > 5  # today's padding to each batch's longest text: new shapes are paid while serving
