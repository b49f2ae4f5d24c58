"""The ``kafka-retry`` command line, one module per command group (see :mod:`kafka_retry.cli`)."""
