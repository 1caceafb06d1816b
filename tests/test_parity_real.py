"""The accuracy path on meaningful labels: the tiny twin, trained for seconds on labelled corpus reviews, saved as a
local model directory and exported; the manifest's parity block must then report real accuracy on held-out reviews
for FP32 and INT8 (not "not measured"), above chance, with INT8 agreeing with FP32 on nearly every label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.model.corpus import heldout_sample, train_reviews
from bench.model.tokenize import encode, load_tokenizer
from exporters.pipeline import ExportConfig, export_all

pytestmark = pytest.mark.e2e  # the slow tier: real processes (make test runs it, make test-fast does not)

PARITY_N, PARITY_MAX_LENGTH = 256, 48  # heldout_sample(256, seed=0) is what the export judges
# A model this weak (≈0.75) judged on 256 texts moves by a few texts between FP32 and INT8: a floor of 5 points
# here, the default 1-point floor being for 1,000 texts (the trained twin's test checks the floor itself)
MAX_DROP = 0.05
STEPS, BATCH, MAX_LENGTH, LR = 150, 32, 32, 5e-3  # ~20 s on one core; held-out accuracy ≈ 0.75
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def training_reviews(n: int) -> list:
    """`n` seeded reviews of the training split: none is held out."""
    pool = train_reviews()
    return [pool[i] for i in np.random.default_rng(1).choice(len(pool), n, replace=False)]


def uniform_attention(model) -> None:
    """Zero every query and key: each token attends to all tokens equally, so [CLS] starts as a mean over the
    text's characters. With the twin's random attention [CLS] sees a few arbitrary characters and the same
    training reaches only ~0.55."""
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for linear in (layer.attention.self.query, layer.attention.self.key):
                linear.weight.zero_()
                linear.bias.zero_()


def train(model, tokenizer) -> None:
    """Embeddings, pooler and classifier learn (the encoder stays frozen); the learning rate decays to zero."""
    reviews = training_reviews(STEPS * BATCH)
    enc = {k: torch.from_numpy(v) for k, v in encode(tokenizer, [r.text for r in reviews], MAX_LENGTH).items()}
    labels = torch.tensor([r.label for r in reviews])
    for p in model.bert.encoder.parameters():
        p.requires_grad = False
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / STEPS)
    model.eval()  # no dropout: a run this short learns faster without it
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        loss = model(**{k: v[batch] for k, v in enc.items()}, labels=labels[batch]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def held_out_accuracy(model, tokenizer) -> float:
    held = heldout_sample(PARITY_N, seed=0)
    enc = {k: torch.from_numpy(v) for k, v in encode(tokenizer, held.texts, PARITY_MAX_LENGTH).items()}
    with torch.inference_mode():
        predicted = model(**enc).logits.argmax(-1).numpy()
    return float(np.mean(predicted == np.asarray(held.labels)))


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A local model directory as a user would bring one: config, weights, tokenizer, no source.json."""
    from transformers import BertForSequenceClassification

    out = tmp_path_factory.mktemp("trained") / "model"
    tokenizer = load_tokenizer(str(tiny_model))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core host: a second thread costs more than it gives
    try:
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(str(tiny_model))
        uniform_attention(model)
        train(model, tokenizer)
        accuracy = held_out_accuracy(model, tokenizer)
    finally:
        torch.set_num_threads(threads)
    del model.config.structbench  # the twin's "synthetic" note no longer describes these weights
    model.save_pretrained(str(out))
    for name in TOKENIZER_FILES:
        if (tiny_model / name).exists():
            (out / name).write_bytes((tiny_model / name).read_bytes())
    return out, accuracy


def test_trained_local_model_gets_real_accuracy_in_the_manifest(trained, tmp_path):
    model_dir, torch_accuracy = trained
    _, manifest = export_all(ExportConfig(model=str(model_dir), out_dir=tmp_path / "onnx", parity_n=PARITY_N,
                                          max_accuracy_drop=MAX_DROP))
    assert manifest["synthetic"] is False and manifest["source"] == {"source": str(model_dir), "synthetic": False}
    assert torch_accuracy >= 0.65, f"training reached only {torch_accuracy:.3f}: the test model is too weak"
    for name in ("fp32", "fp32-fused", "int8", "torch-int8"):
        parity = manifest["variants"][name]["parity"]
        assert parity["n"] == PARITY_N and parity["passed"] is True, (name, parity)  # real labels: every text
        assert parity["accuracy"] is not None, f"{name}: accuracy not measured for real weights"
        assert parity["accuracy"] >= 0.65, (name, parity["accuracy"])
        assert parity["floor"]["passed"] is True and parity["accuracy_delta_ci"][0] <= parity["accuracy_delta"]
    fp32, int8 = (manifest["variants"][n]["parity"] for n in ("fp32", "int8"))
    # The manifest's accuracy is measured against the corpus labels: FP32 ONNX matches the torch model's own.
    assert fp32["accuracy"] == pytest.approx(fp32["reference_accuracy"], abs=1 / fp32["n"])
    assert int8["reference_accuracy"] == pytest.approx(torch_accuracy, abs=2 / PARITY_N)
    assert fp32["label_agreement"] >= 0.99 and int8["label_agreement"] >= 0.9
