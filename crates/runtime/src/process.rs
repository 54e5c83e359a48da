//! The local-process driver: each member is a child process in its own process group.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgrp};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;

use crate::env::{DATA_DIR_VAR, MEMBER_ID_VAR, is_port_var, member_env, substitute, validate};
use crate::log::{DEFAULT_LOG_CAP, log_path, open_log, rotate_if_over};
use crate::{
    Adoption, ExitStatus, MemberExit, MemberSpec, PortRequest, RunningMember, Runtime,
    RuntimeError, procfs,
};

/// How often an adopted member, not our child, is checked for having exited.
const ADOPTED_POLL: Duration = Duration::from_millis(100);
/// How often a member's log size is checked against the cap.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// How long a member may take to die after SIGKILL before stop gives up.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long adopt waits, in pauses, for a process that is still inside `exec` to show its environment.
const EXEC_SETTLE_TRIES: u32 = 50;
const EXEC_SETTLE_PAUSE: Duration = Duration::from_millis(10);
/// Exits kept while nobody subscribes; older ones are dropped first.
const MAX_PENDING_EXITS: usize = 10_000;

/// Runs members as local processes; cloning shares the same tracked members.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    /// The data directory, as written into every member's `CAIRN_DATA_DIR`.
    data_dir: String,
    log_cap: AtomicU64,
    members: Mutex<HashMap<String, Tracked>>,
    exits: Mutex<ExitQueue>,
}

struct Tracked {
    pid: u32,
    pgid: Pid,
    exited: watch::Receiver<bool>,
}

#[derive(Default)]
struct ExitQueue {
    subscribers: Vec<UnboundedSender<MemberExit>>,
    pending: VecDeque<MemberExit>,
}

/// The process whose exit ends a member.
enum Leader {
    Child(tokio::process::Child),
    Adopted { pid: Pid, start_time: u64 },
}

impl ProcessRuntime {
    /// A runtime whose members are marked with `data_dir`, so that two Cairns on one machine
    /// never adopt or kill each other's members.
    pub fn new(data_dir: PathBuf) -> Self {
        let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
        ProcessRuntime {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_string_lossy().into_owned(),
                log_cap: AtomicU64::new(DEFAULT_LOG_CAP),
                members: Mutex::new(HashMap::new()),
                exits: Mutex::new(ExitQueue::default()),
            }),
        }
    }

    /// Sets the size above which member logs are rotated (default [`DEFAULT_LOG_CAP`]).
    pub fn with_log_cap(self, bytes: u64) -> Self {
        self.inner.log_cap.store(bytes, Ordering::Relaxed);
        self
    }

    /// The ids of the members this runtime tracks now.
    pub fn tracked(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.members().keys().cloned().collect();
        ids.sort();
        ids
    }

    fn track(&self, member_id: &str, pid: u32, pgid: Pid, leader: Leader, log: Option<PathBuf>) {
        let (exited_tx, exited) = watch::channel(false);
        self.inner
            .members()
            .insert(member_id.to_owned(), Tracked { pid, pgid, exited });
        tokio::spawn(supervise(
            self.inner.clone(),
            member_id.to_owned(),
            pid,
            pgid,
            leader,
            log,
            exited_tx,
        ));
    }
}

impl Inner {
    fn members(&self) -> MutexGuard<'_, HashMap<String, Tracked>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, exit: MemberExit) {
        let mut queue = self.exits.lock().unwrap_or_else(PoisonError::into_inner);
        queue
            .subscribers
            .retain(|subscriber| subscriber.send(exit.clone()).is_ok());
        if queue.subscribers.is_empty() {
            if queue.pending.len() >= MAX_PENDING_EXITS {
                queue.pending.pop_front();
            }
            queue.pending.push_back(exit);
        }
    }

    fn subscribe(&self) -> UnboundedReceiver<MemberExit> {
        let (subscriber, exits) = unbounded_channel();
        let mut queue = self.exits.lock().unwrap_or_else(PoisonError::into_inner);
        for exit in queue.pending.drain(..) {
            let _ = subscriber.send(exit);
        }
        queue.subscribers.push(subscriber);
        exits
    }
}

