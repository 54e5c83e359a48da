//! The `Runtime` trait, the boundary between Cairn and the members it runs, and its drivers.
//!
//! The engine's decisions reach the world only through a `Runtime`: the same code runs against
//! real drivers and against a simulated one. The first driver, [`ProcessRuntime`], runs each
//! member as a local process group whose output goes to a bounded log file.
//! This crate starts, stops, adopts and watches members; it must not decide what should run.

mod env;
mod log;
mod process;
mod procfs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;

pub use crate::env::port_env_name;
pub use crate::log::{DEFAULT_LOG_CAP, LogChunk, follow_log, log_path, read_log};
pub use crate::process::ProcessRuntime;

/// Everything a driver needs to start one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    pub member_id: String,
    pub application: String,
    pub cluster: String,
    /// Program and arguments; `${VAR}` in them is replaced from the member's environment.
    pub command: Vec<String>,
    /// Extra environment, such as the endpoints of the clusters this one depends on.
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortRequest>,
    /// Where the member's output goes, as `<log_dir>/<member_id>.log`.
    pub log_dir: PathBuf,
}

/// One port mapping of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    pub name: String,
    /// The port the cartridge declares; processes get a free port instead, so it only informs.
    pub port: u16,
}

/// A member that runs, as recorded to find it again after the control plane restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningMember {
    pub member_id: String,
    pub pid: u32,
    /// Where each named port of the member listens.
    pub ports: BTreeMap<String, SocketAddr>,
    pub started_at: SystemTime,
}

/// What became of a recorded member when the runtime looked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Adoption {
    /// It still runs and is tracked again: its exit will be reported.
    Adopted,
    /// It no longer runs, or the process with its pid is something else.
    Gone,
}

/// A member's exit, reported once per member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberExit {
    pub member_id: String,
    pub pid: u32,
    pub status: ExitStatus,
    pub at: SystemTime,
}

/// How a member's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal with this number killed it.
    Signal(i32),
    /// It was adopted, not our child, so its status cannot be known.
    Unknown,
}

impl ExitStatus {
    /// SIGKILL ended it: only the kernel or a person sends that, never a failing program.
    pub fn is_sigkill(self) -> bool {
        self == ExitStatus::Signal(nix::libc::SIGKILL)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitStatus::Code(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signal(number) => match nix::sys::signal::Signal::try_from(number) {
                Ok(signal) => write!(f, "killed by signal {number} ({signal})"),
                Err(_) => write!(f, "killed by signal {number}"),
            },
            ExitStatus::Unknown => write!(f, "exited with an unknown status"),
        }
    }
}

/// Why a runtime could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid member {member_id:?}: {reason}")]
    InvalidSpec { member_id: String, reason: String },
    #[error("member {member_id} is already running")]
    AlreadyRunning { member_id: String },
    #[error("cannot open log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find a free port for member {member_id}: {source}")]
    Ports {
        member_id: String,
        source: std::io::Error,
    },
    #[error("cannot start member {member_id}: program {program:?} not found")]
    ProgramNotFound { member_id: String, program: String },
    #[error("cannot start member {member_id}: program {program:?}: {source}")]
    Spawn {
        member_id: String,
        program: String,
        source: std::io::Error,
    },
    #[error("cannot signal member {member_id} (pid {pid}): {source}")]
    Signal {
        member_id: String,
        pid: u32,
        source: nix::errno::Errno,
    },
    #[error("member {member_id} (pid {pid}) did not exit after SIGKILL")]
    StopTimeout { member_id: String, pid: u32 },
}

/// Starts, stops and watches members; every driver, real or simulated, implements it.
pub trait Runtime: Send + Sync + 'static {
    /// Starts a member and returns where it runs; its exit is reported on [`Runtime::exits`].
    fn start(
        &self,
        spec: MemberSpec,
    ) -> impl Future<Output = Result<RunningMember, RuntimeError>> + Send;

    /// Asks a member to stop, kills it after `grace`, and returns once it has exited.
    /// Stopping a member that is unknown or already gone succeeds.
    fn stop(
        &self,
        member_id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Tracks again a member recorded before a restart, if it still runs and really is that member.
    fn adopt(&self, record: &RunningMember) -> impl Future<Output = Adoption> + Send;

    /// A new subscription to member exits; exits that happened with no subscriber go to the next one.
    fn exits(&self) -> UnboundedReceiver<MemberExit>;

    /// Kills members of this runtime that are neither tracked nor in `keep`; returns their ids.
    fn kill_orphans(&self, keep: &[String]) -> impl Future<Output = Vec<String>> + Send;
}
