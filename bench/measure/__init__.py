"""Measurement: statistics and stop rules, device-aware timers, resource and energy sampling, roofline."""
