"""Private helpers of :mod:`kafka_retry.devstack`: processes, wire probes, launchers."""
