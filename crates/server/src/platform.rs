//! The control plane's core: the catalog, the engine's loop, and the wiring to the agent and
//! the load balancer. The APIs call into it; nothing else changes state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_agent::{Agent, AgentConfig};
use cairn_engine::{
    Action, AppView, Engine, EngineConfig, EngineError, Event, Millis, Observation, Output, State,
};
use cairn_lb::{DEFAULT_DRAIN_GRACE, LbStats, LoadBalancer};
use cairn_model::{
    AppSpec, ArtifactKind, Bundle, Catalog, CheckedFile, Diagnostic, Diagnostics, DomainMapping,
    Location,
};
use cairn_runtime::{ProcessRuntime, RunningMember};
use cairn_store::{RedbStore, Store, StoreExt, Txn};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::ServerError;
use crate::events::EventLog;
use crate::routes::{
    ProxyPort, REBIND, RoutingProblem, bind_failed, lb_problems, port_clash, proxy_ports,
    route_table,
};

const CATALOG_KEY: &str = "catalog";
const ENGINE_KEY: &str = "engine/state";
/// How often the engine is given the time, for start timeouts.
const TICK: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub data_dir: PathBuf,
    /// Where the load balancer listens: proxy port plus this offset.
    pub proxy_port_offset: u16,
    pub proxy_bind: std::net::IpAddr,
    /// Threads the load balancer serves on.
    pub proxy_threads: std::num::NonZeroUsize,
    /// What cartridges without a command run.
    pub workload_command: Vec<String>,
    pub host: String,
    pub stop_grace: Duration,
}

/// A deployed application in the list of applications.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AppSummary {
    pub id: String,
    /// `Created` for an application that is registered but not deployed.
    pub status: String,
    pub deployed: bool,
    pub members: usize,
    pub active_members: usize,
    /// The members the engine keeps, over every cluster: what `members` grows to.
    pub wanted_members: u32,
}

/// What reads see: refreshed after every step of the engine.
#[derive(Debug, Default)]
struct Snapshot {
    views: BTreeMap<String, AppView>,
    /// Per deployed application: its application policy and network partitions.
    placements: BTreeMap<String, (String, Vec<String>)>,
    /// The ports the deployed applications ask the load balancer for.
    proxy_ports: Vec<ProxyPort>,
}

/// An API call waiting for the step it caused to be stored, with its answer.
type Reply = (
    oneshot::Sender<Result<(), PlatformError>>,
    Result<(), PlatformError>,
);

enum Command {
    /// With the token of its entry among the deployments in flight, which the step clears.
    Deploy(
        Box<AppSpec>,
        u64,
        oneshot::Sender<Result<(), PlatformError>>,
    ),
    Undeploy(String, oneshot::Sender<Result<(), PlatformError>>),
    Scale {
        application: String,
        alias: String,
        size: Option<u32>,
        reply: oneshot::Sender<Result<(), PlatformError>>,
    },
    SetDomainMappings {
        application: String,
        mappings: BTreeMap<String, Vec<DomainMapping>>,
        reply: oneshot::Sender<Result<(), PlatformError>>,
    },
    /// Stop every member and the loop; desired state stays stored.
    Shutdown(oneshot::Sender<()>),
}

/// Why a request to the platform was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl PlatformError {
    pub fn unknown_application(id: &str) -> PlatformError {
        PlatformError::NotFound(format!("application {id} not found"))
    }

    /// A request body that cannot be taken, and where in it.
    pub fn invalid_body(
        line: Option<(usize, usize)>,
        path: &str,
        message: String,
    ) -> PlatformError {
        PlatformError::Invalid(cairn_model::Diagnostics(vec![cairn_model::Diagnostic {
            location: cairn_model::Location {
                source: "request body".into(),
                line,
                path: path.into(),
            },
            message,
        }]))
    }
}

impl From<EngineError> for PlatformError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::AlreadyDeployed(_) => PlatformError::Conflict(e.to_string()),
            EngineError::NotDeployed(_) => PlatformError::Conflict(e.to_string()),
            EngineError::NoCluster { .. } => PlatformError::NotFound(e.to_string()),
            EngineError::OutOfRange { .. } => {
                PlatformError::invalid_body(None, "$.size", e.to_string())
            }
        }
    }
}

pub struct Platform {
    config: PlatformConfig,
    store: Arc<RedbStore>,
    catalog: Mutex<Catalog>,
    commands: mpsc::UnboundedSender<Command>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Deployments sent to the engine and not yet in the views, by token; entered under the
    /// catalog's lock, so a delete or another deployment that takes the lock later sees them,
    /// and cleared by the engine's step once the views show them.
    deploying: Mutex<BTreeMap<u64, InFlight>>,
    next_token: std::sync::atomic::AtomicU64,
    events: EventLog,
    lb: LoadBalancer,
}

/// Whether the artifacts being registered may, must or must not exist already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Each is new: one that exists is a conflict (Stratos' POST).
    New,
    /// Each exists and is replaced (Stratos' PUT).
    Update,
    /// Either (a blueprint).
    Any,
}

