//! Cairn's declarative model: parsing (native YAML, Stratos 4.1 JSON), validation and resolution.
//!
//! No I/O: callers hand in text and a source name; files are read elsewhere. Both syntaxes
//! read into one positioned value tree and convert through one path-tracking reader, so
//! their errors share wording and always name the source, the line and the path.

mod catalog;
mod check;
pub mod diagnostic;
mod json;
mod reader;
mod references;
pub mod spec;
mod stratos;
mod stratos_out;
mod tree;
pub mod types;
mod validate;
mod yaml;
mod yaml_tree;

pub use catalog::{Catalog, resolve};
pub use check::{CheckedFile, resolve_in_files};
pub use diagnostic::{Diagnostic, Diagnostics, Location};
pub use spec::{AppSpec, ClusterSpec, ComponentSpec, GroupSpec};
pub use stratos::{
    check_stratos, check_stratos_artifact, detect_stratos_kind, parse_domain_mappings,
    parse_stratos, parse_stratos_any,
};
pub use types::*;
pub use validate::validate_bundle;
pub use yaml::{check_yaml, parse_yaml};

/// The JSON value of a document as Stratos accepts it (trailing commas allowed), to hand back as written.
pub fn lenient_json(text: &str) -> Option<serde_json::Value> {
    json::parse(text).ok().map(|node| node.to_json())
}
