//! The workload's configuration, read from environment variables.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::WorkloadError;

/// Largest response body a request may ask for.
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Longest latency a request may ask for.
pub const MAX_LATENCY_MS: u64 = 600_000;
/// Longest CPU burn a request may ask for.
pub const MAX_CPU_MS: u64 = 60_000;
/// Largest ballast the workload may hold, in MiB.
pub const MAX_BALLAST_MB: u64 = 1024 * 1024;

/// How the workload serves: where it listens and how each request behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// The member this workload runs as, reported in every response.
    pub member_id: String,
    /// The address every port is bound on.
    pub bind: IpAddr,
    /// The ports to listen on, each with its port-mapping name.
    pub ports: Vec<NamedPort>,
    /// What a request gets unless its query overrides it.
    pub response: ResponseShape,
    /// Memory allocated and touched at start, in MiB.
    pub ballast_mb: u64,
    /// When set, `/healthz` answers 503 once this long has passed since start.
    pub unhealthy_after: Option<Duration>,
}

/// A port to listen on and the name of the port mapping it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
}

/// What one request costs and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseShape {
    /// Body size in bytes; the body is never shorter than the line naming the member.
    pub bytes: u64,
    /// Time spent waiting (without using a thread) before answering.
    pub latency: Duration,
    /// Time spent burning CPU on a blocking thread before answering.
    pub cpu: Duration,
}

/// The environment variables the workload reads.
const VARIABLES: [&str; 9] = [
    "CAIRN_MEMBER_ID",
    "CAIRN_BIND",
    "CAIRN_PORTS",
    "PORT",
    "WORKLOAD_RESPONSE_BYTES",
    "WORKLOAD_LATENCY_MS",
    "WORKLOAD_CPU_MS",
    "WORKLOAD_BALLAST_MB",
    "WORKLOAD_UNHEALTHY_AFTER_S",
];

impl WorkloadConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, WorkloadError> {
        for variable in VARIABLES {
            if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(variable) {
                return Err(invalid(variable, "<not utf-8>", "value is not valid UTF-8"));
            }
        }
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's value if set.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, WorkloadError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let member_id = get("CAIRN_MEMBER_ID").unwrap_or_else(|| "local".to_owned());
        let bind = match get("CAIRN_BIND") {
            Some(value) => value
                .trim()
                .parse()
                .map_err(|_| invalid("CAIRN_BIND", &value, "expected an IP address"))?,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let ports = match (get("CAIRN_PORTS"), get("PORT")) {
            (Some(value), _) => parse_ports(&value)?,
            (None, Some(value)) => vec![NamedPort {
                name: "http".to_owned(),
                port: parse_port("PORT", &value, &value)?,
            }],
            (None, None) => return Err(WorkloadError::NoPorts),
        };
        let number = |name: &'static str, max: u64| -> Result<u64, WorkloadError> {
            get(name).map_or(Ok(0), |value| parse_bounded(name, &value, max))
        };
        let response = ResponseShape {
            bytes: number("WORKLOAD_RESPONSE_BYTES", MAX_RESPONSE_BYTES)?,
            latency: Duration::from_millis(number("WORKLOAD_LATENCY_MS", MAX_LATENCY_MS)?),
            cpu: Duration::from_millis(number("WORKLOAD_CPU_MS", MAX_CPU_MS)?),
        };
        let ballast_mb = number("WORKLOAD_BALLAST_MB", MAX_BALLAST_MB)?;
        let unhealthy_after = get("WORKLOAD_UNHEALTHY_AFTER_S")
            .map(|value| parse_bounded("WORKLOAD_UNHEALTHY_AFTER_S", &value, u64::MAX))
            .transpose()?
            .map(Duration::from_secs);
        Ok(WorkloadConfig {
            member_id,
            bind,
            ports,
            response,
            ballast_mb,
            unhealthy_after,
        })
    }
}

/// Parses `name=port,name=port`; a bare port is named `http`.
fn parse_ports(value: &str) -> Result<Vec<NamedPort>, WorkloadError> {
    let mut ports: Vec<NamedPort> = Vec::new();
    for entry in value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (name, port) = entry.split_once('=').unwrap_or(("http", entry));
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid(
                "CAIRN_PORTS",
                value,
                &format!("entry {entry:?} has no name"),
            ));
        }
        if ports.iter().any(|known| known.name == name) {
            return Err(invalid(
                "CAIRN_PORTS",
                value,
                &format!("port name {name:?} is repeated"),
            ));
        }
        ports.push(NamedPort {
            name: name.to_owned(),
            port: parse_port("CAIRN_PORTS", value, port)?,
        });
    }
    if ports.is_empty() {
        return Err(invalid(
            "CAIRN_PORTS",
            value,
            "expected name=port[,name=port...]",
        ));
    }
    Ok(ports)
}

