import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.model.corpus import (
    NEGATIVE,
    POSITIVE,
    bucket_workload,
    labelled_sample,
    length_workload,
    load_corpus,
    zipf_workload,
)
from bench.model.tokenize import encode, load_tokenizer


def test_corpus_has_both_labels_and_all_reviews():
    corpus = load_corpus()
    labels = [r.label for r in corpus]
    assert len(corpus) == len({r.text for r in corpus}) > 17000  # distinct reviews (the files repeat many)
    assert labels.count(NEGATIVE) > 8500 and labels.count(POSITIVE) > 8000
    assert all(r.text == r.text.strip() and r.text for r in corpus[:1000])


def test_length_workload_is_deterministic_and_near_80_chars():
    a, b, c = length_workload(400, seed=1), length_workload(400, seed=1), length_workload(400, seed=2)
    assert a == b and a.texts != c.texts
    assert abs(np.mean([len(t) for t in a.texts]) - 80) < 5


@pytest.mark.e2e
def test_bucket_workload_fills_exact_token_count(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    for tokens in (16, 64, 256):
        w = bucket_workload(8, tokens, seed=0)
        enc = encode(tok, w.texts, max_length=w.max_length)
        assert enc["input_ids"].shape == (8, tokens)
        assert enc["attention_mask"].all()  # every position is a real token, no padding


def test_zipf_workload_repeats_popular_texts():
    w = zipf_workload(2000, seed=0, distinct=500)
    counts = sorted((w.texts.count(t) for t in set(w.texts)), reverse=True)
    assert len(w) == 2000 and len(set(w.texts)) < 500
    assert counts[0] > 10 * counts[len(counts) // 2]
    assert w == zipf_workload(2000, seed=0, distinct=500)


def test_labelled_sample_is_balanced():
    w = labelled_sample(256, seed=0)
    assert sum(w.labels) == 128 and len(set(w.texts)) == 256


@pytest.mark.parametrize("call", [lambda: length_workload(0), lambda: bucket_workload(4, 513),
                                  lambda: bucket_workload(4, 0), lambda: zipf_workload(10, exponent=1.0)])
def test_bad_workload_arguments_raise_clear_errors(call):
    with pytest.raises(BenchError):
        call()
