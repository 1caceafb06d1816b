"""A CUDA-device backend for tests only, shaped like the real GPU backends (engine × precision × device, load /
infer / close, device memory): each call costs a fixed launch time plus a little per item, so batching pays as it
does on a GPU. Every figure it produces is test data; the runs that use it say so in their results file."""

from __future__ import annotations

from bench.backends.fake import FakeBackend

LAUNCH_S = 0.012  # per call, whatever its batch
PER_ITEM_S = 0.001
VRAM_BYTES = 420 * 2**20


class FakeCudaBackend(FakeBackend):
    def load(self) -> None:
        super().load()
        self.opts = {"sleep_s": LAUNCH_S, "per_item_s": PER_ITEM_S, **self.opts}

    def device_memory(self) -> dict:
        return {"torch_max_memory_allocated_bytes": VRAM_BYTES}
