"""Monitoring: node and GPU telemetry, time series, alerts (see model.py for the vocabulary)."""
