"""HTTP simulators of the upstream services, shared by tests, benchmarks and the demo."""
