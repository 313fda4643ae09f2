"""The consumer service: a Kafka worker that stores each event exactly once in Redis, and
the read API that serves what it stored.

Importing this package imports nothing heavy: `__main__` must be able to set
PROMETHEUS_MULTIPROC_DIR before prometheus_client is first imported.
"""
