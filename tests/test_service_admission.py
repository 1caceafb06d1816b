"""The admission queue's batching rule, as Triton's dynamic batcher states it (preferred sizes, a full batch, the
oldest request's queue delay), and the batcher that serves through it."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from bench.core.errors import ConfigError
from bench.service.admission import AdmissionQueue, Full, batch_size
from bench.service.config import ServiceConfig
from tests.service_helpers import ScriptedBackend, scripted_server, wait_ready


@dataclass
class Text:
    name: str
    enqueued: float


def texts(n: int, age_s: float = 0.0) -> list[Text]:
    now = time.perf_counter() - age_s
    return [Text(f"t{i}", now) for i in range(n)]


@pytest.mark.parametrize("waiting, preferred, due, expected", [
    (6, (4, 8), False, 4),   # the largest preferred size that can be formed goes at once; 2 stay
    (9, (4, 8), False, 8),
    (3, (4, 8), False, 0),   # none formable, not full: wait for the oldest's delay
    (3, (4, 8), True, 3),    # its delay is over: the largest batch there is
    (20, (), False, 16),     # a full batch goes at once
    (5, (), True, 5),
    (0, (), True, 0),
])
def test_triton_rule(waiting, preferred, due, expected):
    assert batch_size(waiting, 16, preferred, due) == expected


def test_leftovers_stay_at_the_head_for_the_next_free_instance():
    q = AdmissionQueue(32, max_batch=8, max_delay_s=10.0, preferred=(4,))
    items = texts(6)
    q.put_all(items)
    first, stopping = q.take()
    assert [t.name for t in first] == ["t0", "t1", "t2", "t3"] and not stopping
    assert q.take(block=False) == ([], False)  # 2 left, no preferred size formable, the delay not over
    q.put_all(texts(2))
    second, _ = q.take(block=False)
    assert [t.name for t in second] == ["t4", "t5", "t0", "t1"]  # the leftovers first, in arrival order


def test_the_delay_counts_from_the_oldest_arrival_not_from_when_a_worker_looks():
    q = AdmissionQueue(32, max_batch=8, max_delay_s=0.3)
    q.put_all(texts(2, age_s=0.25))  # these have already waited 250 ms of their 300
    t0 = time.perf_counter()
    batch, _ = q.take()
    waited = time.perf_counter() - t0
    assert len(batch) == 2 and waited < 0.2  # not a fresh 300 ms from now


def test_a_waiting_worker_is_woken_by_a_preferred_batch_and_admission_is_all_or_none():
    q = AdmissionQueue(6, max_batch=8, max_delay_s=5.0, preferred=(4,))
    got: list = []
    worker = threading.Thread(target=lambda: got.append(q.take()))
    worker.start()
    q.put_all(texts(3))
    time.sleep(0.1)
    assert not got  # 3 < 4 and the delay is 5 s: still waiting
    q.put_all(texts(1))
    worker.join(2)
    assert len(got[0][0]) == 4
    q.put_all(texts(5))
    with pytest.raises(Full, match="6 texts"):
        q.put_all(texts(2))  # 5 + 2 > 6: none of the two is admitted
    assert len(q) == 5


def test_close_hands_out_what_is_queued_then_tells_every_taker_to_stop():
    q = AdmissionQueue(32, max_batch=8, max_delay_s=60.0)
    q.put_all(texts(3))
    q.close()
    with pytest.raises(Full, match="shutting down"):
        q.put_all(texts(1))
    batch, stopping = q.take()  # closing makes the waiting batch due at once
    assert len(batch) == 3 and stopping
    assert q.take() == ([], True)


def test_batcher_sends_the_preferred_size_at_once_and_the_rest_after_the_oldests_delay(tiny_model):
    from bench.model.tokenize import load_tokenizer, model_dir_str
    from bench.service.batcher import Batcher

    backend = ScriptedBackend(tiny_model, delay=0.01)
    batcher = Batcher(backend, load_tokenizer(model_dir_str(tiny_model)), max_batch=8, max_wait_ms=300,
                      preferred_batches=(4,), max_queue=16, timeout_s=10, max_padding=1.0)

    async def scenario():
        return await asyncio.gather(*batcher.submit([f"评论{i}" for i in range(6)]))

    batcher.start()
    try:
        outcomes = asyncio.run(scenario())
    finally:
        batcher.stop(timeout=10)
    assert backend.sizes == [4, 2]
    assert max(o.queue_ms for o in outcomes[:4]) < 150  # the preferred batch did not wait for the delay
    assert min(o.queue_ms for o in outcomes[4:]) >= 250  # the two left over waited for the oldest's 300 ms


def test_preferred_sizes_are_checked_and_reach_the_service_command_line():
    import argparse

    from bench.core.errors import ConfigError
    from bench.service.cli import add_arguments, config_from_args
    from bench.service.config import ServiceConfig
    from loadtests.service_proc import ServiceVariant

    with pytest.raises(ConfigError, match="preferred_batch_sizes"):
        ServiceConfig(max_batch=8, preferred_batch_sizes=(4, 16))
    with pytest.raises(ConfigError, match="preferred_batch_sizes"):
        ServiceConfig(max_batch=8, preferred_batch_sizes=(8, 4))
    variant = ServiceVariant.of("p", backend="torch-fp16-cuda", max_batch=32, max_wait_ms=2.0,
                                preferred_batch_sizes=(16, 32), cuda_graphs=False, replicas=3)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(variant.flags()))
    assert (config.preferred_batch_sizes, config.max_wait_ms, config.cuda_graphs, config.replicas) == \
        ((16, 32), 2.0, False, 3)


def test_a_full_batch_request_is_answered_on_an_idle_default_service(tiny_model):
    """The documented limit of max_batch_items texts per request fits the default queue: 40 and 64 new texts are
    answered (with max_queue 32 they were refused 503 on an empty queue, and a client honouring 503 retried for
    ever)."""
    with scripted_server(tiny_model, ScriptedBackend(tiny_model), cache_size=0) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        for n in (40, ServiceConfig().max_batch_items):
            resp = client.post("/api/sentiment/batch", json={"texts": [f"新的评论{n}-{i}" for i in range(n)]})
            assert resp.status_code == 200 and len(resp.json()["results"]) == n


def test_a_queue_smaller_than_one_batch_request_is_refused_at_configuration():
    with pytest.raises(ConfigError, match="max_queue .* must hold at least max_batch_items"):
        ServiceConfig(max_queue=32, max_batch_items=64)
    assert ServiceConfig(max_queue=32, max_batch_items=32).max_queue == 32