impl Runtime for ProcessRuntime {
    async fn start(&self, spec: MemberSpec) -> Result<RunningMember, RuntimeError> {
        let member_id = spec.member_id.clone();
        let invalid = |reason: String| RuntimeError::InvalidSpec {
            member_id: member_id.clone(),
            reason,
        };
        validate(&spec).map_err(invalid)?;
        if self.inner.members().contains_key(&member_id) {
            return Err(RuntimeError::AlreadyRunning { member_id });
        }
        let ports = free_ports(&spec.ports).map_err(|source| RuntimeError::Ports {
            member_id: member_id.clone(),
            source,
        })?;
        let env = member_env(&spec, &ports, &self.inner.data_dir);
        let lookup = |name: &str| env.get(name).cloned().or_else(|| std::env::var(name).ok());
        let command: Vec<String> = spec
            .command
            .iter()
            .map(|arg| substitute(arg, lookup))
            .collect();
        let Some((program, args)) = command.split_first() else {
            return Err(invalid("command is empty".to_owned()));
        };
        let log = log_path(&spec.log_dir, &member_id);
        let (stdout, stderr) = open_output(&spec.log_dir, &log).await?;

        let mut child = tokio::process::Command::new(program);
        child
            .args(args)
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        for (name, _) in std::env::vars_os() {
            if let Some(name) = name.to_str()
                && is_port_var(name)
                && !env.contains_key(name)
            {
                child.env_remove(name);
            }
        }
        let spawn_error = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => RuntimeError::ProgramNotFound {
                member_id: member_id.clone(),
                program: program.clone(),
            },
            _ => RuntimeError::Spawn {
                member_id: member_id.clone(),
                program: program.clone(),
                source,
            },
        };
        let child = child.spawn().map_err(spawn_error)?;
        let started_at = SystemTime::now();
        // The child leads its own group, so its group id is its pid.
        let Some((pid, pgid)) = child
            .id()
            .and_then(|pid| Some((pid, member_group(i32::try_from(pid).ok()?)?)))
        else {
            return Err(spawn_error(io::Error::other(
                "the process has no usable pid",
            )));
        };
        self.track(&member_id, pid, pgid, Leader::Child(child), Some(log));
        Ok(RunningMember {
            member_id,
            pid,
            ports: ports.into_iter().collect(),
            started_at,
        })
    }

    async fn stop(&self, member_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some((pid, pgid, mut exited)) = self
            .inner
            .members()
            .get(member_id)
            .map(|tracked| (tracked.pid, tracked.pgid, tracked.exited.clone()))
        else {
            return Ok(());
        };
        let signal_error = |source| RuntimeError::Signal {
            member_id: member_id.to_owned(),
            pid,
            source,
        };
        signal_group(pgid, Signal::SIGTERM).map_err(signal_error)?;
        if tokio::time::timeout(grace, exited.wait_for(|exited| *exited))
            .await
            .is_ok()
        {
            return Ok(());
        }
        signal_group(pgid, Signal::SIGKILL).map_err(signal_error)?;
        match tokio::time::timeout(KILL_TIMEOUT, exited.wait_for(|exited| *exited)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(RuntimeError::StopTimeout {
                member_id: member_id.to_owned(),
                pid,
            }),
        }
    }

    async fn adopt(&self, record: &RunningMember) -> Adoption {
        if let Some(tracked) = self.inner.members().get(&record.member_id) {
            return if tracked.pid == record.pid {
                Adoption::Adopted
            } else {
                Adoption::Gone
            };
        }
        let Some(pid) = i32::try_from(record.pid).ok().filter(|pid| *pid > 1) else {
            return Adoption::Gone;
        };
        let Some(stat) = procfs::stat(pid).filter(procfs::ProcStat::is_running) else {
            return Adoption::Gone;
        };
        let Some(environ) = settled_environ(pid).await else {
            return Adoption::Gone;
        };
        let marked =
            |name: &str, value: &str| procfs::env_value(&environ, name) == Some(value.as_bytes());
        if !marked(MEMBER_ID_VAR, &record.member_id) || !marked(DATA_DIR_VAR, &self.inner.data_dir)
        {
            return Adoption::Gone;
        }
        let Some(pgid) = member_group(stat.pgrp) else {
            return Adoption::Gone;
        };
        // The log is wherever the member's stdout goes; only a member log is ever rotated.
        let log = procfs::stdout_path(pid).filter(|path| {
            path.file_name() == log_path(Path::new(""), &record.member_id).file_name()
        });
        let leader = Leader::Adopted {
            pid: Pid::from_raw(pid),
            start_time: stat.start_time,
        };
        self.track(&record.member_id, record.pid, pgid, leader, log);
        Adoption::Adopted
    }

    fn exits(&self) -> UnboundedReceiver<MemberExit> {
        self.inner.subscribe()
    }

    async fn kill_orphans(&self, keep: &[String]) -> Vec<String> {
        let own_pid = std::process::id();
        let mut killed = BTreeSet::new();
        for pid in procfs::pids() {
            if u32::try_from(pid).ok() == Some(own_pid) {
                continue;
            }
            let Some(environ) = procfs::environ(pid) else {
                continue;
            };
            if procfs::env_value(&environ, DATA_DIR_VAR) != Some(self.inner.data_dir.as_bytes()) {
                continue;
            }
            let Some(member) = procfs::env_value(&environ, MEMBER_ID_VAR) else {
                continue;
            };
            let member = String::from_utf8_lossy(member).into_owned();
            if keep.contains(&member) || self.inner.members().contains_key(&member) {
                continue;
            }
            let Some(stat) = procfs::stat(pid).filter(procfs::ProcStat::is_running) else {
                continue;
            };
            let killed_now = match member_group(stat.pgrp) {
                Some(pgid) => killpg(pgid, Signal::SIGKILL),
                None => kill(Pid::from_raw(pid), Signal::SIGKILL),
            };
            if killed_now.is_ok() {
                tracing::info!(member = %member, pid, "killed orphaned member");
                killed.insert(member);
            }
        }
        killed.into_iter().collect()
    }
}

