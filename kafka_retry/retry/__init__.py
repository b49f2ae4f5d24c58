"""Retry backends: where failed messages wait for their next attempt."""
