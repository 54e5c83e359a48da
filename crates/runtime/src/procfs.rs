//! What Linux's /proc tells about other processes: state, group, start time, environment.

use std::path::PathBuf;

/// The fields of `/proc/<pid>/stat` the runtime needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    /// Clock ticks after boot; with the pid it names one process, even after the pid is reused.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether the process still runs rather than waiting, dead, to be reaped.
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/<pid>/stat`, whose second field (the command name) may hold spaces and parentheses.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub(crate) fn stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process's environment as `NAME=value` entries; `None` if it cannot be read.
pub(crate) fn environ(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The value of `name` in an environment read by [`environ`].
pub(crate) fn env_value<'a>(environ: &'a [u8], name: &str) -> Option<&'a [u8]> {
    environ
        .split(|byte| *byte == 0)
        .find_map(|entry| entry.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
}

/// The pids of every process visible now.
pub(crate) fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The file the process's stdout points at.
pub(crate) fn stdout_path(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/fd/1")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let check = |text: &str, expected: Option<(char, i32, u64)>| {
            let actual = parse_stat(text).map(|s| (s.state, s.pgrp, s.start_time));
            assert_eq!(actual, expected, "{text:?}");
        };
        let tail = "0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        check(
            &format!("42 (sleep) S 1 42 42 {tail}"),
            Some(('S', 42, 987654)),
        );
        check(
            &format!("7 (a) b (c) Z 1 9 9 {tail}"),
            Some(('Z', 9, 987654)),
        );
        check("42 (sleep) S 1 42", None);
        check("garbage", None);
        check("", None);
    }

    #[test]
    fn finds_environment_values() {
        let environ = b"A=1\0CAIRN_MEMBER_ID=m-1\0CAIRN_MEMBER_ID_X=no\0EMPTY=\0";
        assert_eq!(env_value(environ, "CAIRN_MEMBER_ID"), Some(&b"m-1"[..]));
        assert_eq!(env_value(environ, "EMPTY"), Some(&b""[..]));
        assert_eq!(env_value(environ, "CAIRN_MEMBER"), None);
        assert_eq!(env_value(b"", "A"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = i32::try_from(std::process::id()).expect("pid fits");
        let own = stat(pid).expect("own stat");
        assert!(own.is_running());
        assert_eq!(own.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(pids().contains(&pid));
        assert!(environ(pid).is_some());
    }
}
