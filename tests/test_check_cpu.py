"""`check cpu`'s judgement: ratios across rounds, which engines race on which CPU, the vendor tools' commands on our
exact settings, and targets judged only where they apply (the speed targets on AMX hosts)."""

from __future__ import annotations

import json
import math

import pytest

from bench.app.checks.cpu import REFERENCE, Race, Ratio, contenders, cpu_misses, ratios_of, vendor_command
from bench.measure.isa import CpuIsa

ZEN3 = CpuIsa(frozenset({"avx2"}))
ZEN4 = CpuIsa(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))
SPR = CpuIsa(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}))


def test_a_ratio_is_judged_per_round_with_a_t_interval_on_logs():
    r = Ratio.of("ov-int8-cpu", [0.5, 0.55, 0.45], [1.0, 1.0, 1.0])
    assert r.value == pytest.approx(math.exp(sum(math.log(x) for x in (0.5, 0.55, 0.45)) / 3))
    assert r.ci[0] < r.value < r.ci[1] and r.rounds == 3
    assert Ratio.of("x", [2.0, 2.0], [1.0, 1.0]).ci == pytest.approx((2.0, 2.0))  # no spread: a point


def test_the_race_covers_ort_int8_and_the_int8_bf16_engines_this_cpu_plans():
    assert contenders(ZEN3) == (REFERENCE,)  # no VNNI, no BF16: OpenVINO and BF16 stay out; nothing to race
    assert set(contenders(ZEN4)) == {REFERENCE, "ov-int8-cpu"}  # BF16 without AMX lost to VNNI INT8
    assert set(contenders(SPR)) == {REFERENCE, "ov-int8-cpu", "ov-bf16-cpu", "torch-bf16-cpu"}


def test_the_best_engine_is_chosen_by_its_mean_over_rounds_and_ort_int8_is_the_denominator():
    race = Race({REFERENCE: [0.050, 0.052, 0.048], "ov-int8-cpu": [0.030, 0.031, 0.029], "ov-bf16-cpu": [0.04] * 3},
                {REFERENCE: [20.0, 21.0, 19.0], "ov-int8-cpu": [40.0, 41.0, 39.0]})
    ratios = ratios_of(race)
    assert ratios["p50_b1"].best == "ov-int8-cpu" and ratios["p50_b1"].value == pytest.approx(0.6, rel=0.02)
    assert ratios["items_b8"].best == "ov-int8-cpu" and ratios["items_b8"].value == pytest.approx(2.0, rel=0.02)
    # the speed targets bind on AMX hosts only; the vendor tools and the accuracy floor everywhere
    slow = ratios_of(Race({REFERENCE: [0.05] * 3, "ov-int8-cpu": [0.045] * 3}, {REFERENCE: [20.0] * 3,
                                                                             "ov-int8-cpu": [22.0] * 3}))
    assert cpu_misses(slow, {}, {}, ZEN4) == []
    assert len(cpu_misses(slow, {}, {}, SPR)) == 2
    vendor = {"ov-int8-cpu": {"tool": "benchmark_app", "vendor_ms": 30.0, "ours_ms": 36.0, "ratio": 30 / 36}}
    accuracy = {"ov-int8": {"passed": False, "failures": ["accuracy 0.78 is 2.0 points below FP32's 0.80"]}}
    misses = cpu_misses(ratios, vendor, accuracy, ZEN4)
    assert any("benchmark_app" in m for m in misses) and any("accuracy floor" in m for m in misses)
    assert cpu_misses(ratios_of(Race({REFERENCE: [0.05]}, {})), {}, {}, ZEN4)  # nothing raced: a miss, not a pass
    assert cpu_misses(ratios_of(Race({REFERENCE: [0.05]}, {})), {}, {}, ZEN3, alone=True) == []  # nothing to race


def test_the_vendor_tools_run_our_exact_settings_on_the_same_file(tmp_path):
    names = ("input_ids", "attention_mask")  # the model's signature's inputs: a RoBERTa has no token types
    cmd = vendor_command("ov-bf16-cpu", tmp_path / "m.xml", 2, tmp_path, names)
    assert cmd[0].endswith("benchmark_app") and cmd[cmd.index("-m") + 1] == str(tmp_path / "m.xml")
    config = json.loads((tmp_path / "ov-bf16-cpu.json").read_text())["CPU"]
    assert config == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "2",
                      "INFERENCE_PRECISION_HINT": "bf16"}
    assert cmd[cmd.index("-data_shape") + 1] == "input_ids[1,80],attention_mask[1,80]" and "-shape" not in cmd
    ort = vendor_command("ort-int8-cpu", tmp_path / "model-int8.onnx", 2, tmp_path, names)
    assert "onnxruntime.transformers.bert_perf_test" in ort and ort[ort.index("-n") + 1] == "2"
    assert ort[ort.index("-s") + 1] == "80" and ort[ort.index("-b") + 1] == "1"


def test_the_sampler_check_misses_only_an_effect_wholly_above_its_limit():
    from bench.app.checks.engine import sampler_misses

    def effect(lo, hi):
        return {"ort-int8-cpu|b1": {"ci": (lo, hi), "text": f"[{lo}–{hi}]"}}

    assert sampler_misses(effect(0.97, 1.06)) == []  # within the noise: not shown to slow anything
    assert sampler_misses(effect(1.01, 1.05)) == []  # may slow by up to 1 %: within the 2 % limit
    missed = sampler_misses(effect(1.03, 1.08))
    assert len(missed) == 1 and "ort-int8-cpu|b1" in missed[0] and "2%" in missed[0]
