"""Targets and protocols: how each protocol builds its request and judges an answer (the servers' documented
shapes), and real peer servers — KServe's ModelServer and LitServe from their own venvs (`make peers`) — loaded
through `bench sweep --target/--protocol` with a QPS-at-SLO search; distributed load against a URL; a server that
is down, speaks another protocol or hangs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench.core.errors import ConfigError
from loadtests.protocols import ProtocolSpec, build, parse_headers, parse_options
from loadtests.targets import Peer, TargetSpec, peer_spec
from tests.conftest import REPO, run_cli


def test_structbench_and_tei_requests_and_answers():
    ours = build(ProtocolSpec("structbench", "classification"))
    assert ours.request("好").path == "/api/sentiment" and ours.request("好").body == {"text": "好"}
    assert ours.check({"text": "好", "label": "正面", "score": 0.9}, "好") is None
    assert ours.check({"text": "别的", "label": "正面", "score": 0.9}, "好")  # another text's answer
    emb = build(ProtocolSpec("structbench", "embedding"))
    assert emb.request("好").body == {"texts": ["好"]}
    assert emb.check({"results": [{"text": "好", "embedding": [0.1, 0.2]}]}, "好") is None
    tei = build(ProtocolSpec("tei", "classification"))
    assert (tei.request("x").path, tei.request("x").body) == ("/predict", {"inputs": "x"})
    assert tei.check([{"label": "POSITIVE", "score": 0.98}, {"label": "NEGATIVE", "score": 0.02}], "x") is None
    assert tei.check({"error": "Model is overloaded"}, "x")
    tei_emb = build(ProtocolSpec("tei", "embedding"))
    assert tei_emb.request("x").path == "/embed" and tei_emb.check([[0.1, -0.2, 0.3]], "x") is None
    assert tei_emb.check([[0.1], [0.2]], "x")  # two vectors for one text


def test_openai_kserve_and_template_requests_and_answers(tiny_model):
    openai = build(ProtocolSpec("openai-embeddings", "embedding", "bge-small-zh"))
    assert openai.request("x").body == {"model": "bge-small-zh", "input": ["x"]}
    answer = {"object": "list", "data": [{"object": "embedding", "embedding": [0.1, 0.2], "index": 0}]}
    assert openai.check(answer, "x") is None and openai.check({"data": []}, "x")
    from bench.model.tokenize import encode, load_tokenizer

    kserve = build(ProtocolSpec("kserve-v2", "classification", "sentiment", str(tiny_model)))
    req = kserve.request("这家酒店很好")
    tok = load_tokenizer(str(tiny_model))
    expected = encode(tok, ["这家酒店很好"])
    assert req.path == "/v2/models/sentiment/infer"
    assert [i["name"] for i in req.body["inputs"]] == list(expected)  # the model's own inputs, in its order
    assert all(i["datatype"] == "INT64" and i["shape"] == list(expected[i["name"]].shape) for i in req.body["inputs"])
    good = {"outputs": [{"name": "logits", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 0.9]}]}
    assert kserve.check(good, "x") is None
    assert "2 labels" in kserve.check({"outputs": [{"shape": [1, 3], "data": [1, 2, 3]}]}, "x")
    assert kserve.check({"outputs": [{"shape": [1, 2], "data": [1]}]}, "x")  # data shorter than its shape
    text_in = build(ProtocolSpec("kserve-v2", "classification", "m", None, (("text_input", "text"),)))
    assert text_in.request("x").body["inputs"] == [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]
    tmpl = build(ProtocolSpec("http-json", options=parse_options(
        ["path=/v1/classify", 'body={"doc": {"content": "{text}"}, "k": 1}', "answer=result.0.label"])))
    assert tmpl.request('说"好"').body == {"doc": {"content": '说"好"'}, "k": 1}  # quotes survive: no formatting
    assert tmpl.check({"result": [{"label": "pos"}]}, "x") is None and "result.0.label" in tmpl.check({}, "x")


@pytest.mark.parametrize("spec, message", [
    (lambda: ProtocolSpec("grpc"), "unknown protocol"),
    (lambda: ProtocolSpec("http-json"), "needs --protocol-option path"),
    (lambda: build(ProtocolSpec("http-json", options=(("path", "/x"), ("body", '{"q": 1}')))), "no \"{text}\""),
    (lambda: ProtocolSpec("kserve-v2"), "needs --model-name"),
    (lambda: ProtocolSpec("tei", options=(("path", "/x"),)), "takes no option path"),
    (lambda: parse_headers(["Authorization Bearer x"]), "'Name: value'"),
    (lambda: TargetSpec("url", "ftp://host"), r"an http\(s\) URL"),
])
def test_bad_protocol_and_target_settings_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        spec()


def test_a_url_target_is_recorded_without_its_credentials():
    spec = TargetSpec("url", "https://user:pw@models.example:8443/v1/?token=abc", ProtocolSpec("tei"),
                      headers=(("Authorization", "Bearer sekrit"),))
    assert spec.public_url == "https://models.example:8443/v1"
    assert "sekrit" not in repr(spec)


def test_locust_parses_structbench_options_itself():
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"),
                           "--headless", "-t", "1s", "--sb-protocol", "bogus"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "--sb-protocol: invalid choice" in proc.stderr and "kserve-v2" in proc.stderr


def results_of(stdout: str) -> tuple[dict, Path]:
    path = Path(next(line.split("results: ", 1)[1].strip() for line in stdout.splitlines()
                     if line.startswith("results: ")))
    return json.loads(path.read_text(encoding="utf-8")), path.parent


@pytest.fixture(scope="module")
def kserve_url(tiny_onnx):
    """A real KServe ModelServer serving the tiny twin's INT8 file, started like any server a user runs."""
    peer = Peer(peer_spec("kserve", "classification", None), "twin:tiny")
    try:
        yield peer.wait_ready(120)
    finally:
        peer.stop()