/// A deployment on its way to the engine: what it will hold once deployed.
#[derive(Debug, Clone)]
struct InFlight {
    application: String,
    application_policy: String,
    network_partitions: Vec<String>,
    ports: Vec<ProxyPort>,
}

/// A domain mapping to a cartridge alias its application does not have, at `path` in `source`.
pub fn unknown_alias(source: &str, path: String, mapping: &DomainMapping) -> Diagnostic {
    Diagnostic {
        location: Location {
            source: source.to_string(),
            line: None,
            path,
        },
        message: mapping.unknown_alias_message(),
    }
}

fn that_or_those(count: usize) -> &'static str {
    if count == 1 { "that" } else { "those" }
}

/// Each network partition's own offset of its proxy ports.
fn partition_offsets(catalog: &Catalog) -> BTreeMap<String, u16> {
    let partitions = catalog.network_partitions.values();
    partitions
        .map(|np| (np.id.clone(), np.proxy_port_offset))
        .collect()
}

/// A lock whose holder panicked still guards data that each step leaves whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now() -> Millis {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Millis(since.as_millis() as u64)
}

impl Platform {
    /// Opens the data directory, recovers what ran before, and starts the engine's loop.
    pub async fn start(config: PlatformConfig) -> Result<Arc<Platform>, ServerError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ServerError::Io(format!("{}: {e}", config.data_dir.display())))?;
        let store = Arc::new(
            RedbStore::open(&config.data_dir).map_err(|e| ServerError::Store(e.to_string()))?,
        );
        let catalog: Catalog = store
            .get_json(CATALOG_KEY)
            .map_err(|e| ServerError::Store(e.to_string()))?
            .unwrap_or_default();
        let state: State = store
            .get_json(ENGINE_KEY)
            .map_err(|e| ServerError::Store(e.to_string()))?
            .unwrap_or_default();
        let events =
            EventLog::load(store.as_ref()).map_err(|e| ServerError::Store(e.to_string()))?;
        let mut engine = Engine::restore(EngineConfig::default(), state);
        engine.resume(now());
        let runtime = ProcessRuntime::new(config.data_dir.clone());
        let log_dir = config.data_dir.join("logs");
        let (agent, observations) = Agent::new(
            runtime,
            AgentConfig {
                host: config.host.clone(),
                log_dir,
                workload_command: config.workload_command.clone(),
                stop_grace: config.stop_grace,
                proxy_port_offset: config.proxy_port_offset,
            },
        );
        let lb = LoadBalancer::on_own_threads(
            config.proxy_bind,
            DEFAULT_DRAIN_GRACE,
            config.proxy_threads,
        )
        .map_err(|e| ServerError::Io(format!("cannot start the proxy's threads: {e}")))?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let platform = Arc::new(Platform {
            lb,
            config,
            store,
            catalog: Mutex::new(catalog),
            commands,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            deploying: Mutex::new(BTreeMap::new()),
            next_token: std::sync::atomic::AtomicU64::new(0),
            events,
        });
        let mut looped = EngineLoop {
            platform: platform.clone(),
            engine,
            agent,
            persisted: Vec::new(),
            published: None,
            routing_problems: BTreeSet::new(),
            republish_at: None,
            deploys_handled: Vec::new(),
        };
        looped.persisted = serde_json::to_vec(looped.engine.state()).unwrap_or_default();
        let recovered = looped.recover().await;
        looped.finish_step(recovered, Vec::new()).await;
        tokio::spawn(looped.run(command_rx, observations));
        Ok(platform)
    }

    pub fn config(&self) -> &PlatformConfig {
        &self.config
    }

    pub fn catalog(&self) -> Catalog {
        self.lock_catalog().clone()
    }

    fn lock_catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        lock(&self.catalog)
    }

    /// Registers every artifact of a file. As Stratos does, refuses one that names an artifact
    /// neither registered nor in the file, and a replacement that takes away what another
    /// registered artifact names. `document` is the file's one artifact as the client wrote it,
    /// to answer reads in the same shape; an artifact it changes loses its earlier document.
    pub fn add(
        &self,
        file: &CheckedFile,
        registration: Registration,
        document: Option<&serde_json::Value>,
    ) -> Result<(), PlatformError> {
        let bundle = file.clone().into_result().map_err(PlatformError::Invalid)?;
        let mut catalog = self.lock_catalog();
        let ids = bundle_ids(&bundle);
        let exists = |(kind, id): &&(ArtifactKind, String)| catalog.contains(*kind, id);
        match registration {
            Registration::New => {
                if let Some((kind, id)) = ids.iter().find(exists) {
                    let kind = kind.name();
                    return Err(PlatformError::Conflict(format!(
                        "{kind} {id} already exists"
                    )));
                }
            }
            Registration::Update => {
                if let Some((kind, id)) = ids.iter().find(|x| !exists(x)) {
                    let kind = kind.name();
                    return Err(PlatformError::NotFound(format!("{kind} {id} not found")));
                }
            }
            Registration::Any => {}
        }
        let deployed = self.deployed();
        let deployed_here = bundle
            .applications
            .iter()
            .find(|a| deployed.contains(&a.id))
            .map(|a| a.id.clone());
        let mut next = catalog.clone();
        next.add_bundle(bundle);
        let unknown = file.unknown_references(&next);
        if !unknown.is_empty() {
            return Err(PlatformError::Invalid(Diagnostics(unknown)));
        }
        let broken = catalog.broken_by(&next);
        if !broken.is_empty() {
            return Err(PlatformError::Conflict(format!(
                "it would leave {}, which it takes away: change {} first",
                broken.join(", "),
                that_or_those(broken.len())
            )));
        }
        // A deployed application's artifacts may be given again as they are, not changed.
        if let Some(id) = deployed_here
            && next != *catalog
        {
            return Err(PlatformError::Conflict(format!(
                "application {id} is deployed: undeploy it before changing it or the artifacts given with it"
            )));
        }
        let documents = match (document, ids.as_slice()) {
            (Some(document), [(kind, id)]) => Txn::new()
                .put_json(&document_key(*kind, id), document)
                .map_err(|e| PlatformError::Internal(e.to_string()))?,
            // Only what changed loses the shape a client wrote it in.
            _ => ids
                .iter()
                .filter(|(kind, id)| !catalog.same_artifact(&next, *kind, id))
                .fold(Txn::new(), |txn, (kind, id)| {
                    txn.delete(&document_key(*kind, id))
                }),
        };
        self.store_catalog(&mut catalog, next, documents)?;
        Ok(())
    }

    /// Changes an application's domain mappings; a deployed application's load balancer routes
    /// by them at once. Nothing is stored when `change` fails or adds a mapping to a cartridge
    /// alias the application does not have.
    pub async fn change_domain_mappings(
        &self,
        app: &str,
        change: impl FnOnce(&mut Vec<DomainMapping>) -> Result<(), PlatformError>,
    ) -> Result<(), PlatformError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut catalog = self.lock_catalog();
            let Some(application) = catalog.applications.get(app) else {
                return Err(PlatformError::unknown_application(app));
            };
            let aliases = application.cartridge_aliases();
            let before = catalog
                .domain_mappings
                .get(app)
                .cloned()
                .unwrap_or_default();
            let mut mappings = before.clone();
            change(&mut mappings)?;
            // Only what the change brings is checked, so a mapping left stale by a replaced
            // application can still be removed.
            let problems: Vec<Diagnostic> = mappings
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    !before.contains(m) && !aliases.contains(&m.cartridge_alias.as_str())
                })
                .map(|(i, m)| {
                    let path = format!("$.domain_mappings[{i}].cartridge_alias");
                    unknown_alias(&format!("domain mappings of {app}"), path, m)
                })
                .collect();
            if !problems.is_empty() {
                return Err(PlatformError::Invalid(Diagnostics(problems)));
            }
            let by_alias = DomainMapping::by_alias(&mappings);
            let mut next = catalog.clone();
            if mappings.is_empty() {
                next.domain_mappings.remove(app);
            } else {
                next.domain_mappings.insert(app.to_string(), mappings);
            }
            self.store_catalog(&mut catalog, next, Txn::new())?;
            // Sent under the lock, so the engine sees changes and deploys in the catalog's order.
            self.send(Command::SetDomainMappings {
                application: app.to_string(),
                mappings: by_alias,
                reply: tx,
            })?;
        }
        rx.await.map_err(|_| stopped())?
    }

    /// Makes `next` the catalog once it is stored, so a failed write leaves the catalog as it was.
    /// `also` is written in the same transaction.
    fn store_catalog(
        &self,
        catalog: &mut Catalog,
        next: Catalog,
        also: Txn,
    ) -> Result<(), PlatformError> {
        let internal = |e: cairn_store::StoreError| PlatformError::Internal(e.to_string());
        let txn = also.put_json(CATALOG_KEY, &next).map_err(internal)?;
        self.store.txn(txn).map_err(internal)?;
        *catalog = next;
        Ok(())
    }

    pub fn document(&self, kind: ArtifactKind, id: &str) -> Option<serde_json::Value> {
        self.store.get_json(&document_key(kind, id)).ok().flatten()
    }

    /// Removes an artifact unless a deployed application, or another registered artifact, uses it.
    pub fn remove(&self, kind: ArtifactKind, id: &str) -> Result<(), PlatformError> {
        let mut catalog = self.lock_catalog();
        if !catalog.contains(kind, id) {
            return Err(PlatformError::NotFound(format!(
                "{} {id} not found",
                kind.name()
            )));
        }
        let deployed = self.deployed();
        if kind == ArtifactKind::Application && self.is_undeploying(id) {
            return Err(PlatformError::Conflict(format!(
                "application {id} is being undeployed: delete it once it is gone"
            )));
        }
        if kind == ArtifactKind::Application && deployed.contains(id) {
            return Err(PlatformError::Conflict(format!(
                "application {id} is deployed: undeploy it first"
            )));
        }
        let mut users: Vec<String> = catalog
            .applications_using(kind, id)
            .into_iter()
            .filter(|app| deployed.contains(app))
            .collect();
        // Which application policy and partitions a deployment uses is deployment state.
        for (app, policy, partitions) in &self.placements() {
            let uses = match kind {
                ArtifactKind::ApplicationPolicy => policy == id,
                ArtifactKind::NetworkPartition => partitions.iter().any(|p| p == id),
                _ => false,
            };
            if uses && !users.contains(app) {
                users.push(app.clone());
            }
        }
        if !users.is_empty() {
            return Err(PlatformError::Conflict(format!(
                "{} {id} is used by deployed application {}",
                kind.name(),
                users.join(", ")
            )));
        }
        // As in Stratos, what a registered artifact names stays until that artifact goes.
        let referrers: Vec<String> = catalog
            .referrers(kind, id)
            .into_iter()
            .map(|(kind, name)| format!("{} {name}", kind.name()))
            .collect();
        if !referrers.is_empty() {
            return Err(PlatformError::Conflict(format!(
                "{} {id} is used by {}: delete or change {} first",
                kind.name(),
                referrers.join(", "),
                that_or_those(referrers.len())
            )));
        }
        let mut next = catalog.clone();
        next.remove(kind, id);
        let document = Txn::new().delete(&document_key(kind, id));
        self.store_catalog(&mut catalog, next, document)?;
        Ok(())
    }

    /// Resolves and deploys an application; returns once the deployment is stored.
    pub async fn deploy(
        &self,
        application: &str,
        application_policy: &str,
    ) -> Result<(), PlatformError> {
        self.refuse_while_undeploying(application)?;
        let (tx, rx) = oneshot::channel();
        {
            let catalog = self.lock_catalog();
            if !catalog
                .application_policies
                .contains_key(application_policy)
            {
                return Err(PlatformError::NotFound(format!(
                    "application policy {application_policy} not found"
                )));
            }
            let spec = cairn_model::resolve(&catalog, application, application_policy).map_err(
                |found| {
                    let problems = self.resolve_in_documents(
                        &catalog,
                        application,
                        application_policy,
                        &found,
                    );
                    PlatformError::Invalid(Diagnostics(problems))
                },
            )?;
            let ports = self.free_proxy_ports(&spec, &catalog)?;
            let token = self
                .next_token
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let in_flight = InFlight {
                application: application.to_string(),
                application_policy: application_policy.to_string(),
                network_partitions: spec
                    .network_partition_groups
                    .iter()
                    .flatten()
                    .cloned()
                    .collect(),
                ports,
            };
            lock(&self.deploying).insert(token, in_flight);
            // Sent under the lock, so a domain mapping change reaches the engine after it.
            if let Err(e) = self.send(Command::Deploy(Box::new(spec), token, tx)) {
                lock(&self.deploying).remove(&token);
                return Err(e);
            }
        }
        rx.await.map_err(|_| stopped())?
    }

    /// Each deployed application, or one on its way, with its application policy and network
    /// partitions.
    fn placements(&self) -> Vec<(String, String, Vec<String>)> {
        // Deployments on the way first: one leaves them only once the views show it.
        let deploying = lock(&self.deploying).clone();
        let snapshot = self.read_snapshot();
        let deployed = snapshot
            .placements
            .iter()
            .map(|(app, (policy, partitions))| (app.clone(), policy.clone(), partitions.clone()));
        let on_the_way = deploying.values().map(|d| {
            let partitions = d.network_partitions.clone();
            (
                d.application.clone(),
                d.application_policy.clone(),
                partitions,
            )
        });
        deployed.chain(on_the_way).collect()
    }

    /// The problems of resolving an application, pointed at the paths of the documents their
    /// artifacts were posted as (Stratos' field names), where there are such documents.
    fn resolve_in_documents(
        &self,
        catalog: &Catalog,
        application: &str,
        policy: &str,
        found: &Diagnostics,
    ) -> Vec<Diagnostic> {
        // Longer names first: `application policy p` is not an application `policy p`.
        let kinds = [
            ArtifactKind::ApplicationPolicy,
            ArtifactKind::Application,
            ArtifactKind::CartridgeGroup,
            ArtifactKind::DeploymentPolicy,
        ];
        let artifacts: BTreeSet<(ArtifactKind, String)> = found
            .0
            .iter()
            .filter_map(|problem| {
                let source = &problem.location.source;
                kinds.into_iter().find_map(|kind| {
                    let id = source.strip_prefix(kind.name())?.strip_prefix(' ')?;
                    catalog.contains(kind, id).then(|| (kind, id.to_string()))
                })
            })
            .collect();
        let files: Vec<CheckedFile> = artifacts
            .into_iter()
            .filter_map(|(kind, id)| {
                let document = self.document(kind, &id)?.to_string();
                let source = format!("{} {id}", kind.name());
                Some(cairn_model::check_stratos_artifact(
                    kind, &source, &document,
                ))
            })
            .collect();
        let mut problems = cairn_model::resolve_in_files(catalog, application, policy, &files);
        // A document's lines are those of its stored form, not of what the client sent.
        for problem in &mut problems {
            problem.location.line = None;
        }
        problems
    }

    /// The ports the application would ask the load balancer for, unless another application
    /// holds one of them in a way the two cannot share.
    pub fn free_proxy_ports(
        &self,
        spec: &AppSpec,
        catalog: &Catalog,
    ) -> Result<Vec<ProxyPort>, PlatformError> {
        let offset = self.config.proxy_port_offset;
        let wanted = proxy_ports(spec, offset, &partition_offsets(catalog));
        // Deployments on the way first: one leaves them only once the views show it.
        let mut held: Vec<ProxyPort> = lock(&self.deploying)
            .values()
            .flat_map(|d| d.ports.clone())
            .collect();
        held.extend(self.read_snapshot().proxy_ports.iter().cloned());
        if let Some((want, have)) = port_clash(&wanted, &held) {
            return Err(PlatformError::Conflict(format!(
                "{} proxy port {} of {}/{} is taken by {}/{} ({}): give one of them another proxy port",
                want.protocol.name(),
                want.listen,
                want.application,
                want.alias,
                have.application,
                have.alias,
                have.protocol.name()
            )));
        }
        Ok(wanted)
    }

    /// Starts undeploying; returns once that is stored.
    pub async fn undeploy(&self, application: &str) -> Result<(), PlatformError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Undeploy(application.to_string(), tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Fixes a cluster's size (suspending its autoscaling), or with `None` resumes autoscaling.
    pub async fn scale(
        &self,
        application: &str,
        alias: &str,
        size: Option<u32>,
    ) -> Result<(), PlatformError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Scale {
            application: application.to_string(),
            alias: alias.to_string(),
            size,
            reply: tx,
        })?;
        rx.await.map_err(|_| stopped())?
    }

    fn send(&self, command: Command) -> Result<(), PlatformError> {
        self.commands.send(command).map_err(|_| stopped())
    }

    pub fn view(&self, application: &str) -> Option<AppView> {
        self.read_snapshot().views.get(application).cloned()
    }

    /// Whether the application is registered, deployed or not.
    pub fn has_application(&self, application: &str) -> bool {
        self.lock_catalog().applications.contains_key(application)
    }

    /// A deployment of an application being undeployed waits for it to be gone.
    pub fn refuse_while_undeploying(&self, application: &str) -> Result<(), PlatformError> {
        if self.is_undeploying(application) {
            return Err(PlatformError::Conflict(format!(
                "application {application} is being undeployed: deploy it once it is gone"
            )));
        }
        Ok(())
    }

    /// Whether the application is deployed and on its way out.
    pub fn is_undeploying(&self, application: &str) -> bool {
        self.view(application)
            .is_some_and(|view| view.status == cairn_engine::Status::Terminating)
    }

    pub fn is_deployed(&self, application: &str) -> bool {
        self.read_snapshot().views.contains_key(application)
    }

    /// The ids of the applications that are deployed or being deployed.
    pub fn deployed(&self) -> BTreeSet<String> {
        // Deployments on the way first: one leaves them only once the views show it.
        let mut ids: BTreeSet<String> = lock(&self.deploying)
            .values()
            .map(|d| d.application.clone())
            .collect();
        ids.extend(self.read_snapshot().views.keys().cloned());
        ids
    }

    /// Every registered application, deployed or not.
    pub fn applications(&self) -> Vec<AppSummary> {
        let snapshot = self.read_snapshot();
        let catalog = self.lock_catalog();
        let mut ids: Vec<&String> = catalog.applications.keys().collect();
        ids.extend(
            snapshot
                .views
                .keys()
                .filter(|id| !catalog.applications.contains_key(*id)),
        );
        ids.sort();
        ids.iter()
            .map(|id| match snapshot.views.get(*id) {
                Some(view) => {
                    let mut members = Vec::new();
                    visit_view_members(view, &mut |m| members.push(m.status));
                    let mut wanted_members = 0;
                    visit_view_clusters(view, &mut |c| wanted_members += c.desired);
                    AppSummary {
                        id: id.to_string(),
                        status: format!("{:?}", view.status),
                        deployed: true,
                        members: members.len(),
                        active_members: members
                            .iter()
                            .filter(|s| **s == cairn_engine::MemberStatus::Active)
                            .count(),
                        wanted_members,
                    }
                }
                None => AppSummary {
                    id: id.to_string(),
                    status: "Created".into(),
                    deployed: false,
                    members: 0,
                    active_members: 0,
                    wanted_members: 0,
                },
            })
            .collect()
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    pub fn lb_stats(&self) -> LbStats {
        self.lb.stats()
    }

    /// Member ids of one cluster of a deployed application, oldest first.
    pub fn cluster_members(&self, application: &str, alias: &str) -> Option<Vec<String>> {
        let view = self.view(application)?;
        let mut found = None;
        visit_view_clusters(&view, &mut |c| {
            if c.alias == alias {
                found
                    .get_or_insert_with(Vec::new)
                    .extend(c.members.iter().map(|m| m.id.clone()));
            }
        });
        found
    }

    pub fn log_dir(&self) -> PathBuf {
        self.config.data_dir.join("logs")
    }

    fn read_snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops every member and the engine's loop, then the load balancer; stored state stays.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        self.lb.shutdown().await;
    }
}

