"""A real LitServe server (Lightning AI's FastAPI-based inference server, with its own dynamic batching) serving
one ONNX classifier with ONNX Runtime: a peer that structbench starts as a target (loadtests/targets.py). It runs in
its own virtual environment (`make peers`: .venv-peers/litserve, pins in loadtests/peers/litserve.txt) with only
litserve, onnxruntime, tokenizers and numpy, so it imports nothing of structbench.

    .venv-peers/litserve/bin/python loadtests/peers/litserve_server.py --model-file F.onnx --tokenizer DIR \
        --port 8000 --threads 2 --max-batch 8

POST /predict {"text": "…"} → {"label": "…", "score": p}: the server tokenises (the model's tokenizer.json), pads a
batch to its longest text, runs the graph's first output and answers the softmax's top label (labels from the
config beside the tokenizer, as id2label). The load test speaks to it with the http-json protocol. ONNX Runtime gets
the session options structbench's own backend uses; batching is LitServe's (up to --max-batch requests, waiting up
to --batch-timeout seconds for them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import litserve as ls
import numpy as np


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="LitServe over one ONNX classifier")
    p.add_argument("--model-file", required=True)
    p.add_argument("--tokenizer", required=True, help="the model folder: tokenizer.json and config.json")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-timeout", type=float, default=0.001)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--feeds", required=True, metavar="IDS,MASK,TYPES",
                   help="the graph's names for token ids, attention mask and token types (from its signature)")
    p.add_argument("--pad-id", type=int, default=0)
    return p.parse_args()


class Classifier(ls.LitAPI):
    """Module-level, so LitServe's spawned inference worker can unpickle it; settings travel as attributes."""

    def __init__(self, opts: argparse.Namespace, **batching) -> None:
        super().__init__(**batching)
        self.opts = opts

    def setup(self, device) -> None:
        from onnx_session import cpu_session  # beside this script (its folder is on sys.path)
        from tokenizers import Tokenizer

        opts, folder = self.opts, Path(self.opts.tokenizer)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.labels = {int(k): v for k, v in (config.get("id2label") or {0: "LABEL_0", 1: "LABEL_1"}).items()}
        self.session = cpu_session(opts.model_file, opts.threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(opts.max_length)
        self.pad = opts.pad_id
        self.feeds = opts.feeds.split(",")

    def decode_request(self, request):
        return request["text"]

    def batch(self, texts):
        return list(texts)

    def predict(self, texts):
        encs = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), width), self.pad, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encs):
            ids[row, :len(e.ids)], mask[row, :len(e.ids)] = e.ids, 1
        feeds = dict(zip(self.feeds, (ids, mask, np.zeros_like(ids))))
        logits = self.session.run([self.output], {k: v for k, v in feeds.items() if k in self.inputs})[0]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def unbatch(self, probs):
        return list(probs)

    def encode_response(self, probs):
        top = int(np.argmax(probs))
        return {"label": self.labels.get(top, str(top)), "score": float(probs[top])}


def main() -> None:
    opts = parse()
    api = Classifier(opts, max_batch_size=opts.max_batch, batch_timeout=opts.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30)
    print(f"listening on http://127.0.0.1:{opts.port}", flush=True)
    server.run(host="127.0.0.1", port=opts.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
