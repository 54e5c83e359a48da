//! The built-in workload: a small HTTP server members can run for demos, tests and benchmarks
