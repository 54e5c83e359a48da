//! Members' CPU and memory use, sampled from /proc once a second by one task for all members.
//!
//! A member is a process group: its CPU time and resident memory are the sums over the group's
//! processes. CPU use is a percentage of the member's CPU share (100% is the share fully busy),
//! memory a percentage of its memory limit, or of the host's memory where it has none.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_engine::Observation;
use tokio::sync::mpsc;

/// How often members are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

pub use cairn_model::{CPU_CORES_PROPERTY, MEMORY_LIMIT_PROPERTY};
/// The member's environment carries its share, so that it can be read back after an adoption.
pub const CPU_CORES_ENV: &str = "CAIRN_CPU_CORES";
/// Set only when the cartridge sets a memory limit.
pub const MEMORY_LIMIT_ENV: &str = "CAIRN_MEMORY_LIMIT_MB";

/// /proc reports CPU times in USER_HZ, which Linux fixes at 100 on every current architecture.
const USER_HZ: f64 = 100.0;

/// What a member may use: the denominators of its percentages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    pub cpu_cores: f64,
    pub memory_limit_mb: Option<u64>,
}

impl Default for Share {
    fn default() -> Self {
        Share {
            cpu_cores: 1.0,
            memory_limit_mb: None,
        }
    }
}

/// A share setting that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("{key}={value:?}: expected a positive number of cores")]
    CpuCores { key: String, value: String },
    #[error("{key}={value:?}: expected a positive whole number of MiB")]
    MemoryLimit { key: String, value: String },
}

/// Reads a share from settings such as a cartridge's properties; absent settings keep the defaults.
pub fn parse_share(
    settings: &BTreeMap<String, String>,
    cpu_key: &str,
    memory_key: &str,
) -> Result<Share, ShareError> {
    let mut share = Share::default();
    if let Some(value) = settings.get(cpu_key) {
        share.cpu_cores = cairn_model::parse_cores(value).ok_or_else(|| ShareError::CpuCores {
            key: cpu_key.to_string(),
            value: value.clone(),
        })?;
    }
    if let Some(value) = settings.get(memory_key) {
        let mb =
            cairn_model::parse_positive_whole(value).ok_or_else(|| ShareError::MemoryLimit {
                key: memory_key.to_string(),
                value: value.clone(),
            })?;
        share.memory_limit_mb = Some(mb);
    }
    Ok(share)
}

/// The environment entries that carry a share into the member.
pub fn share_env(share: &Share) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([(CPU_CORES_ENV.to_string(), share.cpu_cores.to_string())]);
    if let Some(mb) = share.memory_limit_mb {
        env.insert(MEMORY_LIMIT_ENV.to_string(), mb.to_string());
    }
    env
}

/// A member the sampler watches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sampled {
    /// The process group leader, whose pid is the group's id.
    pub pid: u32,
    pub share: Share,
}

/// The members to sample, by member id; shared between the agent and its sampler.
pub(crate) type SampledMembers = Arc<Mutex<BTreeMap<String, Sampled>>>;

/// The fields of one `/proc/<pid>/stat` line the sampler needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcCpu {
    pub pgrp: i32,
    /// utime + stime + cutime + cstime: the children's part keeps the sum from dropping when a
    /// short-lived child of the member is reaped.
    pub ticks: u64,
}

/// Parses `/proc/<pid>/stat`, whose command name may hold spaces and parentheses.
pub(crate) fn parse_stat(text: &str) -> Option<ProcCpu> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields after the name, counted from 0: state, ppid, pgrp, …, utime at 11 to cstime at 14.
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let ticks = [11, 12, 13, 14]
        .into_iter()
        .try_fold(0u64, |sum, i| Some(sum.saturating_add(number(i)?)))?;
    Some(ProcCpu {
        pgrp: fields.get(2)?.parse().ok()?,
        ticks,
    })
}

/// The `VmRSS` line of `/proc/<pid>/status`, in bytes; kernel threads and zombies have none.
pub(crate) fn parse_status_rss(text: &str) -> Option<u64> {
    let kib = text.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = kib.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The `MemTotal` line of `/proc/meminfo`, in bytes.
pub(crate) fn parse_mem_total(text: &str) -> Option<u64> {
    let kib = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?;
    let kib: u64 = kib.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// A process group's use at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GroupUsage {
    pub ticks: u64,
    pub rss_bytes: u64,
}

/// The CPU reading a member's next percentage is measured from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Baseline {
    pid: u32,
    ticks: u64,
    at: Instant,
}

