"""Where processed events live: the `EventStore` protocol and its Redis backends (one node
in `store`, a Redis Cluster in `cluster`)."""
