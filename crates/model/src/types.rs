//! The declarative types: what users write, in either syntax, after parsing.
//!
//! Field names follow Stratos' vocabulary; units are explicit in names where they matter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A service type: how to run one kind of member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cartridge {
    /// Stratos' `type`: the name applications refer to.
    pub kind: String,
    /// The host name single-tenant clusters are reached under: `<app>.<alias>.<host>`.
    pub host: Option<String>,
    pub category: Option<String>,
    pub provider: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
    pub multi_tenant: bool,
    pub port_mappings: Vec<PortMapping>,
    /// The program and arguments a member runs; `None` runs the built-in workload.
    pub command: Option<Vec<String>>,
    /// A container image, for runtimes that run images.
    pub image: Option<String>,
    pub env: BTreeMap<String, String>,
    pub health: HealthCheck,
    /// Stratos' free-form `property` list, kept for the API's round trip.
    pub properties: BTreeMap<String, String>,
}

/// The cartridge property bounding how long the load balancer waits for a member's answer.
pub const RESPONSE_TIMEOUT_PROPERTY: &str = "response_timeout_ms";
/// The cartridge property that sets a member's CPU share in cores; one core where absent.
pub const CPU_CORES_PROPERTY: &str = "cpu_cores";
/// The cartridge property that sets a member's memory limit in MiB; the host's memory where absent.
pub const MEMORY_LIMIT_PROPERTY: &str = "memory_limit_mb";

impl Cartridge {
    /// The `response_timeout_ms` property when it is a positive whole number of milliseconds;
    /// validation reports any other value.
    pub fn response_timeout_ms(&self) -> Option<u64> {
        parse_positive_whole(self.properties.get(RESPONSE_TIMEOUT_PROPERTY)?)
    }
}

/// A whole number above 0, such as a timeout or a memory limit.
pub fn parse_positive_whole(value: &str) -> Option<u64> {
    value.trim().parse().ok().filter(|n| *n > 0)
}

/// A finite number of cores above 0, fractions allowed.
pub fn parse_cores(value: &str) -> Option<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|cores| cores.is_finite() && *cores > 0.0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Unique within the cartridge; Stratos' optional `name`, else `<protocol>-<port>`.
    pub name: String,
    pub protocol: Protocol,
    /// The port the member's program listens on inside its own namespace.
    pub port: u16,
    /// Where the load balancer listens for this cluster; `None` means not proxied.
    pub proxy_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failures after which an Active member is faulted.
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// The member is healthy while its process runs.
    Process,
    /// A TCP connect to the named port mapping succeeds.
    Tcp { port: String },
    /// An HTTP GET of `path` on the named port mapping answers 2xx or 3xx.
    Http { port: String, path: String },
}

/// A reusable set of cartridges and nested groups with their dependencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartridgeGroup {
    pub name: String,
    /// Cartridge types.
    pub cartridges: Vec<String>,
    pub groups: Vec<CartridgeGroup>,
    pub dependencies: Dependencies,
    pub group_scaling_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Dependencies {
    /// Each order is a chain: every component starts after the one before it is Active.
    pub startup_orders: Vec<Vec<ComponentRef>>,
    /// Each list scales together by the largest factor any member reports.
    pub scaling_dependents: Vec<Vec<ComponentRef>>,
    pub termination_behaviour: TerminationBehaviour,
}

/// A reference to a sibling component by alias: Stratos' `cartridge.x` / `group.y`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentRef {
    Cartridge(String),
    Group(String),
}

impl ComponentRef {
    pub fn alias(&self) -> &str {
        match self {
            ComponentRef::Cartridge(a) | ComponentRef::Group(a) => a,
        }
    }
}

impl std::fmt::Display for ComponentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComponentRef::Cartridge(a) => write!(f, "cartridge.{a}"),
            ComponentRef::Group(a) => write!(f, "group.{a}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TerminationBehaviour {
    /// A faulty member restarts its whole group instance.
    TerminateAll,
    /// A faulty member's dependents are stopped and restarted once it is back.
    TerminateDependents,
    /// Only the faulty member is replaced.
    #[default]
    TerminateNone,
}

