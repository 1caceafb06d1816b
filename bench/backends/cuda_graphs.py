"""CUDA graphs per input shape for the torch CUDA backends: launch overhead paid once per bucket, not per call.

A BERT-base forward is a few hundred kernel launches; at small batches the GPU finishes each before Python has
launched the next, so the host sets the pace. A CUDA graph records the launches of one call at one shape and
replays them with one launch. The service sends only bucket shapes (bench.model.buckets) and warms each on its
serving thread, so each bucket is captured there once, at start-up:
- the first call at a shape runs eagerly (cuBLAS handles, cuDNN plans and allocator growth happen outside the
  capture), then warms a side stream and captures the call into a graph that shares one memory pool with the others;
- every later call at that shape copies its inputs into the graph's static tensors and replays it;
- a shape whose capture fails (an op that synchronises with the host, a data-dependent branch) runs eagerly from
  then on, the reason logged and kept in `summary()` (the service shows it in /healthz); the others keep their graph.
The caller copies the output off the device before the next call (a replay overwrites the static output).
No torch import here: the caller passes the module, so tests can pass a fake shaped like torch.cuda.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Mapping

log = logging.getLogger("bench.backends")
MAX_REASON = 300


def enabled(options: Mapping[str, object]) -> bool:
    """The backend option `cuda_graphs` (1/0, true/false; off unless given: the service turns it on)."""
    return str(options.get("cuda_graphs", "0")).lower() in ("1", "true", "yes", "on")


def shape_key(shape: Iterable[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


class ShapeGraphs:
    """Which input shapes may have a CUDA graph and which run without one, with the reason: the bookkeeping torch's
    graphs (CudaGraphs) and ORT's (ort_backend.OrtGraphs) share. `captured()` is the shapes that have one."""

    def __init__(self, shapes: Iterable[Iterable[int]] | None = None) -> None:
        self.allowed = None if shapes is None else {tuple(int(d) for d in s) for s in shapes}
        self.eager: dict[tuple, str] = {}  # shape -> why it runs without a graph

    def wanted(self, shape: tuple) -> bool:
        """Capture (or replay) this shape? Not one that failed, nor one outside the allowed set (recorded)."""
        if shape in self.eager:
            return False
        if self.allowed is not None and shape not in self.allowed:
            self.eager[shape] = "not a bucket shape (only the service's warmed shapes are captured)"
            return False
        return True

    def fail(self, shape: tuple, exc: Exception) -> None:
        """This shape's capture failed: it runs eagerly from now on, the reason kept and logged."""
        self.eager[shape] = f"capture failed: {type(exc).__name__}: {str(exc).strip()[:MAX_REASON]}"
        log.warning("CUDA graph for shape %s not used, running eagerly: %s", shape_key(shape), self.eager[shape])

    def captured(self) -> Iterable[tuple]:
        raise NotImplementedError

    def summary(self) -> dict:
        """What /healthz and the run record say: shapes captured, and each eager shape with its reason."""
        return {"captured": sorted(shape_key(s) for s in self.captured()),
                "eager": {shape_key(s): why for s, why in sorted(self.eager.items())}}


class CudaGraphs(ShapeGraphs):
    """Captured graphs by input shape, for one model on one device, used from one serving thread."""

    def __init__(self, torch, shapes: Iterable[Iterable[int]] | None = None) -> None:
        super().__init__(shapes)
        self.torch = torch
        self.graphs: dict[tuple, tuple] = {}  # shape -> (graph, static inputs, static output)
        self._pool = None

    def call(self, forward: Callable[[dict], object], tensors: dict):
        """forward(tensors), through the shape's graph when there is one (captured here on first sight)."""
        shape = tuple(next(iter(tensors.values())).shape)  # every input has the batch × sequence shape
        held = self.graphs.get(shape)
        if held is not None:
            graph, static, out = held
            for name, tensor in tensors.items():
                static[name].copy_(tensor, non_blocking=True)
            graph.replay()
            return out
        if not self.wanted(shape):
            return forward(tensors)
        return self._capture(forward, tensors, shape)

    def _capture(self, forward, tensors: dict, shape: tuple):
        torch = self.torch
        out = forward(tensors)  # eager first: lazy initialisation must not happen inside the capture
        try:
            static = {name: tensor.clone() for name, tensor in tensors.items()}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                forward(static)  # warm the side stream the capture runs on, as PyTorch's CUDA-graph notes ask
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self._pool = self._pool if self._pool is not None else torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool):
                static_out = forward(static)
        except Exception as exc:  # noqa: BLE001  whatever the capture refused: this shape runs eagerly, the rest not
            self.fail(shape, exc)
            _settle(torch)
            return out
        self.graphs[shape] = (graph, static, static_out)
        return out

    def captured(self) -> Iterable[tuple]:
        return self.graphs


def _settle(torch) -> None:
    """After a failed capture: wait for the device so the next call starts clean (errors here are the capture's)."""
    try:
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001  already reported with the capture failure
        log.debug("synchronize after a failed capture: %s", exc)