/// Where an artifact's document is kept; the id is escaped so any id makes a valid key.
fn document_key(kind: ArtifactKind, id: &str) -> String {
    let escaped: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c.to_string()
            } else {
                format!("%{:02x}", c as u32)
            }
        })
        .collect();
    format!("documents/{}/{escaped}", kind.name().replace(' ', "-"))
}

fn stopped() -> PlatformError {
    PlatformError::Internal("the engine's loop has stopped".into())
}

fn bundle_ids(bundle: &Bundle) -> Vec<(ArtifactKind, String)> {
    let mut ids = Vec::new();
    ids.extend(
        bundle
            .cartridges
            .iter()
            .map(|x| (ArtifactKind::Cartridge, x.kind.clone())),
    );
    ids.extend(
        bundle
            .cartridge_groups
            .iter()
            .map(|x| (ArtifactKind::CartridgeGroup, x.name.clone())),
    );
    ids.extend(
        bundle
            .applications
            .iter()
            .map(|x| (ArtifactKind::Application, x.id.clone())),
    );
    ids.extend(
        bundle
            .autoscaling_policies
            .iter()
            .map(|x| (ArtifactKind::AutoscalingPolicy, x.id.clone())),
    );
    ids.extend(
        bundle
            .deployment_policies
            .iter()
            .map(|x| (ArtifactKind::DeploymentPolicy, x.id.clone())),
    );
    ids.extend(
        bundle
            .application_policies
            .iter()
            .map(|x| (ArtifactKind::ApplicationPolicy, x.id.clone())),
    );
    ids.extend(
        bundle
            .network_partitions
            .iter()
            .map(|x| (ArtifactKind::NetworkPartition, x.id.clone())),
    );
    ids.extend(
        bundle
            .kubernetes_clusters
            .iter()
            .map(|x| (ArtifactKind::KubernetesCluster, x.id.clone())),
    );
    ids
}

