"""Benchmark commands whose output states measured ratios (targets live here, not in timed unit tests).

  python -m bench check int8      ORT-INT8 / torch-FP32 P50, and our INT8 vs INT8 quantised without the optimiser
  python -m bench check trust     CI coverage of re-runs, sampler overhead and effect, roofline efficiency
  python -m bench check sampler   the resource sampler's effect on measured P50 (on/off in fresh processes)
  python -m bench check service   QPS scaling with concurrency, service vs engine, HTTP overhead
  python -m bench check overload  4x the saturated rate: rejections, accepted P99, memory, recovery
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


def _int8(model: str) -> int:
    from bench.app.checks.engine import check_int8

    return check_int8(model)


def _trust(model: str) -> int:
    from bench.app.checks.engine import check_trust

    return check_trust(model)


def _service(model: str) -> int:
    from bench.app.checks.service import check_service

    return check_service(model)


def _overload(model: str) -> int:
    from bench.app.checks.service import check_overload

    return check_overload(model)


def _tune(model: str) -> int:
    from bench.app.checks.tune import check_tune

    return check_tune(model)


def _gpu(model: str, gpu: int = 0) -> int:
    from bench.app.checks.gpu import check_gpu

    return check_gpu(model, gpu)


def _cpu(model: str) -> int:
    from bench.app.checks.cpu import check_cpu

    return check_cpu(model)


def _sampler(model: str) -> int:
    from bench.app.checks.engine import check_sampler

    return check_sampler(model)


def _serving(model: str) -> int:
    from bench.app.checks.serving import check_serving

    return check_serving(model)


CHECKS = {"cpu": _cpu, "int8": _int8, "trust": _trust, "service": _service, "overload": _overload,  # -> exit code
          "tune": _tune, "gpu": _gpu, "serving": _serving, "sampler": _sampler}