/// Turns one scan into observations and moves the CPU baselines on; members absent from the
/// scan are skipped and lose their baseline.
pub(crate) fn observe(
    members: &BTreeMap<String, Sampled>,
    usage: &HashMap<i32, GroupUsage>,
    at: Instant,
    host_memory_bytes: Option<u64>,
    baselines: &mut HashMap<String, Baseline>,
) -> Vec<Observation> {
    baselines.retain(|id, _| members.contains_key(id));
    let mut observations = Vec::new();
    for (id, member) in members {
        let Some(group) = i32::try_from(member.pid)
            .ok()
            .and_then(|pgrp| usage.get(&pgrp))
        else {
            baselines.remove(id);
            continue;
        };
        let now = Baseline {
            pid: member.pid,
            ticks: group.ticks,
            at,
        };
        let cpu_percent = baselines
            .insert(id.clone(), now)
            .filter(|before| before.pid == member.pid)
            .and_then(|before| cpu_percent(before, now, member.share.cpu_cores));
        let limit = member
            .share
            .memory_limit_mb
            .map(|mb| mb.saturating_mul(1024 * 1024))
            .or(host_memory_bytes);
        let memory_percent = limit.and_then(|limit| percent(group.rss_bytes as f64, limit as f64));
        if cpu_percent.is_none() && memory_percent.is_none() {
            continue;
        }
        observations.push(Observation::Load {
            member_id: id.clone(),
            in_flight: None,
            cpu_percent,
            memory_percent,
        });
    }
    observations
}

/// CPU use between two readings as a percentage of `cores`; `None` when no time has passed.
fn cpu_percent(before: Baseline, now: Baseline, cores: f64) -> Option<f64> {
    let elapsed = now.at.checked_duration_since(before.at)?.as_secs_f64();
    // A child reaped by a process outside the group takes its time along; count that as idle.
    let busy = now.ticks.saturating_sub(before.ticks) as f64 / USER_HZ;
    percent(busy, elapsed * cores)
}

fn percent(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| 100.0 * part / whole)
}

/// Reads the use of the given process groups from /proc; groups with no process are absent.
fn scan(groups: &HashSet<i32>) -> HashMap<i32, GroupUsage> {
    let mut usage: HashMap<i32, GroupUsage> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return usage;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(cpu) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| parse_stat(&text))
        else {
            continue;
        };
        if !groups.contains(&cpu.pgrp) {
            continue;
        }
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|text| parse_status_rss(&text))
            .unwrap_or(0);
        let group = usage.entry(cpu.pgrp).or_default();
        group.ticks = group.ticks.saturating_add(cpu.ticks);
        group.rss_bytes = group.rss_bytes.saturating_add(rss);
    }
    usage
}

fn host_memory() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// Reads a member's share back from its environment; defaults where it cannot be read.
pub(crate) fn share_of_process(pid: u32) -> Share {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return Share::default();
    };
    let settings: BTreeMap<String, String> = environ
        .split(|byte| *byte == 0)
        .filter_map(|entry| {
            let entry = std::str::from_utf8(entry).ok()?;
            let (name, value) = entry.split_once('=')?;
            [CPU_CORES_ENV, MEMORY_LIMIT_ENV]
                .contains(&name)
                .then(|| (name.to_string(), value.to_string()))
        })
        .collect();
    parse_share(&settings, CPU_CORES_ENV, MEMORY_LIMIT_ENV).unwrap_or_default()
}

