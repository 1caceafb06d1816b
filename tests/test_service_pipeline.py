"""The batcher keeps a replica process one call ahead: at saturation its next call waits in its pipe while the
current one runs, never on another replica that is idle, and a replica that dies holding two calls fails both.
A fake link shaped like bench.service.replicas.ReplicaBackend (send, receive, depth 2, alive, recover): its
"process" is a thread that runs the calls it was sent in order, sleeping a known time each."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import numpy as np

from bench.backends import Backend, BackendConfig, BackendSpec
from bench.model.tokenize import load_tokenizer, model_dir_str
from bench.service.batcher import Batcher

DELAY_S = 0.2


class PipeReplica(Backend):
    """A replica process in miniature: calls queue in its pipe and run one at a time, answers come back in order."""

    depth = 2

    def __init__(self, model_dir, delay: float = DELAY_S, die_on_receive: bool = False) -> None:
        super().__init__(BackendConfig(BackendSpec("fake", "fp32"), model_dir))
        self.delay, self.die_on_receive = delay, die_on_receive
        self.events: list[tuple[str, int, float]] = []
        self.restarts, self.alive, self.sent = 0, True, 0
        self._start()

    def _start(self) -> None:
        self._pipe, self._answers = queue.Queue(), queue.Queue()
        threading.Thread(target=self._process, args=(self._pipe, self._answers), daemon=True).start()

    def _process(self, pipe: queue.Queue, answers: queue.Queue) -> None:
        while (call := pipe.get()) is not None:
            index, n = call
            self.events.append(("began", index, time.perf_counter()))
            time.sleep(self.delay)
            self.events.append(("done", index, time.perf_counter()))
            answers.put(np.tile(np.array([[0.0, 2.0]], dtype=np.float32), (n, 1)))

    def load(self) -> None:
        pass

    def infer(self, inputs):
        self.send(inputs)
        return self.receive()

    def send(self, inputs) -> None:
        self.events.append(("sent", self.sent, time.perf_counter()))
        self._pipe.put((self.sent, inputs["input_ids"].shape[0]))
        self.sent += 1

    def receive(self):
        if self.die_on_receive:
            self.die_on_receive, self.alive = False, False
            raise RuntimeError("replica 0 exited with code -9 during its model call")
        return self._answers.get(timeout=10)

    def recover(self) -> None:
        """A fresh process: a new pipe, nothing of the old calls."""
        self._pipe.put(None)
        self.restarts, self.alive = self.restarts + 1, True
        self._start()

    def when(self, kind: str, index: int) -> float:
        return next(t for k, i, t in self.events if k == kind and i == index)


def serve(replicas: list, model_dir, texts: list[str]) -> list:
    """Submit `texts` at once to a batcher over `replicas` (max batch 1) and gather outcomes or exceptions."""
    batcher = Batcher(replicas, load_tokenizer(model_dir_str(model_dir)), max_batch=1, max_wait_ms=0, max_queue=16,
                      timeout_s=30)

    async def scenario():
        return await asyncio.gather(*batcher.submit(texts), return_exceptions=True)

    batcher.start()
    try:
        return asyncio.run(scenario())
    finally:
        batcher.stop(timeout=10)


def test_the_next_call_waits_in_the_replicas_pipe_while_the_current_one_runs(tiny_model):
    replica = PipeReplica(tiny_model)
    outcomes = serve([replica], tiny_model, [f"评论{i}" for i in range(4)])
    assert all(not isinstance(o, Exception) for o in outcomes) and replica.sent == 4
    for i in range(3):  # call i+1 was sent before call i finished: the replica never waited for the front
        assert replica.when("sent", i + 1) < replica.when("done", i)
        assert replica.when("began", i + 1) - replica.when("done", i) < 0.05
    # the time a call waited in the pipe is queueing, not inference
    assert all(0.8 * DELAY_S * 1000 < o.inference_ms < 1.5 * DELAY_S * 1000 for o in outcomes)
    assert outcomes[3].queue_ms > 2 * DELAY_S * 1000


def test_no_call_is_sent_ahead_to_a_busy_replica_while_another_is_idle(tiny_model):
    a, b = PipeReplica(tiny_model), PipeReplica(tiny_model)
    started = time.perf_counter()
    outcomes = serve([a, b], tiny_model, ["第一条", "第二条"])
    assert all(not isinstance(o, Exception) for o in outcomes)
    assert a.sent == 1 and b.sent == 1  # one each, at once
    assert time.perf_counter() - started < 1.6 * DELAY_S
    assert {o.replica for o in outcomes} == {0, 1}


def test_a_replica_that_dies_holding_two_calls_requeues_both_and_comes_back(tiny_model):
    """The call running and the one sent ahead go back to the queue's head; the restarted replica answers them
    (before: both failed with 500)."""
    replica = PipeReplica(tiny_model, die_on_receive=True)
    outcomes = serve([replica], tiny_model, ["第一条", "第二条", "第三条"])
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    assert replica.restarts == 1 and replica.alive and replica.sent >= 5  # two calls sent twice, one once


def test_a_text_whose_replica_dies_twice_fails_rather_than_killing_replicas_for_ever(tiny_model):
    """A requeued text goes back once: if its second replica dies too (it may be what kills them), it fails."""
    from bench.service.batcher import _Item

    batcher = Batcher([PipeReplica(tiny_model)], load_tokenizer(model_dir_str(tiny_model)), max_batch=1,
                      max_wait_ms=0, max_queue=4, timeout_s=30)
    failed: list = []
    batcher._fail = lambda items, exc, replica: failed.extend(items)  # what would be answered 500
    loop = asyncio.new_event_loop()
    try:
        fresh, again = (_Item(t, loop.create_future(), loop, time.perf_counter(), time.perf_counter() + 30)
                        for t in ("一", "二"))
        again.retried = True
        batcher._retry([fresh, again], RuntimeError("replica died"), 0)
    finally:
        loop.close()
    assert failed == [again] and len(batcher._queue) == 1 and fresh.retried


def test_an_in_process_backend_runs_one_call_at_a_time(tiny_model):
    """Without a pipe there is nothing to send ahead: each call runs on the worker thread when its answer is read."""
    from tests.service_helpers import ScriptedBackend

    backend = ScriptedBackend(tiny_model, delay=0.05)
    outcomes = serve([backend], tiny_model, [f"评论{i}" for i in range(3)])
    assert all(not isinstance(o, Exception) for o in outcomes) and backend.sizes == [1, 1, 1]
    assert all(o.inference_ms < 1.5 * 50 for o in outcomes)
