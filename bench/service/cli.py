"""Command-line flags mapped one to one onto ServiceConfig fields (reusable by `python -m bench serve`)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from bench.core.argtypes import ints
from bench.core.errors import BenchError, ConfigError, run_entry
from bench.service.config import ServiceConfig

DEFAULTS = ServiceConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--model", default=d.model,
                   help="twin | twin:tiny | twin:trained | modelscope[:ID] | hf:ID | local directory | onnx:PATH")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="with --model onnx:PATH: the folder of its tokenizer (default: the graph's own folder)")
    p.add_argument("--backend", default=d.backend, help="e.g. ort-int8-cpu, ort-fp32-cpu, torch-fp32-cpu")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="intra-op threads per replica (default: the runtime's; with replicas, cores // replicas)")
    p.add_argument("--replicas", type=int, default=d.replicas,
                   help="model instances, each its own process, on a CPU pinned to its own cores (default: 1 on a "
                        "CPU, 2 on a GPU so one instance's CPU work overlaps the other's GPU work; python -m bench "
                        "tune finds R)")
    p.add_argument("--model-process", action=argparse.BooleanOptionalAction, default=d.model_process,
                   help="run even a single model instance in its own worker process, so the HTTP front never holds "
                        "the GIL its Python calls need (default: on for torch backends, off otherwise; replicas > 1 "
                        "always do)")
    p.add_argument("--backend-option", dest="backend_options", action="append", type=key_value, default=[],
                   metavar="KEY=VALUE", help="backend-specific option, repeatable (e.g. the fake's sleep_s=0.05)")
    p.add_argument("--onnx-dir", default=d.onnx_dir, help="serve this existing export instead of exporting")
    p.add_argument("--fronts", type=int, default=d.fronts,
                   help="HTTP front processes feeding one model scheduler, for when one front's CPU per request is "
                        "the limit (/metrics: structbench_front_cpu_seconds per request); batching stays whole")
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help="0 picks a free port, printed on startup")
    p.add_argument("--batching", action=argparse.BooleanOptionalAction, default=d.batching,
                   help="dynamic micro-batching (--no-batching serves one text at a time)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="most texts per model call")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="Triton's max_queue_delay: how long the oldest queued text may wait for a fuller batch, from "
                        "its arrival (default 0: greedy)")
    p.add_argument("--preferred-batch-sizes", type=ints, default=d.preferred_batch_sizes,
                   help="Triton's preferred_batch_size, a comma list: the largest of these that the queue can form "
                        "goes at once, the rest stay at the head of the queue")
    p.add_argument("--max-padding", type=float, default=d.max_padding,
                   help="split a batch so pad tokens stay under this share of its tokens "
                        "(default: 0.05 on CPU, where padding costs as much as text; 1.0 on GPU)")
    p.add_argument("--cache-size", type=int, default=d.cache_size, help="answers kept (0 = no cache)")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="texts waiting before 503")
    p.add_argument("--request-timeout-s", type=float, default=d.request_timeout_s,
                   help="a text queued longer than this is dropped with 503")
    p.add_argument("--inference-timeout-s", type=float, default=d.inference_timeout_s,
                   help="a model call running longer than this answers its requests 504 and /healthz 503")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="larger bodies get 413")
    p.add_argument("--max-batch-items", type=int, default=d.max_batch_items, help="texts per batch request")
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars, help="longer texts get 422")
    p.add_argument("--warmup-runs", type=int, default=d.warmup_runs,
                   help="model calls per shape bucket before ready (0: no warm-up; default 1 on CPU, 3 on GPU)")
    add_bucket_arguments(p)
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=d.cuda_graphs,
                   help="capture each warmed bucket shape as a CUDA graph (torch CUDA, ORT CUDA); a shape that cannot "
                        "be captured runs eagerly, its reason logged and in /healthz")
    p.add_argument("--trt-bucket-profiles", action=argparse.BooleanOptionalAction, default=d.trt_bucket_profiles,
                   help="give TensorRT one optimisation profile per batch bucket covering the bucket lengths "
                        "(--no-trt-bucket-profiles: one profile spanning every bucket shape)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


# The shape-bucket flags that take a value: flag, type, help (each ServiceConfig field of the flag's name)
BUCKET_FLAGS = (
    ("--warm-max-length", int, "warm the bucket lengths up to this many tokens (default: 128 on CPU, all on GPU)"),
    ("--bucket-lengths", ints, "comma list of sequence-length buckets, ending at 512 (default: the device kind's)"),
    ("--bucket-batches", ints, "comma list of batch-size buckets, from 1 to max batch (default: powers of two)"),
    ("--max-call-tokens", int, "most rows × length in one model call (default: 512 on CPU, 16384 on GPU)"),
)


def add_bucket_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape-buckets", action=argparse.BooleanOptionalAction, default=DEFAULTS.shape_buckets,
                   help="send the model only a fixed set of shapes, each warmed on its serving thread before ready "
                        "(--no-shape-buckets: pad each batch to its own longest text)")
    for flag, kind, text in BUCKET_FLAGS:
        p.add_argument(flag, type=kind, default=getattr(DEFAULTS, flag[2:].replace("-", "_")), help=text)


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    names = {f.name for f in fields(ServiceConfig)}
    settings = {k: v for k, v in vars(args).items() if k in names}
    if getattr(args, "tokenizer", None):
        from bench.model.sources import onnx_spec_with_tokenizer

        settings["model"] = onnx_spec_with_tokenizer(settings["model"], args.tokenizer)
    if "backend_options" in settings:
        settings["backend_options"] = tuple(settings["backend_options"])
    return ServiceConfig(**settings)


def main(argv: list[str] | None = None) -> int:
    from bench.core.quiet import quiet_libraries

    parser = argparse.ArgumentParser(prog="python -m bench.service", description="Run the sentiment service.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))  # usage error: exit code 2
    quiet_libraries()
    return run_entry(lambda: serve_or_fail(config, args.log_level))


def serve_or_fail(config: ServiceConfig, log_level: str) -> int:
    try:
        return serve(config, log_level=log_level)
    except OSError as exc:  # e.g. the port is taken: one clear line, no traceback
        raise BenchError(f"cannot serve on {config.host}:{config.port}: {exc.strerror or exc}") from None


def serve(config: ServiceConfig, log_level: str = "info") -> int:
    """Run the service in the foreground until SIGINT/SIGTERM; in-flight requests finish first. Prints
    `listening on http://HOST:PORT` (the real port when `config.port` is 0). Returns an exit code. With several
    fronts (config.fronts), this process schedules the model and HTTP runs in front processes (bench.service.fronts).
    """
    from bench.core.processes import watch_lifeline
    from bench.service.app import create_app
    from bench.service.server import bind_socket, run_uvicorn, url_of

    watch_lifeline()  # started by a sweep or a check: gone with it, even when it is SIGKILLed
    if config.fronts > 1:
        from bench.service.fronts import serve_fronts

        return serve_fronts(config, log_level)
    app = create_app(config)
    sock = bind_socket(config.host, config.port)
    service = app.state.service
    print(f"listening on {url_of(sock)}", flush=True)
    run_uvicorn(app, sock, log_level, config.request_timeout_s * 3, service)
    return 1 if service.status == "failed" else 0
