"""--eval-data: a user's labelled file read by name or id through id2label, pairs for embedding models, and clear
errors naming the line; the export memory check."""

from __future__ import annotations

import json

import pytest

from bench.core.errors import BenchError
from bench.model import evaldata

LABELS = ("negative", "neutral", "positive")


def test_csv_and_jsonl_rows_map_label_names_and_ids(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("text,label\n" + "".join(f"评论{i},{['negative', '2', 'neutral'][i % 3]}\n"
                                                 for i in range(12)), encoding="utf-8")
    work = evaldata.labelled(csv_file, LABELS)
    assert len(work) == 12 and work.labels[:3] == (0, 2, 1) and work.texts[0] == "评论0"
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"t{i}", "label": i % 3}) for i in range(10)), encoding="utf-8")
    assert evaldata.labelled(jsonl, LABELS).labels[:4] == (0, 1, 2, 0)


@pytest.mark.parametrize("body, words", [
    ("text,label\n" + "a,bad\n" * 12, "d.csv:2: label 'bad' is neither one of the model's labels"),
    ("text,label\n" + "a,7\n" * 12, "label id 7 is outside the model's 3 labels"),
    ("sentence\n" + "a\n" * 12, "a row needs a text and a label column"),
    ("text,label\n" + "a,0\n" * 3, "3 rows; accuracy needs at least 10"),
])
def test_bad_rows_are_one_error_naming_the_line(tmp_path, body, words):
    path = tmp_path / "d.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(BenchError, match=words):
        evaldata.labelled(path, LABELS)


def test_pairs_for_an_embedding_model(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,score\n" + "".join(f"a{i},b{i},{i / 10}\n" for i in range(11)))
    pairs = evaldata.pairs(path)
    assert len(pairs) == 11 and pairs.scores[3] == 0.3 and len(pairs.workload()) == 22
    path.write_text("text1,text2,score\n" + "a,b,high\n" * 11)
    with pytest.raises(BenchError, match="score 'high' is not a number"):
        evaldata.pairs(path)


def test_an_export_larger_than_free_memory_is_refused_before_anything_is_written(tmp_path):
    from exporters.pipeline import check_memory

    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4096)
    check_memory(tmp_path, available=1 << 30)
    with pytest.raises(BenchError, match="exporting it needs about .* GiB is free"):
        check_memory(tmp_path, available=4096)
