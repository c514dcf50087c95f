"""Metrics (Prometheus) for operators."""
