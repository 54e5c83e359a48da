//! A file checked on its own, and the problems of resolving its applications traced back to it.

use crate::catalog::{Catalog, Source, resolve, unknown_references};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::reader::{Key, Origins};
use crate::types::Bundle;
use crate::validate;

/// What one file holds, what is wrong with it on its own, and where each part of it came from.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    /// The artifacts read, unless the text could not be read as artifacts at all.
    pub bundle: Option<Bundle>,
    /// Its own problems: syntax, types, and the checks its artifacts pass alone.
    pub problems: Vec<Diagnostic>,
    origins: Origins,
}

impl CheckedFile {
    pub(crate) fn new(
        bundle: Option<Bundle>,
        mut problems: Vec<Diagnostic>,
        origins: Origins,
    ) -> Self {
        if let Some(bundle) = &bundle {
            problems.extend(validate::check_bundle(bundle, &origins));
        }
        CheckedFile {
            bundle,
            problems,
            origins,
        }
    }

    pub(crate) fn failed(source: &str, Diagnostics(problems): Diagnostics) -> Self {
        CheckedFile {
            bundle: None,
            problems,
            origins: Origins::new(source),
        }
    }

    /// Its artifacts if it has no problems, else all its problems.
    pub fn into_result(self) -> Result<Bundle, Diagnostics> {
        match self.bundle {
            Some(bundle) if self.problems.is_empty() => Ok(bundle),
            _ => Err(Diagnostics(self.problems)),
        }
    }

    /// The references of this file's artifacts to artifacts that `catalog` (which should hold
    /// them too) does not have, pointed at their places here. These are what Stratos refuses
    /// when an artifact is added: the network partitions and partitions of deployment and
    /// application policies, the cartridges of cartridge groups, and the cartridges, cartridge
    /// groups (with the members taken from their definitions) and autoscaling policies of
    /// applications. An application's deployment policies are left to [`resolve`], as Stratos
    /// leaves them to its deployment.
    pub fn unknown_references(&self, catalog: &Catalog) -> Vec<Diagnostic> {
        let Some(bundle) = &self.bundle else {
            return Vec::new();
        };
        unknown_references(catalog, bundle)
            .into_iter()
            .map(|problem| self.place(&problem).unwrap_or(problem))
            .collect()
    }

    /// A problem that [`resolve`] found in an artifact of this file, pointed at its line and
    /// path here; `None` when the artifact is not from this file.
    fn place(&self, problem: &Diagnostic) -> Option<Diagnostic> {
        let bundle = self.bundle.as_ref()?;
        let (key, prefix) = artifact_keys(bundle)
            .into_iter()
            .find(|(source, ..)| *source == problem.location.source)
            .map(|(_, key, prefix)| (key, prefix))?;
        let rest = problem.location.path.strip_prefix(prefix)?;
        let location = self.origins.find(&Key::new(format!("{}{rest}", key.0)))?;
        Some(Diagnostic {
            location,
            message: problem.message.clone(),
        })
    }
}

/// The problems of resolving `application` with `policy`, each pointed at the file among
/// `files` its artifact came from (the last to define it), or left as resolution names it.
pub fn resolve_in_files(
    catalog: &Catalog,
    application: &str,
    policy: &str,
    files: &[CheckedFile],
) -> Vec<Diagnostic> {
    let Err(Diagnostics(found)) = resolve(catalog, application, policy) else {
        return Vec::new();
    };
    found
        .into_iter()
        .map(|problem| {
            files
                .iter()
                .rev()
                .find_map(|file| file.place(&problem))
                .unwrap_or(problem)
        })
        .collect()
}

/// Each artifact of a bundle as resolution names it, its place in the bundle, and the part of
/// resolution's paths that place stands for.
fn artifact_keys(bundle: &Bundle) -> Vec<(String, Key, &'static str)> {
    let mut keys = Vec::new();
    for (i, application) in bundle.applications.iter().enumerate() {
        let source = Source::Application(&application.id).to_string();
        keys.push((source, Key::new("applications").index(i), "$"));
    }
    for (i, policy) in bundle.application_policies.iter().enumerate() {
        let source = Source::ApplicationPolicy(&policy.id).to_string();
        keys.push((source, Key::new("application_policies").index(i), "$"));
    }
    for (i, policy) in bundle.deployment_policies.iter().enumerate() {
        let source = Source::DeploymentPolicy(&policy.id).to_string();
        keys.push((source, Key::new("deployment_policies").index(i), "$"));
    }
    for (i, group) in bundle.cartridge_groups.iter().enumerate() {
        let source = Source::CartridgeGroup(&group.name).to_string();
        keys.push((source, Key::new("cartridge_groups").index(i), "$"));
    }
    for application in bundle.domain_mappings.keys() {
        let source = Source::DomainMappings(application).to_string();
        let key = Key::new(format!("domain_mappings[{application}]"));
        keys.push((source, key, "$.domain_mappings"));
    }
    keys
}
