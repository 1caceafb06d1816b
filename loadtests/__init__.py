"""Locust load tests of the inference service and the sweep driver that runs them."""
