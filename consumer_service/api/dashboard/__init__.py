"""The live dashboard of one replica: `views` serves the page and `GET /dashboard/data`,
`kafka` asks the broker for the topic's and the group's figures, and `reads` reads
Redis.

Where each figure comes from (the page turns the two totals into per-second rates):

    events in       sum of the topic's partition high watermarks (Kafka)
    events out      the store's `processed` counter (Redis)
    lag             per partition: high watermark minus the group's committed offset
    members         describe_consumer_groups: each member's client id, host, partitions
    counters        duplicates skipped, dead-lettered by reason (the store's stats)
    Redis memory    INFO memory
    recent events   the newest stored events (`reads`)

The answer's shape is DashboardDataSchema in consumer_service.api.schemas.
"""
