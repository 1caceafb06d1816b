"""Benchmark commands whose output states measured ratios (targets live here, not in timed unit tests).

  python -m bench check int8      ORT-INT8 / torch-FP32 P50, and our INT8 vs INT8 quantised without the optimiser
  python -m bench check trust     CI coverage of re-runs, sampler overhead and effect, roofline efficiency
  python -m bench check sampler   the resource sampler's effect on measured P50 (on/off in fresh processes)
  python -m bench check service   QPS scaling with concurrency, service vs engine, HTTP overhead
  python -m bench check overload  4x the saturated rate: rejections, accepted P99, memory, recovery (--target: any
                                  server, loadtests/targets.py)
  python -m bench check servers   our service beside KServe's ModelServer and LitServe on the same ONNX file:
                                  QPS at the SLO with CIs, P95, client and server CPU, serving tax (make peers)
  python -m bench check faults    SIGKILL of a replica, a front, the scheduler (restarted by a supervisor) and a
                                  sweep under load: requests lost, orphans, recovery seconds, records lost
  python -m bench check soak      --minutes N at 80 % of the saturated rate, a replica killed every 5 minutes: RSS
                                  growth, errors outside the kills, P95 drift (not in make test)
  python -m bench check fronts    the HTTP front's CPU per request and ceiling with a zero-cost model; what two
                                  front processes feeding one scheduler buy
  python -m bench check tune      the tuned service vs the best offline engine config and the default service
  python -m bench check gpu       every GPU path briefly on the GPU (--gpu N), one verdict per check
  python -m bench check cpu       the best CPU engine vs ORT INT8, each engine vs its vendor's tool, accuracy kept
  python -m bench check serving   in-service model time vs the engine at the same shapes, saturated service vs
                                  engine on service-shaped batches, new shapes after warm-up, shape costs

Each prints its figures with their targets and exits 1 when a target is missed (naming it), 2 on bad input or a
failed measurement, 0 when every target is met; `check gpu` exits 3 where there is no usable CUDA device (not
available: nothing was checked), see bench.app.checks.gpu.
"""

from __future__ import annotations

import importlib
from typing import Callable

# check name -> the module under bench.app.checks that holds its check_<name>(model[, gpu]) -> exit code; each
# module is imported only when its check runs (they pull in the harness, the service, Locust's plumbing)
WHERE = {"cpu": "cpu", "int8": "engine", "trust": "engine", "sampler": "engine", "service": "service",
         "overload": "service", "fronts": "fronts", "tune": "tune", "gpu": "gpu", "serving": "serving",
         "servers": "servers", "faults": "faults", "soak": "faults"}


def _lazy(which: str) -> Callable[..., int]:
    def run(*args: object) -> int:
        module = importlib.import_module(f"bench.app.checks.{WHERE[which]}")
        return getattr(module, f"check_{which}")(*args)

    run.__name__ = f"check_{which}"
    return run


CHECKS = {which: _lazy(which) for which in WHERE}  # -> exit code