fn parse_port(variable: &'static str, value: &str, port: &str) -> Result<u16, WorkloadError> {
    port.trim().parse().map_err(|_| {
        invalid(
            variable,
            value,
            &format!("{:?} is not a port number (0-65535)", port.trim()),
        )
    })
}

fn parse_bounded(variable: &'static str, value: &str, max: u64) -> Result<u64, WorkloadError> {
    match value.trim().parse::<u64>() {
        Ok(number) if number <= max => Ok(number),
        Ok(_) => Err(invalid(variable, value, &format!("must be at most {max}"))),
        Err(_) => Err(invalid(
            variable,
            value,
            "expected a non-negative whole number",
        )),
    }
}

fn invalid(variable: &'static str, value: &str, reason: &str) -> WorkloadError {
    WorkloadError::InvalidVariable {
        variable,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)], expected: Result<&str, &str>) {
        let result = WorkloadConfig::from_vars(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        });
        match (result, expected) {
            (Ok(config), Ok(summary)) => {
                let ports: Vec<String> = config
                    .ports
                    .iter()
                    .map(|p| format!("{}={}", p.name, p.port))
                    .collect();
                let actual = format!(
                    "{} {} {} bytes={} latency={:?} cpu={:?} ballast={} unhealthy={:?}",
                    config.member_id,
                    config.bind,
                    ports.join(","),
                    config.response.bytes,
                    config.response.latency,
                    config.response.cpu,
                    config.ballast_mb,
                    config.unhealthy_after,
                );
                assert_eq!(actual, summary, "vars {vars:?}");
            }
            (Err(error), Err(message)) => assert_eq!(error.to_string(), message, "vars {vars:?}"),
            (result, expected) => panic!("vars {vars:?}: got {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn reads_ports_and_defaults() {
        check(
            &[("PORT", "8080")],
            Ok("local 127.0.0.1 http=8080 bytes=0 latency=0ns cpu=0ns ballast=0 unhealthy=None"),
        );
        check(
            &[
                ("CAIRN_PORTS", "http=1, admin=2"),
                ("PORT", "9"),
                ("CAIRN_MEMBER_ID", "m-1"),
            ],
            Ok("m-1 127.0.0.1 http=1,admin=2 bytes=0 latency=0ns cpu=0ns ballast=0 unhealthy=None"),
        );
        check(
            &[
                ("CAIRN_PORTS", "web=0"),
                ("CAIRN_BIND", "::1"),
                ("WORKLOAD_RESPONSE_BYTES", "1024"),
                ("WORKLOAD_LATENCY_MS", "5"),
                ("WORKLOAD_CPU_MS", "7"),
                ("WORKLOAD_BALLAST_MB", "3"),
                ("WORKLOAD_UNHEALTHY_AFTER_S", "60"),
            ],
            Ok("local ::1 web=0 bytes=1024 latency=5ms cpu=7ms ballast=3 unhealthy=Some(60s)"),
        );
        check(
            &[("CAIRN_PORTS", "5000"), ("WORKLOAD_LATENCY_MS", " ")],
            Ok("local 127.0.0.1 http=5000 bytes=0 latency=0ns cpu=0ns ballast=0 unhealthy=None"),
        );
    }

    #[test]
    fn names_the_bad_variable() {
        check(
            &[],
            Err("no port to listen on: set CAIRN_PORTS (name=port,...) or PORT"),
        );
        check(
            &[("PORT", "http")],
            Err("PORT=\"http\": \"http\" is not a port number (0-65535)"),
        );
        check(
            &[("CAIRN_PORTS", "http=1,http=2")],
            Err("CAIRN_PORTS=\"http=1,http=2\": port name \"http\" is repeated"),
        );
        check(
            &[("CAIRN_PORTS", "a=70000")],
            Err("CAIRN_PORTS=\"a=70000\": \"70000\" is not a port number (0-65535)"),
        );
        check(
            &[("CAIRN_PORTS", "=80")],
            Err("CAIRN_PORTS=\"=80\": entry \"=80\" has no name"),
        );
        check(
            &[("CAIRN_PORTS", ",")],
            Err("CAIRN_PORTS=\",\": expected name=port[,name=port...]"),
        );
        check(
            &[("PORT", "1"), ("CAIRN_BIND", "localhost")],
            Err("CAIRN_BIND=\"localhost\": expected an IP address"),
        );
        check(
            &[("PORT", "1"), ("WORKLOAD_CPU_MS", "-4")],
            Err("WORKLOAD_CPU_MS=\"-4\": expected a non-negative whole number"),
        );
        check(
            &[("PORT", "1"), ("WORKLOAD_RESPONSE_BYTES", "1000000000")],
            Err("WORKLOAD_RESPONSE_BYTES=\"1000000000\": must be at most 67108864"),
        );
    }
}