@pytest.mark.e2e
def test_sweep_and_slo_search_against_a_kserve_url_with_distributed_load(kserve_url):
    proc = run_cli("sweep", "--model", "twin:tiny", "--target", kserve_url, "--protocol", "kserve-v2",
                   "--model-name", "structbench", "--header", "Authorization: Bearer sekrit-token", "--users", "1,2",
                   "--open-rates", "20", "--workers", "2", "--lt-duration", "2", "--ramp", "0.5",
                   "--service-processes", "1", "--slo-search", "--search-time-cap", "45", timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, run_dir = results_of(proc.stdout)
    levels = run["loadtests"]
    assert len(levels) == 3 and all(lv["status"] == "ok" and lv["failures"] == 0 for lv in levels), levels
    assert {lv["config"]["protocol"] for lv in levels} == {"kserve-v2"} and levels[0]["config"]["url"] == kserve_url
    assert all(lv["workers"] == 2 for lv in levels)  # closed loop in 2 Locust processes, open loop master + 2
    [search] = run["slo_searches"]
    assert search["config"]["target"] == "url" and search["status"] == "ok" and search["qps"] > 0, search
    assert not any("sekrit" in p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())


@pytest.mark.e2e
def test_sweep_and_slo_search_against_litserve_started_as_a_peer(tiny_onnx):
    proc = run_cli("sweep", "--model", "twin:tiny", "--target", "litserve", "--users", "1,2", "--lt-duration", "2",
                   "--ramp", "0.5", "--service-processes", "1", "--slo-search", "--search-time-cap", "45",
                   timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, _ = results_of(proc.stdout)
    assert [lv["config"]["target"] for lv in run["loadtests"]] == ["litserve", "litserve"]
    assert all(lv["status"] == "ok" and lv["failures"] == 0 and lv["qps"] > 0 for lv in run["loadtests"])
    assert run["loadtests"][0]["service_cpu_ms_per_text"] > 0  # the peer's process tree, measured here
    [search] = run["slo_searches"]
    assert search["config"]["protocol"] == "http-json" and search["status"] == "ok", search
    assert "Servers side by side" not in proc.stdout  # the table is the report's (bench report renders it)
    assert not any(p.info["cmdline"] and "litserve_server.py" in " ".join(p.info["cmdline"])
                   for p in __import__("psutil").process_iter(["cmdline"]))  # the peer and its workers are gone


def hanging_server() -> tuple[socket.socket, str]:
    """Accepts connections and reads, never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.e2e
def test_a_down_a_wrong_and_a_hanging_server_fail_by_cause_and_the_sweep_goes_on(kserve_url, tmp_path):
    from loadtests.service_proc import ServiceVariant
    from loadtests.sweep import run_sweep
    from loadtests.windows import SweepConfig

    hang, hang_url = hanging_server()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again before the sweep: nothing listens
    targets = {"down": TargetSpec("url", down_url, ProtocolSpec("tei")),
               "wrong": TargetSpec("url", kserve_url, ProtocolSpec("structbench")),  # KServe has no /api/sentiment
               "hangs": TargetSpec("url", hang_url, ProtocolSpec("http-json", options=(
                   ("path", "/predict"),)))}
    cfg = SweepConfig(model="twin:tiny", variants=tuple(ServiceVariant.of_target(k, t) for k, t in targets.items()),
                      users=(1,), duration_s=2.0, ramp_s=0.0, processes=1, request_timeout_s=1.0)
    try:
        levels = {lv.config.label: lv for lv in run_sweep(cfg, tmp_path)}
    finally:
        hang.close()
    assert levels["down"].status == "failed" and "Connection refused" in levels["down"].reason
    assert levels["wrong"].status == "ok" and levels["wrong"].failures > 0
    assert set(levels["wrong"].failure_causes) == {"HTTP 404"}, levels["wrong"].failure_causes
    assert levels["hangs"].status == "ok" and levels["hangs"].failures >= 1
    assert any("timed out" in c.lower() or "timeout" in c.lower() for c in levels["hangs"].failure_causes), \
        levels["hangs"].failure_causes
