//! Cairn's declarative model: parsing (native YAML, Stratos 4.1 JSON), validation and resolution.
//!
//! No I/O: callers hand in text and a source name; files are read elsewhere.

pub mod diagnostic;
pub mod spec;
pub mod types;

pub use diagnostic::{Diagnostic, Diagnostics, Location};
pub use spec::{AppSpec, ClusterSpec, ComponentSpec, GroupSpec};
pub use types::*;
