"""A real KServe `ModelServer` (Open Inference Protocol v2 over REST) serving one ONNX file with ONNX Runtime: a
peer server that structbench starts as a target (loadtests/targets.py). It runs in its own virtual environment
(`make peers`: .venv-peers/kserve, pins in loadtests/peers/kserve.txt) with only kserve, onnxruntime and numpy, so
it imports nothing of structbench.

    .venv-peers/kserve/bin/python loadtests/peers/kserve_server.py --model-file F.onnx --port 8080 --threads 2

Requests carry the model's INT64 tensors by name (the client tokenises: loadtests/protocols.py, kserve-v2); the
answer is the graph's first output. ONNX Runtime gets the session options structbench's own backend uses
(intra-op threads as given, one inter-op thread, every graph optimisation). KServe has no dynamic batching in
the ModelServer itself (in a cluster that is its agent's job): one request is one model call.
"""

from __future__ import annotations

import argparse
import sys


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="KServe ModelServer over one ONNX file")
    p.add_argument("--model-file", required=True)
    p.add_argument("--name", default="structbench")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    return p.parse_args(argv)


def main() -> None:
    opts = parse(sys.argv[1:])
    sys.argv = sys.argv[:1]  # kserve parses the command line at import; it must see none of ours
    import numpy as np
    from kserve import InferOutput, InferResponse, Model, ModelServer
    from kserve import logging as kserve_logging
    from onnx_session import cpu_session  # beside this script (its folder is on sys.path)

    # no access or latency log lines per request (structbench's own service logs none either: the same work)
    for name in ("kserve", "kserve.trace", "uvicorn.access"):
        kserve_logging.KSERVE_LOG_CONFIG["loggers"][name]["level"] = "WARNING"

    class OnnxModel(Model):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.session = None

        def load(self) -> bool:
            self.session = cpu_session(opts.model_file, opts.threads)
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.output = self.session.get_outputs()[0].name
            self.ready = True
            return self.ready

        def predict(self, payload, headers=None, response_headers=None):
            feeds = {i.name: i.as_numpy().astype(np.int64, copy=False) for i in payload.inputs if i.name in self.inputs}
            out = self.session.run([self.output], feeds)[0].astype(np.float32)
            result = InferOutput(self.output, list(out.shape), "FP32")
            result.set_data_from_numpy(out, binary_data=False)
            return InferResponse(payload.id or "0", self.name, [result])

    model = OnnxModel(opts.name)
    model.load()
    print(f"listening on http://127.0.0.1:{opts.port}", flush=True)
    ModelServer(http_port=opts.port, grpc_port=0, enable_grpc=False, workers=1,
                enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()
