"""Our tokenizers-based encoder gives exactly the ids of the model's Hugging Face fast tokenizer."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from bench.model.corpus import bucket_workload, length_workload
from bench.model.tokenize import counted, encode, load_tokenizer, pack

ODD = ["ABC abc 123 😀 hello  ", "今天天气真好" * 200, " \t混合 scripts ＡＢＣ，。！", "x"]


@pytest.mark.parametrize("max_length", [None, 16, 64, 512])
def test_encode_matches_transformers(tiny_model, max_length):
    ours, theirs = load_tokenizer(str(tiny_model)), AutoTokenizer.from_pretrained(str(tiny_model))
    texts = list(length_workload(40, seed=4).texts) + ODD
    if max_length:
        texts = list(bucket_workload(8, max_length).texts) + ODD
    padding = "max_length" if max_length else "longest"
    ref = theirs(texts, padding=padding, truncation=True, max_length=max_length or 512, return_tensors="np")
    got = encode(ours, texts, max_length)
    for name, array in got.items():
        assert array.dtype == np.int64 and np.array_equal(array, ref[name]), name


def test_token_counts_are_before_truncation(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    assert counted(tok, ["今天天气真好" * 200, "好"])[0] == [1202, 3]


def test_counted_gives_the_counts_and_the_encodings_of_two_passes(tiny_model):
    """One pass for the batcher: counts before truncation, encodings that pack to exactly what encode gives."""
    tok = load_tokenizer(str(tiny_model))
    texts = list(length_workload(12, seed=2).texts) + ODD
    counts, encodings = counted(tok, texts)
    theirs = AutoTokenizer.from_pretrained(str(tiny_model))
    assert counts == [len(ids) for ids in theirs(texts)["input_ids"]] and counts[ODD.index(ODD[1]) + 12] == 1202
    for group in ([0, 1, 2], [12, 13], list(range(len(texts)))):
        got, want = pack(tok, [encodings[i] for i in group]), encode(tok, [texts[i] for i in group])
        assert all(np.array_equal(got[k], want[k]) for k in want)
    assert pack(tok, encodings[13:14])["input_ids"].shape == (1, 512)  # the over-long text, truncated
