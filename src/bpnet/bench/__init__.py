"""Speed benchmarks (``bpnet bench ...``): each returns a JSON-able dict of measurements."""
