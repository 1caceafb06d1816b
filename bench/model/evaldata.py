"""A user's labelled data for the accuracy gate (`--eval-data FILE`): CSV or JSONL.

Classifiers: a `text` and a `label` per row, the label a name from the model's id2label or its id. Embedding models:
pairs with a similarity score (`text1`, `text2`, `score`; `sentence1` / `sentence2` also read, as in STS files),
judged by Spearman's correlation between the score and the pair's cosine (the STS convention).
Rows that cannot be read are one clear error naming the line; nothing is guessed.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError
from bench.model.corpus import Workload

MIN_ROWS = 10
TEXT_KEYS, LABEL_KEYS = ("text", "sentence", "review"), ("label", "labels", "target")
PAIR_KEYS = (("text1", "text2"), ("sentence1", "sentence2"), ("text_a", "text_b"))


@dataclass(frozen=True)
class Pairs:
    """Text pairs and their gold similarity, for Spearman's correlation."""

    name: str
    first: tuple[str, ...]
    second: tuple[str, ...]
    scores: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.scores)

    def workload(self) -> Workload:
        """Both sides as one list of texts (the first half, then the second)."""
        return Workload(self.name, self.first + self.second, tuple(0 for _ in self.first + self.second))


def rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every row of a CSV (with a header) or JSONL file."""
    if not path.is_file():
        raise BenchError(f"--eval-data {path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise BenchError(f"{path}:{n}: not a JSON object per line ({exc})") from None
            if not isinstance(row, dict):
                raise BenchError(f"{path}:{n}: not a JSON object")
            out.append((n, row))
        return out
    return [(n, row) for n, row in enumerate(csv.DictReader(text.splitlines()), 2)]


def _key(row: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in row), None)


def label_id(value, labels: tuple[str, ...], where: str) -> int:
    """A label given by name (as in id2label) or by id."""
    if isinstance(value, str) and value in labels:
        return labels.index(value)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BenchError(f"{where}: label {value!r} is neither one of the model's labels "
                         f"({', '.join(labels)}) nor an id") from None
    if not 0 <= number < len(labels):
        raise BenchError(f"{where}: label id {number} is outside the model's {len(labels)} labels")
    return number


def labelled(path: Path, labels: tuple[str, ...]) -> Workload:
    """A classifier's eval data as a Workload of texts and label ids."""
    texts, ids = [], []
    for n, row in rows(path):
        text_key, label_key = _key(row, TEXT_KEYS), _key(row, LABEL_KEYS)
        if text_key is None or label_key is None:
            raise BenchError(f"{path}:{n}: a row needs a text and a label column ({'/'.join(TEXT_KEYS)}, "
                             f"{'/'.join(LABEL_KEYS)}); found {', '.join(map(str, row)) or 'none'}")
        text = str(row[text_key] or "").strip()
        if not text:
            raise BenchError(f"{path}:{n}: empty text")
        texts.append(text)
        ids.append(label_id(row[label_key], labels, f"{path}:{n}"))
    _enough(path, texts)
    return Workload(f"eval:{path.name}", tuple(texts), tuple(ids))


def pairs(path: Path) -> Pairs:
    """An embedding model's eval data: text pairs with a gold similarity score."""
    first, second, scores = [], [], []
    for n, row in rows(path):
        keys = next((k for k in PAIR_KEYS if k[0] in row and k[1] in row), None)
        if keys is None or "score" not in row:
            raise BenchError(f"{path}:{n}: an embedding model's eval data has pairs: text1, text2, score "
                             f"(or sentence1, sentence2, score)")
        try:
            scores.append(float(row["score"]))
        except (TypeError, ValueError):
            raise BenchError(f"{path}:{n}: score {row['score']!r} is not a number") from None
        first.append(str(row[keys[0]]).strip())
        second.append(str(row[keys[1]]).strip())
    _enough(path, scores)
    return Pairs(f"pairs:{path.name}", tuple(first), tuple(second), tuple(scores))


def _enough(path: Path, items: list) -> None:
    if len(items) < MIN_ROWS:
        raise BenchError(f"{path}: {len(items)} rows; accuracy needs at least {MIN_ROWS} (a few hundred for an "
                         f"interval narrower than a few points)")


def digest(path: Path | None) -> str | None:
    """The file's sha256 (an export's inputs: changed data re-runs the gate)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path else None