/// The composite application as the user described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    pub id: String,
    pub alias: Option<String>,
    pub multi_tenant: bool,
    pub components: Components,
}

impl Application {
    /// Every cartridge and every group the application subscribes to, inside groups too.
    pub fn subscriptions(&self) -> (Vec<&CartridgeSubscription>, Vec<&GroupSubscription>) {
        fn walk<'a>(
            groups: &'a [GroupSubscription],
            cartridges: &'a [CartridgeSubscription],
            out: &mut (Vec<&'a CartridgeSubscription>, Vec<&'a GroupSubscription>),
        ) {
            out.0.extend(cartridges);
            for group in groups {
                out.1.push(group);
                walk(&group.groups, &group.cartridges, out);
            }
        }
        let mut out = (Vec::new(), Vec::new());
        walk(
            &self.components.groups,
            &self.components.cartridges,
            &mut out,
        );
        out
    }

    /// The alias of every cartridge the application uses, inside its groups too.
    pub fn cartridge_aliases(&self) -> Vec<&str> {
        let (cartridges, _) = self.subscriptions();
        cartridges.into_iter().map(|c| c.alias.as_str()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Components {
    pub groups: Vec<GroupSubscription>,
    pub cartridges: Vec<CartridgeSubscription>,
    pub dependencies: Dependencies,
}

/// A use of a cartridge group inside an application (or inside another group use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSubscription {
    /// The cartridge group's name.
    pub name: String,
    pub alias: String,
    pub min_instances: u32,
    pub max_instances: u32,
    pub group_scaling_enabled: bool,
    pub deployment_policy: Option<String>,
    pub groups: Vec<GroupSubscription>,
    pub cartridges: Vec<CartridgeSubscription>,
}

/// A use of a cartridge: it becomes one cluster per group instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartridgeSubscription {
    /// The cartridge's type.
    pub cartridge: String,
    pub alias: String,
    pub min: u32,
    pub max: u32,
    pub autoscaling_policy: Option<String>,
    pub deployment_policy: Option<String>,
}

/// Thresholds per factor; a factor without a threshold does not drive scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscalingPolicy {
    pub id: String,
    pub requests_in_flight: Option<f64>,
    /// Percent of the member's memory limit.
    pub memory_consumption: Option<f64>,
    /// Percent of the member's CPU share.
    pub load_average: Option<f64>,
    /// How the autoscaler averages, predicts and waits; Stratos' JSON leaves it at the defaults.
    #[serde(default)]
    pub timing: ScalingTiming,
}

/// The autoscaler's windows, horizon, cooldowns and tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScalingTiming {
    /// Each factor is averaged, and its derivatives fitted, over this window.
    pub window_ms: u64,
    /// How far ahead the prediction looks; zero turns prediction off.
    pub prediction_horizon_ms: u64,
    /// A lower need must hold this long before the cluster scales down.
    pub scale_down_stabilization_ms: u64,
    /// The least time between two scale-ups of a cluster.
    pub scale_up_cooldown_ms: u64,
    /// The least time between two scale-downs of a cluster.
    pub scale_down_cooldown_ms: u64,
    /// A relative band around the threshold inside which the size stays as it is.
    pub tolerance: f64,
    /// The longest a member that is removed gets to finish its requests; it stops as soon as it
    /// has none in flight.
    pub drain_ms: u64,
}