pub fn visit_view_clusters<'a>(
    view: &'a AppView,
    f: &mut impl FnMut(&'a cairn_engine::view::ClusterView),
) {
    fn walk<'a>(
        groups: &'a [cairn_engine::view::GroupView],
        f: &mut impl FnMut(&'a cairn_engine::view::ClusterView),
    ) {
        for g in groups {
            for i in &g.instances {
                i.clusters.iter().for_each(&mut *f);
                walk(&i.groups, f);
            }
        }
    }
    view.clusters.iter().for_each(&mut *f);
    walk(&view.groups, f);
}

fn visit_view_members<'a>(
    view: &'a AppView,
    f: &mut impl FnMut(&'a cairn_engine::view::MemberView),
) {
    visit_view_clusters(view, &mut |c| c.members.iter().for_each(&mut *f));
}

/// The engine's driver: the only owner of the engine.
struct EngineLoop {
    platform: Arc<Platform>,
    engine: Engine,
    agent: Agent<ProcessRuntime>,
    /// The state as last written, to skip writing what did not change.
    persisted: Vec<u8>,
    published: Option<cairn_lb::RouteTable>,
    /// What of the published table is not served, as last reported in events.
    routing_problems: BTreeSet<RoutingProblem>,
    /// When to publish the same table again, for ports that could not be bound.
    republish_at: Option<std::time::Instant>,
    /// The tokens of the deployments this step handled, to clear once the views show them.
    deploys_handled: Vec<u64>,
}

