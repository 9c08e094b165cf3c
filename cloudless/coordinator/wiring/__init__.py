"""One coordinator process: configuration and on-disk layout, the embedded etcd member,
joining a running cluster, and the start-up that wires the loops and the edges together."""
