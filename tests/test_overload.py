"""check overload's judgement: recovery is timed from the end of the overload and must be sustained, so a service
that stalls after the overload fails the check (a real service on 127.0.0.1 with a fake backend that slows down
for good after a number of calls, real Locust at 4x its saturated rate)."""

from __future__ import annotations

import pytest

from loadtests.overload import overload_misses, recovery_seconds, run_overload
from loadtests.service_proc import ServiceVariant


def test_recovery_must_be_sustained_and_is_timed_from_the_end_of_the_overload():
    start, qps = 100.0, 10.0
    steady = [start + s + k / 10 for s in range(8) for k in range(10)]  # 10 a second from the start
    assert recovery_seconds(steady, start, qps) == 0.0
    blip = [start + 2 + k / 10 for k in range(10)] + [start + s + k / 10 for s in range(5, 11) for k in range(10)]
    assert recovery_seconds(blip, start, qps) == 5.0  # one good second at 2 s is not a recovery
    assert recovery_seconds([start + s for s in range(10)], start, qps) is None  # 1 a second: never


@pytest.mark.e2e
def test_a_service_that_stalls_after_overload_fails_the_check(bench_home, tiny_onnx, tmp_path):
    # 10 ms a text, one at a time: ~100 req/s saturated; after ~450 calls (inside the overload) 60 ms more a call
    stalls = ServiceVariant.of("stalls", backend="fake-fp32-cpu", batching=False, cache_size=0,
                               backend_options=(("sleep_s", "0.0"), ("per_item_s", "0.01"), ("stall_after", "450"),
                                                ("stall_s", "0.06")))
    f = run_overload("twin:tiny", tmp_path, duration_s=4.0, variant=stalls, saturate_s=2.0, probe_s=8.0)
    misses = overload_misses(f)
    assert f["recovery_s"] is None, f
    assert any(m.startswith("recovery never within the probe") for m in misses), misses
