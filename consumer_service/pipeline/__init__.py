"""The worker's pipeline: from a polled Kafka record to a stored event and a committed
offset. `worker` runs the loop; `processing` decides each record; `dlq` sends what cannot
be stored; `status` publishes the worker's health to the read API."""