/// Watches a member until its leader exits, rotating its log meanwhile, then reports the exit.
async fn supervise(
    inner: Arc<Inner>,
    member_id: String,
    pid: u32,
    pgid: Pid,
    mut leader: Leader,
    log: Option<PathBuf>,
    exited: watch::Sender<bool>,
) {
    let exit = wait_for_exit(&mut leader);
    tokio::pin!(exit);
    let mut rotation = tokio::time::interval(ROTATION_CHECK);
    rotation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let status = loop {
        tokio::select! {
            status = &mut exit => break status,
            _ = rotation.tick() => {
                if let Some(log) = &log {
                    rotate_log(log.clone(), inner.log_cap.load(Ordering::Relaxed)).await;
                }
            }
        }
    };
    // What the leader left behind in its group would keep the member's ports and files.
    let _ = signal_group(pgid, Signal::SIGKILL);
    {
        let mut members = inner.members();
        if members
            .get(&member_id)
            .is_some_and(|tracked| tracked.pid == pid)
        {
            members.remove(&member_id);
        }
    }
    tracing::debug!(member = %member_id, pid, %status, "member exited");
    inner.publish(MemberExit {
        member_id,
        pid,
        status,
        at: SystemTime::now(),
    });
    let _ = exited.send(true);
}

async fn wait_for_exit(leader: &mut Leader) -> ExitStatus {
    match leader {
        Leader::Child(child) => match child.wait().await {
            Ok(status) => exit_status(status),
            Err(_) => ExitStatus::Unknown,
        },
        Leader::Adopted { pid, start_time } => loop {
            tokio::time::sleep(ADOPTED_POLL).await;
            let same_process = procfs::stat(pid.as_raw())
                .is_some_and(|stat| stat.is_running() && stat.start_time == *start_time);
            if !same_process {
                return ExitStatus::Unknown;
            }
        },
    }
}

/// The process's environment; a process still inside `exec` shows an empty one for a moment.
async fn settled_environ(pid: i32) -> Option<Vec<u8>> {
    for _ in 0..EXEC_SETTLE_TRIES {
        let environ = procfs::environ(pid)?;
        if !environ.is_empty() {
            return Some(environ);
        }
        tokio::time::sleep(EXEC_SETTLE_PAUSE).await;
    }
    None
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal),
        (None, None) => ExitStatus::Unknown,
    }
}

async fn rotate_log(log: PathBuf, cap: u64) {
    let rotated = tokio::task::spawn_blocking(move || (rotate_if_over(&log, cap), log)).await;
    match rotated {
        Ok((Err(error), log)) if error.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(log = %log.display(), %error, "cannot rotate member log");
        }
        _ => {}
    }
}

/// The process group to signal for a member, never one that would hit init or Cairn itself.
fn member_group(pgrp: i32) -> Option<Pid> {
    (pgrp > 1 && Pid::from_raw(pgrp) != getpgrp()).then(|| Pid::from_raw(pgrp))
}

/// Signals a whole process group; a group that is already gone is not an error.
fn signal_group(pgid: Pid, signal: Signal) -> nix::Result<()> {
    match killpg(pgid, signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Picks a free loopback port for each request; all are held until chosen, so they differ.
fn free_ports(requests: &[PortRequest]) -> io::Result<Vec<(String, SocketAddr)>> {
    let listeners = requests
        .iter()
        .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    requests
        .iter()
        .zip(&listeners)
        .map(|(request, listener)| Ok((request.name.clone(), listener.local_addr()?)))
        .collect()
}

/// Opens the member's log twice, for stdout and stderr, creating its directory if needed.
async fn open_output(
    log_dir: &Path,
    log: &Path,
) -> Result<(std::fs::File, std::fs::File), RuntimeError> {
    let log_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Log { path, source }
    };
    tokio::fs::create_dir_all(log_dir)
        .await
        .map_err(log_error(log_dir))?;
    let stdout = open_log(log).map_err(log_error(log))?;
    let stderr = stdout.try_clone().map_err(log_error(log))?;
    Ok((stdout, stderr))
}
