//! Cairn's control plane: store, engine loop, load balancer wiring, native and Stratos-compatible REST API
