//! The route table the engine publishes: which ports to listen on and where their requests go.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the load balancer serves, keyed by the port it listens on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct RouteTable {
    pub listeners: BTreeMap<u16, ListenerRoute>,
}

/// The clusters served on one port: with one cluster every request goes to it,
/// with several the request's host name picks one. A tcp port serves one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ListenerRoute {
    pub clusters: Vec<ClusterRoute>,
    #[serde(default)]
    pub protocol: ListenerProtocol,
}

impl fmt::Display for ListenerProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerProtocol::Http => "http",
            ListenerProtocol::Tcp => "tcp",
        })
    }
}

impl ListenerRoute {
    pub fn http(clusters: Vec<ClusterRoute>) -> ListenerRoute {
        ListenerRoute {
            clusters,
            protocol: ListenerProtocol::Http,
        }
    }

    pub fn tcp(cluster: ClusterRoute) -> ListenerRoute {
        ListenerRoute {
            clusters: vec![cluster],
            protocol: ListenerProtocol::Tcp,
        }
    }
}

/// What a port speaks: HTTP, proxied request by request, or any TCP stream, relayed
/// connection by connection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Tcp,
}

/// One cluster as seen from one port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClusterRoute {
    pub key: ClusterKey,
    /// Host names this cluster answers to on a shared port, matched without case and port.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Paths put in front of the path of a request that arrives for one of `hosts`, by host
    /// name: a Stratos domain mapping's context path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_paths: BTreeMap<String, String>,
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// How long a member may take to answer a request with a response head, and the longest
    /// it may pause within a response body; `None` means [`DEFAULT_RESPONSE_TIMEOUT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_ms: Option<u64>,
}

/// How long a member may take to answer, unless its cluster says otherwise.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

impl ClusterRoute {
    pub fn new(key: ClusterKey, hosts: Vec<String>, backends: Vec<Backend>) -> ClusterRoute {
        ClusterRoute {
            key,
            hosts,
            context_paths: BTreeMap::new(),
            backends,
            response_timeout_ms: None,
        }
    }

    pub fn response_timeout(&self) -> Duration {
        self.response_timeout_ms
            .map_or(DEFAULT_RESPONSE_TIMEOUT, Duration::from_millis)
    }
}

/// Names a cluster: the alias of a cartridge within an application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterKey {
    pub application: String,
    pub alias: String,
}

impl ClusterKey {
    pub fn new(application: impl Into<String>, alias: impl Into<String>) -> ClusterKey {
        ClusterKey {
            application: application.into(),
            alias: alias.into(),
        }
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.application, self.alias)
    }
}

/// One member's address for this cluster and port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub member_id: String,
    pub addr: SocketAddr,
    /// A draining member gets no new requests; the ones it is serving finish.
    #[serde(default)]
    pub draining: bool,
}

impl Backend {
    pub fn new(member_id: impl Into<String>, addr: SocketAddr) -> Backend {
        Backend {
            member_id: member_id.into(),
            addr,
            draining: false,
        }
    }
}
