"""The service's settings: one frozen dataclass, validated on construction, free of side effects.

Truncation policy: a text longer than 512 tokens (after the normalisation described in `cache.normalise`) is cut to
its first 512 tokens, as the model cannot see more; the answer then carries `"truncated": true` so a client knows
the label describes only the beginning of its text. `max_text_chars` bounds the work one text can cause before
tokenisation; a text over it is refused (422), never silently cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.backends import resolve
from bench.core.errors import ConfigError
from bench.measure.host import available_cores
from bench.model.buckets import Buckets, max_padding_for

MAX_PORT = 65535


@dataclass(frozen=True)
class ServiceConfig:
    """How the inference service runs: model and backend, network address, batching, cache and input limits."""

    model: str = "twin"
    backend: str = "ort-int8-cpu"
    threads: int | None = None  # intra-op threads per replica; None = the runtime's (one replica) or cores // R
    # model instances; > 1 runs each in its own process (replicas.py), on a CPU pinned to its own cores; None: 1 on a
    # CPU, 2 on a GPU (one instance's CPU work — tokenising, copies, launches — overlaps the other's GPU work)
    replicas: int | None = None
    # one replica in a worker process too, so the front's GIL is not the model's; None: yes for torch (its calls
    # take the GIL between kernels: a busy front slows them, see docs/measurements.md), no for ORT and OpenVINO
    model_process: bool | None = None
    backend_options: tuple[tuple[str, str], ...] = ()  # KEY=VALUE pairs for the backend (e.g. the fake's sleep_s)
    onnx_dir: str | None = None  # an existing export to serve; None = export (or reuse) for `model`
    fronts: int = 1  # HTTP front processes feeding this one's model scheduler (bench.service.fronts)
    host: str = "127.0.0.1"
    port: int = 8000
    batching: bool = True
    max_batch: int = 8
    # Triton's max_queue_delay: the longest the oldest queued text waits for a fuller batch (from its arrival); 0 =
    # greedy: batch whatever queued while the model was busy, never wait
    max_wait_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()  # Triton's preferred_batch_size: the largest formable goes at once
    max_padding: float | None = None  # a batch is split so pad tokens stay under this share; None = per device
    cache_size: int = 1024  # 0 = no cache
    # texts waiting before 503; at least max_batch_items, so one full batch request is admitted on an idle service
    # (32 refused every valid batch of 33–64 texts: docs/measurements.md)
    max_queue: int = 64
    request_timeout_s: float = 10.0  # longest a text may wait in the queue before its model call starts
    inference_timeout_s: float = 30.0  # longest a model call may run before its requests get 504
    max_body_bytes: int = 65536
    max_batch_items: int = 64
    max_text_chars: int = 2000
    warmup_runs: int | None = None  # calls per warmed shape; None: 1 on CPU, 3 on GPU (effective_warmup_runs)
    shape_buckets: bool = True  # send the model only bucket shapes, each warmed before ready (bench.model.buckets)
    warm_max_length: int | None = None  # warm bucket lengths up to this; None: 128 on CPU, every length on GPU
    bucket_lengths: tuple[int, ...] | None = None  # None: the device kind's set
    bucket_batches: tuple[int, ...] | None = None  # None: powers of two up to max_batch, and max_batch
    max_call_tokens: int | None = None  # rows × length of one model call at most; None: the device kind's
    # GPU launch overhead: each warmed bucket shape captured as a CUDA graph (torch CUDA; ORT's CUDA provider), and
    # TensorRT given one optimisation profile per batch bucket (False: one spanning every bucket shape); a shape
    # that cannot be captured runs eagerly, the reason logged and in /healthz (bench.backends.cuda_graphs)
    cuda_graphs: bool = True
    trt_bucket_profiles: bool = True

    def __post_init__(self) -> None:
        resolve(self.backend)  # raises ValueError naming the known backends
        if not self.model:
            raise ConfigError("model must name a model source, e.g. twin or twin:tiny")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (got {self.threads})")
        if self.replicas is not None and (isinstance(self.replicas, bool) or self.replicas < 1):
            raise ConfigError(f"replicas must be >= 1 (got {self.replicas})")
        if any(b < 1 or b > self.effective_max_batch for b in self.preferred_batch_sizes) or \
                list(self.preferred_batch_sizes) != sorted(set(self.preferred_batch_sizes)):
            raise ConfigError(f"preferred_batch_sizes must be increasing sizes within 1..max_batch "
                              f"({self.effective_max_batch}), got {self.preferred_batch_sizes!r}")
        if not 0 <= self.port <= MAX_PORT:
            raise ConfigError(f"port must be within 0..{MAX_PORT} (got {self.port}); 0 picks a free port")
        self._check_positive()
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0 (got {self.max_wait_ms})")
        if self.max_padding is not None and not 0 <= self.max_padding <= 10:
            raise ConfigError(f"max_padding must be within 0..10 (got {self.max_padding}); 0.15 = 15 % pad tokens")
        if self.cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0 (got {self.cache_size}); 0 turns the cache off")
        if self.warmup_runs is not None and self.warmup_runs < 0:
            raise ConfigError(f"warmup_runs must be >= 0 (got {self.warmup_runs})")
        if self.bucket_batches and self.bucket_batches[-1] < self.effective_max_batch:
            raise ConfigError(f"bucket_batches {self.bucket_batches} must reach max_batch "
                              f"({self.effective_max_batch})")
        if self.max_queue < self.max_batch_items:
            raise ConfigError(f"max_queue ({self.max_queue}) must hold at least max_batch_items "
                              f"({self.max_batch_items}) texts: a batch request that large could never be admitted, "
                              f"and its client would be told 503 (retry) for ever; raise max_queue or lower "
                              f"max_batch_items")
        self.buckets  # noqa: B018  validates the bucket settings (ConfigError naming the bad one)

    def _check_positive(self) -> None:
        for name in ("fronts", "max_batch", "max_queue", "request_timeout_s", "inference_timeout_s", "max_body_bytes",
                     "max_batch_items", "max_text_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not value > 0:
                raise ConfigError(f"{name} must be > 0 (got {value!r})")

    @property
    def effective_max_batch(self) -> int:
        """With batching off every request is computed alone, as the article's Flask service does."""
        return self.max_batch if self.batching else 1

    @property
    def effective_max_padding(self) -> float:
        """Padding the batcher accepts: as given, or the device kind's (buckets.max_padding_for; the measurements
        behind it are in docs/measurements.md)."""
        if self.max_padding is not None:
            return self.max_padding
        return max_padding_for(resolve(self.backend).device)

    @property
    def effective_replicas(self) -> int:
        if self.replicas is not None:
            return self.replicas
        return 2 if resolve(self.backend).on_gpu else 1

    @property
    def effective_model_process(self) -> bool:
        if self.model_process is not None:
            return self.model_process
        return resolve(self.backend).engine == "torch"

    @property
    def effective_warmup_runs(self) -> int:
        """Calls per shape bucket at start-up: the first pays for the shape, later ones time it (the engine's time
        at that shape in /metrics is their median; with one run it is not measured, and neither is the service's
        efficiency). On a CPU a new shape costs little and warming every bucket of BERT-base twice takes twice as
        long (docs/measurements.md), so one run; a GPU pays for new shapes (cuDNN graphs, allocator growth) over
        its first calls, so three. `check serving` runs two on CPU."""
        if self.warmup_runs is not None:
            return self.warmup_runs
        return 3 if resolve(self.backend).on_gpu else 1

    @property
    def effective_warm_max_length(self) -> int | None:
        """Bucket lengths warmed at start: on a CPU those up to 128 tokens, where reviews fall (a CPU pays little
        for a new shape, and warming the long ones doubled the warm-up; a text longer than that meets its shape
        while serving, counted in /metrics); on a GPU, where new shapes are dear, all."""
        if self.warm_max_length is not None:
            return self.warm_max_length
        return None if resolve(self.backend).on_gpu else 128

    @property
    def buckets(self) -> Buckets | None:
        """The shapes the model is sent (None with shape_buckets off: each batch padded to its own longest)."""
        if not self.shape_buckets:
            return None
        base = Buckets.for_device(resolve(self.backend).device, self.effective_max_batch)
        return Buckets(self.bucket_batches or base.batches, self.bucket_lengths or base.lengths,
                       self.max_call_tokens or base.max_tokens, base.pad_rows)

    @property
    def replica_threads(self) -> int | None:
        """Threads per replica: as given, or the cores split evenly between replicas (None: the runtime decides)."""
        if self.threads is not None or self.effective_replicas == 1:
            return self.threads
        return max(1, len(available_cores()) // self.effective_replicas)

    @property
    def effective_max_wait_ms(self) -> float:
        return self.max_wait_ms if self.batching else 0.0
