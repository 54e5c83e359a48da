//! Cairn's data plane: HTTP proxying over a route table swapped atomically, with in-flight and rate counters