/// Samples every member each [`SAMPLE_INTERVAL`] until the observation receiver is gone.
pub(crate) async fn sample(members: SampledMembers, tx: mpsc::UnboundedSender<Observation>) {
    let mut baselines = HashMap::new();
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let host_memory_bytes = tokio::task::spawn_blocking(host_memory)
        .await
        .ok()
        .flatten();
    while !tx.is_closed() {
        ticker.tick().await;
        let watched = members.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if watched.is_empty() {
            baselines.clear();
            continue;
        }
        let groups: HashSet<i32> = watched
            .values()
            .filter_map(|m| i32::try_from(m.pid).ok())
            .collect();
        let Ok(usage) = tokio::task::spawn_blocking(move || scan(&groups)).await else {
            continue;
        };
        for observation in observe(
            &watched,
            &usage,
            Instant::now(),
            host_memory_bytes,
            &mut baselines,
        ) {
            if tx.send(observation).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let check = |text: &str, expected: Option<(i32, u64)>| {
            let actual = parse_stat(text).map(|s| (s.pgrp, s.ticks));
            assert_eq!(actual, expected, "{text:?}");
        };
        // After the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime …
        let times = "0 -1 4194560 100 0 0 0 250 50 7 3";
        let rest = "20 0 1 0 987654 1000 200";
        check(
            &format!("42 (sleep) S 1 42 42 {times} {rest}"),
            Some((42, 310)),
        );
        check(
            &format!("7 (a b) (c) R 1 9 9 {times} {rest}"),
            Some((9, 310)),
        );
        check(&format!("8 ()) Z 1 11 11 {times}"), Some((11, 310)));
        check("8 (x) S 1 11 11 0 -1 4194560 100 0 0 0 250 50 7", None);
        check("8 (x) S 1 11 11 0 -1 4194560 100 0 0 0 250 50 7 -3", None);
        check("42 (sleep) S 1 42", None);
        check("garbage", None);
        check("", None);
    }

    #[test]
    fn parses_memory_lines() {
        let check = |parse: fn(&str) -> Option<u64>, text: &str, expected: Option<u64>| {
            assert_eq!(parse(text), expected, "{text:?}");
        };
        check(
            parse_status_rss,
            "Name:\tsh\nVmHWM:\t  9 kB\nVmRSS:\t    1536 kB\n",
            Some(1536 * 1024),
        );
        check(parse_status_rss, "Name:\tkthreadd\nThreads:\t1\n", None);
        check(parse_status_rss, "VmRSS:\tlots kB\n", None);
        check(
            parse_mem_total,
            "MemTotal:       24684196 kB\nMemFree: 1 kB\n",
            Some(24684196 * 1024),
        );
        check(parse_mem_total, "MemFree: 1 kB\n", None);
        check(parse_mem_total, "", None);
    }

    #[test]
    fn parses_shares() {
        let check = |settings: &[(&str, &str)], expected: Result<Share, &str>| {
            let settings = settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let actual = parse_share(&settings, CPU_CORES_PROPERTY, MEMORY_LIMIT_PROPERTY)
                .map_err(|e| e.to_string());
            assert_eq!(actual, expected.map_err(str::to_string), "{settings:?}");
        };
        check(&[], Ok(Share::default()));
        check(
            &[
                ("cpu_cores", "0.5"),
                ("memory_limit_mb", "256"),
                ("other", "x"),
            ],
            Ok(Share {
                cpu_cores: 0.5,
                memory_limit_mb: Some(256),
            }),
        );
        check(
            &[("cpu_cores", "0")],
            Err("cpu_cores=\"0\": expected a positive number of cores"),
        );
        check(
            &[("cpu_cores", "NaN")],
            Err("cpu_cores=\"NaN\": expected a positive number of cores"),
        );
        check(
            &[("memory_limit_mb", "1.5")],
            Err("memory_limit_mb=\"1.5\": expected a positive whole number of MiB"),
        );
    }

    #[test]
    fn share_survives_the_environment() {
        let share = Share {
            cpu_cores: 2.5,
            memory_limit_mb: Some(64),
        };
        let env = share_env(&share);
        assert_eq!(
            parse_share(&env, CPU_CORES_ENV, MEMORY_LIMIT_ENV),
            Ok(share)
        );
        let default_env = share_env(&Share::default());
        assert_eq!(
            parse_share(&default_env, CPU_CORES_ENV, MEMORY_LIMIT_ENV),
            Ok(Share::default())
        );
    }

    /// One member's (cpu_percent, memory_percent) per scan; `None` for a scan that reports nothing.
    type Reported = Option<(Option<f64>, Option<f64>)>;

    #[test]
    fn observes_members_over_scans() {
        const MIB: u64 = 1024 * 1024;
        let start = Instant::now();
        let check = |share: Share,
                     scans: &[(u64, u32, Option<GroupUsage>)],
                     expected: &[Reported]| {
            let mut baselines = HashMap::new();
            let mut reported = Vec::new();
            for (at_ms, pid, usage) in scans {
                let members = BTreeMap::from([("m-1".to_string(), Sampled { pid: *pid, share })]);
                let usage: HashMap<i32, GroupUsage> =
                    usage.iter().map(|u| (*pid as i32, *u)).collect();
                let at = start + Duration::from_millis(*at_ms);
                let observations = observe(&members, &usage, at, Some(1024 * MIB), &mut baselines);
                reported.push(observations.first().map(|o| match o {
                    Observation::Load {
                        cpu_percent,
                        memory_percent,
                        ..
                    } => (cpu_percent.map(round), memory_percent.map(round)),
                    other => panic!("unexpected observation {other:?}"),
                }));
            }
            assert_eq!(reported, expected, "{share:?} {scans:?}");
        };
        let usage = |ticks, rss_mb: u64| {
            Some(GroupUsage {
                ticks,
                rss_bytes: rss_mb * MIB,
            })
        };
        let one_core = Share::default();
        // One core busy for a second is 100%; memory is a share of the host's 1 GiB.
        check(
            one_core,
            &[
                (0, 10, usage(0, 256)),
                (1000, 10, usage(100, 512)),
                (2000, 10, usage(150, 512)),
            ],
            &[
                Some((None, Some(25.0))),
                Some((Some(100.0), Some(50.0))),
                Some((Some(50.0), Some(50.0))),
            ],
        );
        // Half a core as the share doubles the percentage; the limit replaces the host's memory.
        check(
            Share {
                cpu_cores: 0.5,
                memory_limit_mb: Some(128),
            },
            &[(0, 10, usage(0, 64)), (2000, 10, usage(100, 64))],
            &[Some((None, Some(50.0))), Some((Some(100.0), Some(50.0)))],
        );
        // A vanished group is skipped and starts from a new baseline when it is seen again.
        check(
            one_core,
            &[
                (0, 10, usage(0, 0)),
                (1000, 10, None),
                (2000, 10, usage(100, 0)),
                (3000, 10, usage(200, 0)),
            ],
            &[
                Some((None, Some(0.0))),
                None,
                Some((None, Some(0.0))),
                Some((Some(100.0), Some(0.0))),
            ],
        );
        // A new pid for the same member, or ticks that went back, do not make up a reading.
        check(
            one_core,
            &[
                (0, 10, usage(500, 0)),
                (1000, 11, usage(20, 0)),
                (2000, 11, usage(10, 0)),
            ],
            &[
                Some((None, Some(0.0))),
                Some((None, Some(0.0))),
                Some((Some(0.0), Some(0.0))),
            ],
        );
    }

    #[test]
    fn forgets_members_no_longer_sampled() {
        let mut baselines = HashMap::new();
        let members = BTreeMap::from([(
            "m-1".to_string(),
            Sampled {
                pid: 5,
                share: Share::default(),
            },
        )]);
        let usage = HashMap::from([(5, GroupUsage::default())]);
        observe(&members, &usage, Instant::now(), None, &mut baselines);
        assert!(baselines.contains_key("m-1"));
        let observations = observe(
            &BTreeMap::new(),
            &usage,
            Instant::now(),
            None,
            &mut baselines,
        );
        assert!(observations.is_empty());
        assert!(baselines.is_empty());
    }

    #[test]
    fn scans_this_process_group() {
        let own_group = own_pgrp();
        let usage = scan(&HashSet::from([own_group]));
        let group = usage
            .get(&own_group)
            .expect("this process's group is visible");
        assert!(group.rss_bytes > 0);
        assert!(host_memory().is_some_and(|bytes| bytes > group.rss_bytes));
    }

    #[test]
    fn reads_the_share_back_from_a_process() {
        let check = |env: &[(&str, &str)], expected: Share| {
            let mut child = std::process::Command::new("sleep")
                .arg("5")
                .envs(env.iter().copied())
                .spawn()
                .expect("sleep starts");
            // Until the child has exec'd, its environment is still this process's, and for a
            // moment during the exec it reads as empty.
            let exec_done = || {
                let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id()));
                let environ = std::fs::read(format!("/proc/{}/environ", child.id()));
                comm.is_ok_and(|name| name.trim() == "sleep")
                    && environ.is_ok_and(|env| !env.is_empty())
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while !exec_done() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let share = share_of_process(child.id());
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(share, expected, "{env:?}");
        };
        check(
            &[(CPU_CORES_ENV, "2.5"), (MEMORY_LIMIT_ENV, "64")],
            Share {
                cpu_cores: 2.5,
                memory_limit_mb: Some(64),
            },
        );
        check(&[(CPU_CORES_ENV, "many")], Share::default());
        check(&[], Share::default());
    }

    fn own_pgrp() -> i32 {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        parse_stat(&stat).expect("own stat parses").pgrp
    }

    fn round(value: f64) -> f64 {
        (value * 100.0).round() / 100.0
    }
}
