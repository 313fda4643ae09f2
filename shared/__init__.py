"""Code both services share: the event schemas, settings helpers, errors and logging.

Nothing in here talks to Kafka, Redis or HTTP, so both services (and their unit tests)
can import it freely.
"""