impl EngineLoop {
    async fn run(
        mut self,
        commands: mpsc::UnboundedReceiver<Command>,
        observations: mpsc::UnboundedReceiver<Observation>,
    ) {
        self.serve(commands, observations).await;
        // Deployments still queued went with the loop: none of them is on its way any more.
        lock(&self.platform.deploying).clear();
    }

    async fn serve(
        &mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut observations: mpsc::UnboundedReceiver<Observation>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut out = Output::default();
            let mut replies = Vec::new();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        self.stop_everything().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.command(command, &mut out, &mut replies),
                    None => return,
                },
                Some(observation) = observations.recv() => self.observe(observation, &mut out),
                _ = tick.tick() => {
                    let load = self.load_observations();
                    extend(&mut out, self.engine.observe_batch(load, now()));
                }
            }
            // Take whatever else is waiting, so one write covers it all.
            for _ in 0..256 {
                match observations.try_recv() {
                    Ok(observation) => self.observe(observation, &mut out),
                    Err(_) => break,
                }
            }
            while let Ok(command) = commands.try_recv() {
                if let Command::Shutdown(reply) = command {
                    self.finish_step(out, replies).await;
                    self.stop_everything().await;
                    let _ = reply.send(());
                    return;
                }
                self.command(command, &mut out, &mut replies);
            }
            self.finish_step(out, replies).await;
        }
    }

    /// Lifecycle news is acted on at once; usage figures wait for the tick, which samples them
    /// together with the load balancer's counts.
    fn observe(&mut self, observation: Observation, out: &mut Output) {
        match observation {
            Observation::Load { .. } => self.engine.record(observation, now()),
            _ => extend(out, self.engine.observe(observation, now())),
        }
    }

    /// Requests in flight per member, as the load balancer counts them now.
    fn load_observations(&self) -> Vec<Observation> {
        self.platform
            .lb
            .stats()
            .clusters
            .into_iter()
            .flat_map(|cluster| cluster.members)
            .map(|member| Observation::Load {
                member_id: member.member_id,
                in_flight: Some(member.requests.in_flight as f64),
                cpu_percent: None,
                memory_percent: None,
            })
            .collect()
    }

    fn command(&mut self, command: Command, out: &mut Output, replies: &mut Vec<Reply>) {
        let (reply, result) = match command {
            Command::Deploy(spec, token, reply) => {
                self.deploys_handled.push(token);
                (reply, self.engine.deploy(*spec, now()))
            }
            Command::Undeploy(app, reply) => (reply, self.engine.undeploy(&app, now())),
            Command::Scale {
                application,
                alias,
                size,
                reply,
            } => (reply, self.engine.scale(&application, &alias, size, now())),
            Command::SetDomainMappings {
                application,
                mappings,
                reply,
            } => match self
                .engine
                .set_domain_mappings(&application, mappings, now())
            {
                // Not deployed: the stored mappings apply when it is.
                Err(EngineError::NotDeployed(_)) => (reply, Ok(Output::default())),
                result => (reply, result),
            },
            // The loop takes shutdowns itself before they get here.
            Command::Shutdown(_) => return,
        };
        match result {
            Ok(step) => {
                extend(out, step);
                replies.push((reply, Ok(())));
            }
            Err(e) => replies.push((reply, Err(e.into()))),
        }
    }

    /// Persists, then answers, then acts: nothing is acknowledged or started before it is stored.
    async fn finish_step(&mut self, out: Output, replies: Vec<Reply>) {
        let Output { actions, events } = out;
        let stored = self.persist(&events);
        if stored.is_ok() {
            // Recorded before anything else is stored, so the next events take the next
            // numbers, and before the replies, so a caller reads its own step's events (and
            // finds its deployment deployed, which deletes check).
            self.platform.events.record(events);
            self.publish_snapshot();
        }
        // Done or refused, a handled deployment is in the views or nowhere.
        self.forget_deploys_handled();
        for (reply, result) in replies {
            let result = match (&stored, result) {
                (Err(e), Ok(())) => Err(PlatformError::Internal(e.clone())),
                (_, result) => result,
            };
            let _ = reply.send(result);
        }
        if let Err(e) = stored {
            tracing::error!("cannot store the engine's state, not acting on it: {e}");
            // Back to what is stored, so the engine and the world do not drift apart.
            if let Ok(state) = serde_json::from_slice(&self.persisted) {
                self.engine = Engine::restore(EngineConfig::default(), state);
            }
            return;
        }
        // Routes first: a member being stopped gets no new request once its stop is sent.
        self.route().await;
        for action in actions {
            match action {
                Action::StartMember(start) => self.agent.start(*start),
                Action::StopMember(stop) => self.agent.stop(stop),
            }
        }
    }

    /// Stores the engine's state, when it changed, and the step's events in one transaction.
    fn persist(&mut self, events: &[Event]) -> Result<(), String> {
        let bytes = serde_json::to_vec(self.engine.state()).map_err(|e| e.to_string())?;
        let changed = bytes != self.persisted;
        if !changed && events.is_empty() {
            return Ok(());
        }
        let mut txn = Txn::new();
        if changed {
            txn = txn.put(ENGINE_KEY, bytes.clone());
        }
        let txn = self
            .platform
            .events
            .stage(txn, events)
            .map_err(|e| e.to_string())?;
        self.platform.store.txn(txn).map_err(|e| e.to_string())?;
        self.persisted = bytes;
        Ok(())
    }

    fn forget_deploys_handled(&mut self) {
        let mut deploying = lock(&self.platform.deploying);
        for token in self.deploys_handled.drain(..) {
            deploying.remove(&token);
        }
    }

    /// What readers of the platform see of the engine: the runtime views and placements.
    fn publish_snapshot(&self) {
        let views = self
            .engine
            .state()
            .apps
            .keys()
            .filter_map(|id| self.engine.view(id).map(|v| (id.clone(), v)))
            .collect();
        let placements = self
            .engine
            .state()
            .apps
            .iter()
            .map(|(id, app)| {
                let partitions = app
                    .spec
                    .network_partition_groups
                    .iter()
                    .flatten()
                    .cloned()
                    .collect();
                (
                    id.clone(),
                    (app.spec.application_policy.clone(), partitions),
                )
            })
            .collect();
        let offsets = partition_offsets(&self.platform.lock_catalog());
        let offset = self.platform.config.proxy_port_offset;
        let apps = self.engine.state().apps.values();
        let proxy_ports = apps
            .flat_map(|app| proxy_ports(&app.spec, offset, &offsets))
            .collect();
        *self
            .platform
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(Snapshot {
            views,
            placements,
            proxy_ports,
        });
    }

    /// Hands the load balancer the engine's routes, telling what it cannot serve of them.
    async fn route(&mut self) {
        let partition_offsets = partition_offsets(&self.platform.lock_catalog());
        let (table, problems) = route_table(
            &self.engine.routes(),
            self.platform.config.proxy_port_offset,
            &partition_offsets,
        );
        let retry = self
            .republish_at
            .is_some_and(|t| std::time::Instant::now() >= t);
        if self.published.as_ref() == Some(&table) && !retry {
            return;
        }
        let mut found: BTreeSet<RoutingProblem> = problems.into_iter().collect();
        self.republish_at = None;
        if let Err(e) = self.platform.lb.publish(table.clone()).await {
            if bind_failed(&e) {
                self.republish_at = Some(std::time::Instant::now() + REBIND);
            }
            let problems = lb_problems(&e, &table);
            if problems.is_empty() {
                tracing::warn!("load balancer: {e}");
            }
            found.extend(problems);
        }
        // Each problem is told once when it starts and once when it ends.
        let at = now();
        let event = |problem: &RoutingProblem, message: String| Event {
            at,
            application: problem.application.clone(),
            subject: "load balancer".into(),
            message,
            decision: None,
        };
        let mut events = Vec::new();
        for problem in found.difference(&self.routing_problems) {
            tracing::warn!("load balancer: {}", problem.message);
            events.push(event(problem, problem.message.clone()));
        }
        // An application gone has nothing left to resolve.
        let apps = &self.engine.state().apps;
        for problem in self.routing_problems.difference(&found) {
            if apps.contains_key(&problem.application) {
                events.push(event(problem, format!("resolved: {}", problem.message)));
            }
        }
        if !events.is_empty() {
            let store = self.platform.store.as_ref();
            if let Err(e) = self.platform.events.store_and_record(store, events) {
                tracing::error!("cannot store an event: {e}");
            }
        }
        self.routing_problems = found;
        self.published = Some(table);
    }

    async fn stop_everything(&mut self) {
        let ids: Vec<String> = self
            .engine
            .members()
            .iter()
            .filter(|r| r.member.status != cairn_engine::MemberStatus::Terminated)
            .map(|r| r.member.id.clone())
            .collect();
        let stops = ids.iter().map(|id| self.agent.stop_now(id));
        futures_util::future::join_all(stops).await;
    }

    /// Takes back the members that survived a restart of the control plane, and reports the
    /// rest as gone so the engine replaces them.
    async fn recover(&mut self) -> Output {
        let mut keep = Vec::new();
        let mut lost = Vec::new();
        let mut stop = Vec::new();
        let members: Vec<(
            String,
            String,
            String,
            cairn_model::HealthCheck,
            cairn_engine::Member,
        )> = self
            .engine
            .members()
            .into_iter()
            .map(|r| {
                (
                    r.application.to_string(),
                    r.cluster.to_string(),
                    r.member.id.clone(),
                    r.cartridge.health.clone(),
                    r.member.clone(),
                )
            })
            .collect();
        for (application, cluster, id, health, member) in members {
            if member.status == cairn_engine::MemberStatus::Terminated {
                continue;
            }
            let Some(pid) = member.pid else {
                lost.push(id);
                continue;
            };
            let record = RunningMember {
                member_id: id.clone(),
                pid,
                ports: member
                    .ports
                    .iter()
                    .filter_map(|(name, addr)| {
                        addr.parse::<SocketAddr>().ok().map(|a| (name.clone(), a))
                    })
                    .collect(),
                started_at: UNIX_EPOCH + Duration::from_millis(member.created_at.0),
            };
            let active = member.status == cairn_engine::MemberStatus::Active;
            if self.agent.adopt(&record, &health, active).await {
                keep.push(id.clone());
                if member.status == cairn_engine::MemberStatus::ReadyToShutDown {
                    stop.push(cairn_engine::StopMember {
                        member_id: id,
                        application,
                        cluster,
                        reason: "was stopping when the control plane went down".into(),
                    });
                }
            } else {
                lost.push(id);
            }
        }
        for orphan in self.agent.kill_orphans(&keep).await {
            tracing::warn!(member = %orphan, "killed a process no record claims");
        }
        let mut out = Output::default();
        for id in lost {
            let observation = Observation::Exited {
                member_id: id,
                reason: "gone while the control plane was down".into(),
                killed: false,
            };
            extend(&mut out, self.engine.observe(observation, now()));
        }
        for s in stop {
            out.actions.push(Action::StopMember(s));
        }
        out
    }
}

fn extend(out: &mut Output, more: Output) {
    out.actions.extend(more.actions);
    out.events.extend(more.events);
}
