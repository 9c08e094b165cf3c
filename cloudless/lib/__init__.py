"""Small shared utilities with no domain knowledge: clocks, ids, backoff, errors."""
