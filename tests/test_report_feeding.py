"""The report's "how the service feeds its engine" table, from /metrics scraped around a load-test window: per-bucket
model time against the engine's, new shapes, pad tokens, and the front's CPU per request."""

from __future__ import annotations

from bench.core.records import LoadLevel, ServiceSetup
from bench.core.results import HostRecord, ModelRecord, RunResult, record_from_dict, run_to_dict
from loadtests.levels import pooled_buckets, pooled_shapes
from loadtests.sweep import server_deltas

BEFORE = {"cache_hits_total": 0.0, "cache_misses_total": 0.0, "batch_size_sum": 0.0, "batch_size_count": 0.0,
          'front_cpu_seconds{front="0"}': 1.0, 'front_requests_total{front="0"}': 10.0,
          'front_cpu_seconds{front="1"}': 2.0, 'front_requests_total{front="1"}': 20.0}
AFTER = {"cache_hits_total": 0.0, "cache_misses_total": 40.0, "batch_size_sum": 40.0, "batch_size_count": 10.0,
         'front_cpu_seconds{front="0"}': 1.2, 'front_requests_total{front="0"}': 110.0,
         'front_cpu_seconds{front="1"}': 2.3, 'front_requests_total{front="1"}': 220.0,
         'model_calls_total{shape="4x64"}': 8.0, 'model_seconds_total{shape="4x64"}': 0.88,
         'model_calls_total{shape="1x64"}': 2.0, 'model_seconds_total{shape="1x64"}': 0.1,
         'engine_seconds{shape="4x64",replica="0"}': 0.1, 'engine_seconds{shape="4x64",replica="1"}': 0.1,
         'engine_seconds{shape="1x64",replica="0"}': 0.05, 'new_shapes_total{shape="1x64"}': 1.0,
         'tokens_total{kind="real"}': 900.0, 'tokens_total{kind="padding"}': 100.0}


def test_deltas_give_per_bucket_efficiency_and_the_fronts_cpu_per_request():
    server = server_deltas(BEFORE, AFTER)
    assert abs(server["front_cpu_s"] - 0.5) < 1e-9 and server["front_requests"] == 300  # both fronts, summed
    shapes = pooled_shapes([server["shapes"], server["shapes"]])  # two windows of the same figures
    assert shapes.calls == 20 and shapes.new_shapes == 2 and abs(shapes.padding_share - 0.1) < 1e-9
    first, second = shapes.by_bucket
    assert (first.shape, first.calls) == ("4x64", 16) and abs(first.efficiency - 1.1) < 1e-9  # 0.88 / (8 × 0.1)
    assert (second.shape, second.efficiency, second.new_shapes) == ("1x64", 1.0, 2)
    assert pooled_buckets([]) == ()
    # a service whose model runs in its front's process counts requests but reports no front CPU: not measured, not 0
    in_process = {k: v for k, v in AFTER.items() if not k.startswith("front_cpu")}
    assert server_deltas(BEFORE, in_process)["front_cpu_s"] is None


def run_of(levels: tuple[LoadLevel, ...]) -> RunResult:
    return RunResult("r", "now", HostRecord(), ModelRecord(), {}, loadtests=levels)


def level(**figures) -> LoadLevel:
    setup = ServiceSetup("gpu batching", "fake-fp16-cuda", True, 32, 0.0, 0, None, 2, True)
    return LoadLevel(config=setup, users=32, requests=100, qps=50.0, **figures)


def test_the_table_shows_the_busiest_buckets_and_says_what_was_not_measured():
    from reports.service import feeding_table

    server = server_deltas(BEFORE, AFTER)
    shaped = level(shapes=pooled_shapes([server["shapes"]]), front_cpu_ms_per_request=1000 * 0.5 / 300)
    run = run_of((shaped,))
    table = feeding_table(run)
    [row] = table["rows"]
    texts = [c["text"] for c in row]
    # model 0.88 + 0.1 s against the engine's 8 × 0.1 + 2 × 0.05 s; 0.5 CPU s over 300 requests
    assert texts[:6] == ["gpu batching", "32", f"{0.98 / 0.9:.2f}×", "1", "10", f"{500 / 300:.3g}"]
    assert texts[6] == "4x64: 8, 1.10×; 1x64: 2, 1.00×"
    bare = feeding_table(run_of((level(front_cpu_ms_per_request=0.4),)))
    assert bare["rows"][0][2]["text"].startswith("not measured")  # no shape metrics: said, not blank
    assert feeding_table(run_of((level(),))) is None  # nothing to show


def test_per_bucket_figures_round_trip_through_the_results_file():
    server = server_deltas(BEFORE, AFTER)
    lv = level(shapes=pooled_shapes([server["shapes"]]), front_cpu_ms_per_request=1.5)
    back = record_from_dict(LoadLevel, run_to_dict(run_of((lv,)))["loadtests"][0])
    assert back == lv
