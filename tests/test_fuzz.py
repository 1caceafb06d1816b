"""Fuzzing: schemathesis against the service's own OpenAPI schema (real uvicorn on 127.0.0.1), and
hypothesis properties of tokenisation and workload generation (statistics: tests/test_measure_stats.py).

`make fuzz` runs this file with --fuzz-examples 1000 (≥ 1,000 generated cases per operation)."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from bench.model.corpus import bucket_workload, length_workload, zipf_workload
from bench.model.tokenize import MAX_TOKENS, encode, load_tokenizer
from bench.service.app import create_app
from bench.service.config import ServiceConfig
from bench.service.server import ThreadedServer


@pytest.fixture(scope="module")
def service_url(tiny_onnx):
    import time
    import urllib.request

    server = ThreadedServer(create_app(ServiceConfig(model="twin:tiny", backend="ort-int8-cpu", cache_size=0)))
    url = server.start()
    for _ in range(300):  # wait for model load + warm-up
        try:
            if urllib.request.urlopen(url + "/healthz", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.1)
    yield url
    server.stop()


@pytest.mark.e2e
def test_no_generated_request_gets_a_server_error(service_url, request):
    """Every operation of the service's OpenAPI schema, with schemathesis-generated (valid and invalid)
    inputs: no 5xx, every 4xx a JSON error that names the problem, no traceback."""
    schema = schemathesis.openapi.from_url(service_url + "/openapi.json")
    n = request.config.getoption("--fuzz-examples")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/sentiment", "/api/sentiment/batch", "/healthz"}
    for op in operations:
        cases = []

        @given(st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)))
        @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(base_url=service_url)
            cases.append(response.status_code)
            assert response.status_code < 500, (op.path, response.status_code, response.text[:300])
            if response.status_code >= 400:
                assert response.json()["error"] and "Traceback" not in response.text

        check()
        from collections import Counter

        print(f"fuzz {op.method.upper()} {op.path}: {len(cases)} cases, statuses {dict(Counter(cases))}")
        # An operation with inputs must get every example asked for; one without has exactly one distinct request.
        inputs = (op.path_parameters, op.query, op.headers, op.cookies, op.body)
        wanted = n if any(len(part) for part in inputs) else 1
        assert len(cases) >= wanted, f"{op.method.upper()} {op.path}: {len(cases)} cases run, {wanted} wanted"


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(str(tiny_model))


@given(st.lists(st.text(max_size=700), min_size=1, max_size=4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_encode_any_text_gives_aligned_bounded_int64(tok, texts):
    enc = encode(tok, texts)
    shapes = {a.shape for a in enc.values()}
    assert len(shapes) == 1 and next(iter(shapes))[0] == len(texts) and next(iter(shapes))[1] <= MAX_TOKENS
    assert all(a.dtype.name == "int64" for a in enc.values())
    assert (enc["input_ids"][:, 0] == tok.cls_token_id).all()  # every row starts with [CLS]
    assert (enc["input_ids"].max() < len(tok))


@given(st.integers(3, 512), st.integers(1, 6), st.integers(0, 2**31))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bucket_workload_always_fills_its_length(tok, tokens, n, seed):
    w = bucket_workload(n, tokens, seed=seed)
    enc = encode(tok, w.texts, max_length=w.max_length)
    assert enc["input_ids"].shape == (n, tokens) and enc["attention_mask"].all()


@given(st.integers(1, 200), st.integers(0, 2**31), st.integers(10, 300))
@settings(max_examples=40, deadline=None)
def test_workloads_are_deterministic_and_sized(n, seed, mean):
    a = length_workload(n, seed=seed, mean_chars=mean)
    assert a == length_workload(n, seed=seed, mean_chars=mean) and len(a) == n
    if n >= 30 and mean >= 70:  # far from the clip at 8 chars: lengths follow normal(mean, 20), so their mean does
        assert abs(sum(len(t) for t in a.texts) / n - mean) < 5 * 20 / n**0.5 + 0.5
    z = zipf_workload(n, seed=seed, distinct=50)
    assert len(z) == n and set(z.texts) <= set(length_workload(50, seed=seed).texts)
