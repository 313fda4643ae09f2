"""The worker's pipeline: from a polled Kafka record to a stored event and a committed
offset. `worker` runs the loop; `batch` decides a fetch into a batch (`processing`
decides each record, `dlq` sends what cannot be stored); `flight` keeps the stores in
flight in order; `offsets` owns what is safe to commit; `rebalance` delegates the group's
callbacks; `backoff`, `login` and `health` keep the worker a live, honest group member;
`status` publishes its health to the read API."""