impl Default for ScalingTiming {
    fn default() -> Self {
        ScalingTiming {
            window_ms: 10_000,
            prediction_horizon_ms: 10_000,
            scale_down_stabilization_ms: 60_000,
            scale_up_cooldown_ms: 0,
            scale_down_cooldown_ms: 10_000,
            tolerance: 0.1,
            drain_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentPolicy {
    pub id: String,
    pub network_partitions: Vec<NetworkPartitionPlacement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkPartitionPlacement {
    /// A network partition's id.
    pub id: String,
    pub algorithm: PartitionAlgorithm,
    pub partitions: Vec<PartitionPlacement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionPlacement {
    /// A partition's id within the network partition.
    pub id: String,
    /// At most this many members of one cluster in this partition.
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionAlgorithm {
    /// Fill a partition up to its max before using the next.
    OneAfterAnother,
    /// Spread members evenly over the partitions.
    RoundRobin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationPolicy {
    pub id: String,
    pub algorithm: NetworkPartitionAlgorithm,
    pub network_partitions: Vec<String>,
    /// The groups bursting moves through, in order; each lists network partition ids.
    pub network_partition_groups: Vec<Vec<String>>,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPartitionAlgorithm {
    OneAfterAnother,
    AllAtOnce,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkPartition {
    pub id: String,
    pub provider: Option<String>,
    pub partitions: Vec<Partition>,
    /// Its own load balancer entry points: its members are served on each proxy port plus this.
    #[serde(default)]
    pub proxy_port_offset: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub id: String,
    pub properties: BTreeMap<String, String>,
}

/// A Stratos Kubernetes cluster definition, kept so its artifacts load and round-trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubernetesCluster {
    pub id: String,
    pub description: Option<String>,
    /// The file as it was written.
    pub raw: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainMapping {
    pub cartridge_alias: String,
    pub domain_name: String,
    pub context_path: Option<String>,
}

impl DomainMapping {
    /// Whether this maps `domain`: host names compare without case or a trailing dot.
    pub fn is_for(&self, domain: &str) -> bool {
        let bare = |name: &str| name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        bare(&self.domain_name) == bare(domain)
    }

    /// Mappings by the cartridge alias they route to, as an application's spec holds them.
    pub fn by_alias(mappings: &[DomainMapping]) -> BTreeMap<String, Vec<DomainMapping>> {
        let mut by_alias: BTreeMap<String, Vec<DomainMapping>> = BTreeMap::new();
        for mapping in mappings {
            by_alias
                .entry(mapping.cartridge_alias.clone())
                .or_default()
                .push(mapping.clone());
        }
        by_alias
    }

    /// Why the mapping cannot be used when its cartridge alias is not one of the application's.
    pub fn unknown_alias_message(&self) -> String {
        format!(
            "domain `{}` is mapped to `{}`, which is not a cartridge alias of the application",
            self.domain_name, self.cartridge_alias
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRepository {
    pub alias: Option<String>,
    pub repo_url: String,
    pub private_repo: bool,
}

/// Everything one file can declare; a Stratos JSON file fills one field, a YAML blueprint several.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Bundle {
    pub cartridges: Vec<Cartridge>,
    pub cartridge_groups: Vec<CartridgeGroup>,
    pub applications: Vec<Application>,
    pub autoscaling_policies: Vec<AutoscalingPolicy>,
    pub deployment_policies: Vec<DeploymentPolicy>,
    pub application_policies: Vec<ApplicationPolicy>,
    pub network_partitions: Vec<NetworkPartition>,
    pub kubernetes_clusters: Vec<KubernetesCluster>,
    /// Domain mappings by application id.
    pub domain_mappings: BTreeMap<String, Vec<DomainMapping>>,
    pub artifact_repositories: Vec<ArtifactRepository>,
    /// The application policy a YAML blueprint names for its application's deployment.
    pub deploy_with: Option<String>,
}

/// The kinds of artifact Stratos' API accepts, one per JSON file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    Cartridge,
    CartridgeGroup,
    Application,
    AutoscalingPolicy,
    DeploymentPolicy,
    ApplicationPolicy,
    NetworkPartition,
    KubernetesCluster,
    DomainMappings,
    ApplicationSignup,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 10] = [
        ArtifactKind::Cartridge,
        ArtifactKind::CartridgeGroup,
        ArtifactKind::Application,
        ArtifactKind::AutoscalingPolicy,
        ArtifactKind::DeploymentPolicy,
        ArtifactKind::ApplicationPolicy,
        ArtifactKind::NetworkPartition,
        ArtifactKind::KubernetesCluster,
        ArtifactKind::DomainMappings,
        ArtifactKind::ApplicationSignup,
    ];

    /// The kind in words, as messages name it.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Cartridge => "cartridge",
            ArtifactKind::CartridgeGroup => "cartridge group",
            ArtifactKind::Application => "application",
            ArtifactKind::AutoscalingPolicy => "autoscaling policy",
            ArtifactKind::DeploymentPolicy => "deployment policy",
            ArtifactKind::ApplicationPolicy => "application policy",
            ArtifactKind::NetworkPartition => "network partition",
            ArtifactKind::KubernetesCluster => "kubernetes cluster",
            ArtifactKind::DomainMappings => "domain mappings",
            ArtifactKind::ApplicationSignup => "application signup",
        }
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ComponentRef {
    /// Reads Stratos' `cartridge.<alias>` or `group.<alias>`.
    pub fn parse(text: &str) -> Result<ComponentRef, String> {
        let text = text.trim();
        let (make, alias): (fn(String) -> ComponentRef, &str) =
            if let Some(alias) = text.strip_prefix("cartridge.") {
                (ComponentRef::Cartridge, alias)
            } else if let Some(alias) = text.strip_prefix("group.") {
                (ComponentRef::Group, alias)
            } else {
                return Err(format!(
                    "expected `cartridge.<alias>` or `group.<alias>`, found `{text}`"
                ));
            };
        let alias = alias.trim();
        if alias.is_empty() {
            return Err(format!("`{text}` names no alias"));
        }
        Ok(make(alias.to_string()))
    }
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL_MS: u64 = 1000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

    /// The check a cartridge gets when it names none: HTTP GET /healthz on the first http
    /// port mapping, else a TCP connect to the first port, else the process alone.
    pub fn for_ports(ports: &[PortMapping]) -> HealthCheck {
        HealthCheck {
            probe: Probe::for_ports(ports),
            interval_ms: Self::DEFAULT_INTERVAL_MS,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
        }
    }
}

impl Probe {
    pub fn for_ports(ports: &[PortMapping]) -> Probe {
        if let Some(http) = ports.iter().find(|p| p.protocol == Protocol::Http) {
            return Probe::Http {
                port: http.name.clone(),
                path: "/healthz".into(),
            };
        }
        match ports.first() {
            Some(first) => Probe::Tcp {
                port: first.name.clone(),
            },
            None => Probe::Process,
        }
    }

    /// The port mapping the probe uses, if any.
    pub fn port(&self) -> Option<&str> {
        match self {
            Probe::Process => None,
            Probe::Tcp { port } | Probe::Http { port, .. } => Some(port),
        }
    }
}

impl PortMapping {
    /// Stratos' default name for an unnamed mapping.
    pub fn default_name(protocol: Protocol, port: u16) -> String {
        format!("{}-{port}", protocol.name())
    }
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
        }
    }
}

impl AutoscalingPolicy {
    /// The id of the policy used when a cartridge names none.
    pub const DEFAULT_ID: &'static str = "default";

    /// The policy used when a cartridge names none.
    pub fn fallback() -> AutoscalingPolicy {
        AutoscalingPolicy {
            id: Self::DEFAULT_ID.into(),
            requests_in_flight: Some(50.0),
            memory_consumption: Some(80.0),
            load_average: Some(80.0),
            timing: ScalingTiming::default(),
        }
    }
}

impl NetworkPartitionAlgorithm {
    /// The bursting groups when a policy lists none: one per partition for
    /// `one-after-another`, a single group of all for `all-at-once`.
    pub fn default_groups(self, network_partitions: &[String]) -> Vec<Vec<String>> {
        match self {
            NetworkPartitionAlgorithm::OneAfterAnother => network_partitions
                .iter()
                .map(|id| vec![id.clone()])
                .collect(),
            NetworkPartitionAlgorithm::AllAtOnce if network_partitions.is_empty() => Vec::new(),
            NetworkPartitionAlgorithm::AllAtOnce => vec![network_partitions.to_vec()],
        }
    }
}

impl ApplicationPolicy {
    /// Reads Stratos' `networkPartitionGroups` property: groups separated by `,`, members by `|`.
    pub fn parse_partition_groups(text: &str) -> Vec<Vec<String>> {
        text.split(',')
            .map(|group| {
                group
                    .split('|')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|group| !group.is_empty())
            .collect()
    }
}
