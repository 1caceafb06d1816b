"""Instruments: device-aware timers, resource and energy sampling, the roofline, the CUDA driver and NVML, the
host's fingerprint (host) and what its CPU can do (isa). Statistics are in bench.core.stats; measure imports only
the core."""
