"""One coordinator process: configuration and on-disk layout, the embedded etcd member,
joining a running cluster, the leader loops run while the election names us (``leadership``,
also run by the simulator's brains), and the start-up that wires the loops and the edges
together."""
