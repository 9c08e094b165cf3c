"""Runtime benchmark: our containerd client against ``ctr`` and against the targets."""
