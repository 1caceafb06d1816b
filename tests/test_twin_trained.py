"""The trained twin (`twin:trained`) and the corpus's held-out split: real accuracy offline, measured on reviews
training never saw, and an accuracy floor that catches a broken quantisation the other thresholds let through."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.model.corpus import heldout_reviews, heldout_sample, load_corpus, split_of, train_reviews
from exporters.accuracy import wilson
from exporters.parity import DEFAULT_THRESHOLDS, Thresholds, compare

pytestmark = pytest.mark.e2e  # the slow tier: its fixtures run real measurements or training

SAMPLE = 1000  # held-out texts the floor is judged on
MAX_LENGTH = 64  # the trained twin's training length (TrainRecipe.max_length)


@pytest.fixture(scope="module")
def trained_twin(bench_home):
    """`twin:trained` built once for the module (about a minute or two of training on 2 cores), in the temp home."""
    import torch

    from bench.model.sources import materialize

    threads = torch.get_num_threads()
    model_dir = materialize("twin:trained")
    return model_dir, threads


def test_trained_twin_is_marked_real_and_beats_chance_on_held_out_reviews(trained_twin):
    from bench.model.sources import read_source_meta, synthetic_by_config
    from bench.model.twin_trained import RECIPE

    model_dir, _ = trained_twin
    meta = json.loads((model_dir / "source.json").read_text(encoding="utf-8"))
    assert (meta["source"], meta["synthetic"], meta["trained"]) == ("twin:trained", False, True)
    assert meta["recipe"] == RECIPE
    assert meta["shape"]["layers"] == 2 and meta["seed"] == 0 and "accuracy is real" in meta["note"]
    assert read_source_meta(model_dir)["synthetic"] is False and synthetic_by_config(model_dir) is False
    assert model_dir.name.endswith(f"-t{RECIPE}")  # a changed training recipe gets a new cache folder
    n = meta["heldout_n"]
    assert n == len(heldout_reviews()) >= 1000
    low, high = wilson(round(meta["heldout_accuracy"] * n), n)
    assert low >= 0.75, f"held-out accuracy {meta['heldout_accuracy']} [{low:.3f}, {high:.3f}] on {n} reviews"


def test_building_restores_torch_threads(trained_twin):
    import torch

    assert torch.get_num_threads() == trained_twin[1]


def test_split_is_a_stable_tenth_of_the_corpus():
    corpus, train, held = load_corpus(), train_reviews(), heldout_reviews()
    assert len(train) + len(held) == len(corpus) and not {r.text for r in train} & {r.text for r in held}
    assert 0.08 < len(held) / len(corpus) < 0.12
    assert [split_of(r.text) for r in held[:50]] == ["heldout"] * 50
    # pinned: the split is a function of the text's SHA-256 alone, the same on every host and in every version
    assert [split_of(t) for t in ("很差", "满意", "推荐", "不错", "还行吧", "垃圾")] == ["heldout"] * 3 + ["train"] * 3


def held_out_digest() -> str:
    return hashlib.sha256("\n".join(r.text for r in heldout_reviews()).encode()).hexdigest()


def test_split_is_the_same_in_another_process_with_another_hash_seed():
    """Python's hash() is salted per process; the split must not depend on it."""
    code = "from bench.model.corpus import heldout_reviews as h; import hashlib; " \
           "print(hashlib.sha256(chr(10).join(r.text for r in h()).encode()).hexdigest())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == held_out_digest()


def test_heldout_sample_is_balanced_seeded_and_never_a_training_text():
    trained_on = {r.text[:256] for r in train_reviews()}
    for seed in (0, 1, 2):
        sample = heldout_sample(SAMPLE, seed=seed)
        assert len(sample) == SAMPLE == len(set(sample.texts)) and sum(sample.labels) == SAMPLE // 2
        assert not trained_on & set(sample.texts)
        assert all(len(t) <= 256 for t in sample.texts)
    assert heldout_sample(200, seed=3) == heldout_sample(200, seed=3) != heldout_sample(200, seed=4)


def test_heldout_sample_refuses_more_than_the_split_holds():
    most = 2 * sum(r.label == 1 for r in heldout_reviews())  # positives are the scarcer label
    assert len(heldout_sample(most)) == most
    for n in (0, most + 1):
        with pytest.raises(BenchError, match="held-out"):
            heldout_sample(n)


def short_training(model_dir, seed: int) -> bytes:
    """Weights after a few training steps from a fresh model: the whole recipe, cut short."""
    import torch
    from transformers import BertForSequenceClassification

    from bench.model.twin_trained import TrainRecipe, train, trained_config

    recipe = TrainRecipe(max_steps=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        torch.manual_seed(seed)
        model = BertForSequenceClassification(trained_config(seed, recipe))
        train(model, model_dir, seed, recipe)
    finally:
        torch.set_num_threads(threads)
    return b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())


def test_training_is_deterministic_for_a_seed(trained_twin):
    model_dir, _ = trained_twin
    first = short_training(model_dir, seed=0)
    assert short_training(model_dir, seed=0) == first
    assert short_training(model_dir, seed=1) != first


def two_level(model, layer: int):
    """A copy whose encoder layer `layer` has every Linear weight rounded to 2 levels, the tensor's min and max:
    a quantiser with one bit and a scale taken from the range, the kind of bug the parity gate exists for."""
    import torch

    broken = copy.deepcopy(model)
    with torch.no_grad():
        for module in broken.bert.encoder.layer[layer].modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                w.copy_(torch.where(w < (w.min() + w.max()) / 2, w.min(), w.max()))
    return broken


def logits_of(model, model_dir, texts) -> np.ndarray:
    import torch

    from bench.model.tokenize import encode, load_tokenizer

    tok, out = load_tokenizer(str(model_dir)), []
    with torch.inference_mode():
        for start in range(0, len(texts), 100):
            enc = encode(tok, texts[start:start + 100], max_length=MAX_LENGTH)
            out.append(model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.double().numpy())
    return np.concatenate(out)


def test_accuracy_floor_fails_a_broken_quantisation_and_passes_an_untouched_copy(trained_twin):
    from transformers import AutoModelForSequenceClassification

    model_dir, _ = trained_twin
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    sample = heldout_sample(SAMPLE)
    reference = logits_of(model, model_dir, sample.texts)
    untouched = compare(reference, logits_of(copy.deepcopy(model), model_dir, sample.texts), sample.labels,
                        DEFAULT_THRESHOLDS["fp32"], synthetic=False)
    assert untouched["passed"] is True and untouched["floor"]["passed"] is True, untouched["failures"]
    assert untouched["accuracy"] == untouched["reference_accuracy"] >= 0.75 and untouched["accuracy_delta"] == 0

    broken_logits = logits_of(two_level(model, layer=0), model_dir, sample.texts)
    broken = compare(reference, broken_logits, sample.labels, DEFAULT_THRESHOLDS["int8"], synthetic=False)
    assert broken["passed"] is False and broken["floor"]["passed"] is False
    assert any("points below FP32's" in f and "(floor: 1.0)" in f for f in broken["failures"]), broken["failures"]
    assert broken["accuracy_delta_ci"][1] < 0  # the loss is real, not sampling noise
    # Thresholds loose enough to let it through: the floor alone still fails it.
    alone = compare(reference, broken_logits, sample.labels, Thresholds(0.5, 100.0), synthetic=False)
    assert alone["failures"] == [alone["floor"]["reason"]]
    # The same logits on a synthetic model are not judged on labels.
    assert compare(reference, broken_logits, sample.labels, Thresholds(0.5, 100.0), synthetic=True)["passed"]
