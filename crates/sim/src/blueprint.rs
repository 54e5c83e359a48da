//! From a YAML blueprint to the application the engine runs, and the cluster the trace loads.

use cairn_model::{AppSpec, Catalog, ClusterSpec, ComponentSpec, GroupSpec};

use crate::SimError;

/// Parses, validates and resolves a blueprint with the application policy it names.
pub fn app_from_blueprint(source: &str, text: &str) -> Result<AppSpec, SimError> {
    let bundle =
        cairn_model::parse_yaml(source, text).map_err(|e| SimError::Blueprint(e.to_string()))?;
    let problems = cairn_model::validate_bundle(&bundle);
    if !problems.0.is_empty() {
        return Err(SimError::Blueprint(problems.to_string()));
    }
    let Some(application) = bundle.applications.first().map(|a| a.id.clone()) else {
        return Err(SimError::Blueprint(format!("{source}: no application")));
    };
    let Some(policy) = bundle.deploy_with.clone() else {
        return Err(SimError::Blueprint(format!(
            "{source}: no application policy to deploy with"
        )));
    };
    let mut catalog = Catalog::default();
    catalog.add_bundle(bundle);
    cairn_model::resolve(&catalog, &application, &policy)
        .map_err(|e| SimError::Blueprint(e.to_string()))
}

/// The cluster named `alias`; without one, the cluster that takes the outside traffic: among
/// those that can scale (a threshold and room between min and max), the only one, or else the
/// only one with a proxied port nearest the application's root.
pub fn scaled_cluster<'a>(
    spec: &'a AppSpec,
    alias: Option<&str>,
) -> Result<&'a ClusterSpec, SimError> {
    let mut clusters = Vec::new();
    collect_clusters(&spec.root, 0, &mut clusters);
    if let Some(alias) = alias {
        return clusters
            .into_iter()
            .map(|(c, _)| c)
            .find(|c| c.alias == alias)
            .ok_or_else(|| SimError::NoCluster(alias.to_string()));
    }
    let scalable: Vec<(&ClusterSpec, usize)> = clusters
        .into_iter()
        .filter(|(c, _)| {
            let p = &c.autoscaling;
            let threshold = p
                .requests_in_flight
                .or(p.load_average)
                .or(p.memory_consumption);
            threshold.is_some() && c.max > c.min
        })
        .collect();
    if let [(only, _)] = scalable.as_slice() {
        return Ok(only);
    }
    let proxied: Vec<&(&ClusterSpec, usize)> = scalable
        .iter()
        .filter(|(c, _)| {
            c.cartridge
                .port_mappings
                .iter()
                .any(|p| p.proxy_port.is_some())
        })
        .collect();
    let shallowest = proxied.iter().map(|(_, depth)| *depth).min();
    let front: Vec<&ClusterSpec> = proxied
        .iter()
        .filter(|(_, depth)| Some(*depth) == shallowest)
        .map(|(c, _)| *c)
        .collect();
    match (front.as_slice(), scalable.is_empty()) {
        ([only], _) => Ok(only),
        (_, true) => Err(SimError::AmbiguousCluster(
            "no cluster can scale: none has a threshold and a max above its min".into(),
        )),
        _ => Err(SimError::AmbiguousCluster(format!(
            "several clusters can scale ({}): choose one",
            scalable
                .iter()
                .map(|(c, _)| c.alias.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn collect_clusters<'a>(
    group: &'a GroupSpec,
    depth: usize,
    into: &mut Vec<(&'a ClusterSpec, usize)>,
) {
    for child in &group.children {
        match child {
            ComponentSpec::Cluster(c) => into.push((c, depth)),
            ComponentSpec::Group(g) => collect_clusters(g, depth + 1, into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_TIER: &str = include_str!("../../../examples/three-tier.yaml");
    const MINIMAL: &str = include_str!("../../../examples/minimal.yaml");

    fn check(text: &str, alias: Option<&str>, expected: Result<&str, &str>) {
        let got = app_from_blueprint("b.yaml", text)
            .and_then(|spec| scaled_cluster(&spec, alias).map(|c| c.alias.clone()));
        let expected = expected.map(str::to_string).map_err(str::to_string);
        assert_eq!(got.map_err(|e| e.to_string()), expected, "{alias:?}");
    }

    #[test]
    fn picks_the_front_end_unless_told() {
        check(THREE_TIER, None, Ok("web"));
        check(THREE_TIER, Some("api"), Ok("api"));
        check(
            THREE_TIER,
            Some("nope"),
            Err("application has no cluster nope"),
        );
        check(
            MINIMAL,
            None,
            Err("no cluster can scale: none has a threshold and a max above its min"),
        );
        assert!(app_from_blueprint("b.yaml", "application: [").is_err());
    }
}
