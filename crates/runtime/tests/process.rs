//! The process driver against real processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_runtime::{
    Adoption, ExitStatus, MemberExit, MemberSpec, PortRequest, ProcessRuntime, RunningMember,
    Runtime, log_path, read_log,
};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

/// A directory of its own for one test, and the members to kill if the test fails midway.
struct Scratch {
    dir: PathBuf,
    pids: std::sync::Mutex<Vec<u32>>,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("cairn-runtime-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch {
            dir,
            pids: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn spec(&self, member_id: &str, command: &[&str], ports: &[&str]) -> MemberSpec {
        MemberSpec {
            member_id: member_id.to_owned(),
            application: "app".to_owned(),
            cluster: "web".to_owned(),
            command: command.iter().map(|arg| (*arg).to_owned()).collect(),
            env: BTreeMap::new(),
            ports: ports
                .iter()
                .map(|name| PortRequest {
                    name: (*name).to_owned(),
                    port: 80,
                })
                .collect(),
            log_dir: self.logs(),
        }
    }

    async fn start(&self, runtime: &ProcessRuntime, spec: MemberSpec) -> RunningMember {
        let running = runtime.start(spec).await.expect("start");
        self.pids.lock().expect("pids").push(running.pid);
        running
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for pid in self
            .pids
            .lock()
            .map(|pids| pids.clone())
            .unwrap_or_default()
        {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for_log(logs: &Path, member_id: &str, needle: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let log = read_log(logs, member_id, 100);
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "log of {member_id} never showed {needle:?}: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_exit(exits: &mut UnboundedReceiver<MemberExit>, member_id: &str) -> MemberExit {
    timeout(LIMIT, async {
        loop {
            let exit = exits.recv().await.expect("exit channel open");
            if exit.member_id == member_id {
                return exit;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no exit reported for {member_id}"))
}

/// Gone, or dead and waiting for a parent that may never reap it.
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: u32) {
    let deadline = Instant::now() + LIMIT;
    while !is_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn starts_with_its_ports_in_the_environment() {
    let scratch = Scratch::new("env");
    let runtime = ProcessRuntime::new(scratch.dir.clone());
    let script = "echo port=$PORT id=$CAIRN_MEMBER_ID admin=$CAIRN_PORT_ADMIN_API \
                  ports=$CAIRN_PORTS extra=$EXTRA app=$CAIRN_APPLICATION cluster=$CAIRN_CLUSTER \
                  arg=$0; sleep 30";
    let mut spec = scratch.spec(
        "m1",
        &["sh", "-c", script, "${PORT}"],
        &["http", "admin-api"],
    );
    spec.env.insert("EXTRA".to_owned(), "x".to_owned());
    let running = scratch.start(&runtime, spec).await;
    assert_eq!(running.member_id, "m1");
    let http = running.ports["http"];
    let admin = running.ports["admin-api"];
    assert!(http.ip().is_loopback() && admin.ip().is_loopback());
    assert_ne!(http.port(), admin.port());
    let (http, admin) = (http.port(), admin.port());
    let expected = format!(
        "port={http} id=m1 admin={admin} ports=http={http},admin-api={admin} extra=x app=app \
         cluster=web arg={http}\n"
    );
    assert_eq!(wait_for_log(&scratch.logs(), "m1", "\n").await, expected);
    assert_eq!(runtime.tracked(), ["m1"]);
    let duplicate = runtime
        .start(scratch.spec("m1", &["sleep", "1"], &[]))
        .await;
    assert_eq!(
        duplicate.expect_err("already running").to_string(),
        "member m1 is already running"
    );
    runtime.stop("m1", LIMIT).await.expect("stop");
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let scratch = Scratch::new("group");
    let runtime = ProcessRuntime::new(scratch.dir.clone());
    let mut exits = runtime.exits();
    let spec = scratch.spec("g1", &["sh", "-c", "sleep 30 & echo child=$!; wait"], &[]);
    let running = scratch.start(&runtime, spec).await;
    let log = wait_for_log(&scratch.logs(), "g1", "\n").await;
    let grandchild: u32 = log
        .trim()
        .strip_prefix("child=")
        .and_then(|pid| pid.parse().ok())
        .expect("child pid");
    let asked = Instant::now();
    runtime.stop("g1", LIMIT).await.expect("stop");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "SIGTERM was not enough"
    );
    let exit = next_exit(&mut exits, "g1").await;
    assert_eq!(
        (exit.pid, exit.status),
        (running.pid, ExitStatus::Signal(15))
    );
    wait_gone(grandchild).await;
    assert!(runtime.tracked().is_empty());
    runtime
        .stop("g1", LIMIT)
        .await
        .expect("stopping a stopped member");
    runtime
        .stop("never-started", LIMIT)
        .await
        .expect("stopping an unknown member");
}

#[tokio::test]
async fn stop_kills_after_the_grace_period() {
    let scratch = Scratch::new("grace");
    let runtime = ProcessRuntime::new(scratch.dir.clone());
    let mut exits = runtime.exits();
    let script = "trap '' TERM; echo ready; while true; do sleep 0.1; done";
    scratch
        .start(
            &runtime,
            scratch.spec("stubborn", &["sh", "-c", script], &[]),
        )
        .await;
    wait_for_log(&scratch.logs(), "stubborn", "ready").await;
    let asked = Instant::now();
    runtime
        .stop("stubborn", Duration::from_millis(300))
        .await
        .expect("stop");
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        next_exit(&mut exits, "stubborn").await.status,
        ExitStatus::Signal(9)
    );
}

#[tokio::test]
async fn reports_exits_with_their_status() {
    let scratch = Scratch::new("exits");
    let runtime = ProcessRuntime::new(scratch.dir.clone());
    let mut exits = runtime.exits();
    scratch
        .start(
            &runtime,
            scratch.spec("three", &["sh", "-c", "echo bye; exit 3"], &[]),
        )
        .await;
    let exit = next_exit(&mut exits, "three").await;
    assert_eq!(exit.status, ExitStatus::Code(3));
    assert_eq!(exit.status.to_string(), "exited with code 3");
    assert_eq!(read_log(&scratch.logs(), "three", 10), "bye\n");

    let running = scratch
        .start(&runtime, scratch.spec("victim", &["sleep", "30"], &[]))
        .await;
    kill(Pid::from_raw(running.pid as i32), Signal::SIGKILL).expect("kill -9");
    let exit = next_exit(&mut exits, "victim").await;
    assert_eq!(exit.status, ExitStatus::Signal(9));
    assert_eq!(exit.status.to_string(), "killed by signal 9 (SIGKILL)");
    assert!(runtime.tracked().is_empty());
}

#[tokio::test]
async fn exits_before_any_subscriber_are_kept() {
    let scratch = Scratch::new("pending");
    let runtime = ProcessRuntime::new(scratch.dir.clone());
    scratch
        .start(
            &runtime,
            scratch.spec("early", &["sh", "-c", "exit 4"], &[]),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut exits = runtime.exits();
    assert_eq!(
        next_exit(&mut exits, "early").await.status,
        ExitStatus::Code(4)
    );
}

#[tokio::test]
async fn adopts_members_after_a_restart() {
    let scratch = Scratch::new("adopt");
    let before = ProcessRuntime::new(scratch.dir.clone());
    let killed = scratch
        .start(&before, scratch.spec("a", &["sleep", "30"], &[]))
        .await;
    let stopped = scratch
        .start(&before, scratch.spec("b", &["sleep", "30"], &[]))
        .await;
    drop(before);

    let after = ProcessRuntime::new(scratch.dir.clone());
    let mut exits = after.exits();
    assert_eq!(after.adopt(&killed).await, Adoption::Adopted);
    assert_eq!(
        after.adopt(&killed).await,
        Adoption::Adopted,
        "adopting twice"
    );
    assert_eq!(after.adopt(&stopped).await, Adoption::Adopted);
    assert_eq!(after.tracked(), ["a", "b"]);

    kill(Pid::from_raw(killed.pid as i32), Signal::SIGKILL).expect("kill -9");
    let exit = next_exit(&mut exits, "a").await;
    assert_eq!((exit.pid, exit.status), (killed.pid, ExitStatus::Unknown));

    after.stop("b", LIMIT).await.expect("stop adopted");
    assert_eq!(next_exit(&mut exits, "b").await.pid, stopped.pid);
    wait_gone(stopped.pid).await;
    assert!(after.tracked().is_empty());
}

#[tokio::test]
async fn refuses_to_adopt_what_is_not_the_member() {
    let scratch = Scratch::new("refuse");
    let runtime = ProcessRuntime::new(scratch.dir.clone());
    let mut exits = runtime.exits();
    let dead = scratch
        .start(&runtime, scratch.spec("dead", &["sh", "-c", "exit 0"], &[]))
        .await;
    next_exit(&mut exits, "dead").await;
    let live = scratch
        .start(&runtime, scratch.spec("live", &["sleep", "30"], &[]))
        .await;

    let restarted = ProcessRuntime::new(scratch.dir.clone());
    let elsewhere = Scratch::new("refuse-elsewhere");
    let other_cairn = ProcessRuntime::new(elsewhere.dir.clone());
    let record = |member_id: &str, pid: u32| RunningMember {
        member_id: member_id.to_owned(),
        pid,
        ports: BTreeMap::new(),
        started_at: live.started_at,
    };
    let check = async |runtime: &ProcessRuntime, record: RunningMember, expected: Adoption| {
        assert_eq!(runtime.adopt(&record).await, expected, "{record:?}");
    };
    check(&restarted, dead.clone(), Adoption::Gone).await;
    check(
        &restarted,
        record("live", std::process::id()),
        Adoption::Gone,
    )
    .await;
    check(&restarted, record("other", live.pid), Adoption::Gone).await;
    check(&restarted, record("live", 0), Adoption::Gone).await;
    check(&restarted, record("live", 1), Adoption::Gone).await;
    check(&restarted, record("live", u32::MAX), Adoption::Gone).await;
    check(&other_cairn, live.clone(), Adoption::Gone).await;
    check(&runtime, record("live", dead.pid), Adoption::Gone).await;
    check(&restarted, live.clone(), Adoption::Adopted).await;
    runtime.stop("live", LIMIT).await.expect("stop");
}

#[tokio::test]
async fn kills_orphans_of_its_own_data_dir_only() {
    let scratch = Scratch::new("orphans");
    let elsewhere = Scratch::new("orphans-elsewhere");
    let before = ProcessRuntime::new(scratch.dir.clone());
    let other_cairn = ProcessRuntime::new(elsewhere.dir.clone());
    let kept = scratch
        .start(&before, scratch.spec("kept", &["sleep", "30"], &[]))
        .await;
    let orphan = scratch
        .start(
            &before,
            scratch.spec("orphan", &["sh", "-c", "sleep 30 & wait"], &[]),
        )
        .await;
    let foreign = elsewhere
        .start(
            &other_cairn,
            elsewhere.spec("orphan", &["sleep", "30"], &[]),
        )
        .await;

    let after = ProcessRuntime::new(scratch.dir.clone());
    assert_eq!(after.kill_orphans(&["kept".to_owned()]).await, ["orphan"]);
    wait_gone(orphan.pid).await;
    assert!(!is_gone(kept.pid), "a kept member was killed");
    assert!(
        !is_gone(foreign.pid),
        "another data dir's member was killed"
    );
    // The orphan's `sleep` child dies with its group, a moment after the shell.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !after.kill_orphans(&["kept".to_owned()]).await.is_empty() {
        assert!(Instant::now() < deadline, "orphans survive being killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    before.stop("kept", LIMIT).await.expect("stop");
    other_cairn.stop("orphan", LIMIT).await.expect("stop");
}

#[tokio::test]
async fn keeps_logs_bounded() {
    let scratch = Scratch::new("rotate");
    let runtime = ProcessRuntime::new(scratch.dir.clone()).with_log_cap(2000);
    let script = "i=0; while [ $i -lt 500 ]; do echo line-$i; i=$((i+1)); done; sleep 30";
    scratch
        .start(&runtime, scratch.spec("chatty", &["sh", "-c", script], &[]))
        .await;
    let log = log_path(&scratch.logs(), "chatty");
    let rotated = scratch.logs().join("chatty.log.1");
    // Rotation runs once a second and may catch the script half-way: wait for a settled state,
    // with room for a machine busy with other tests.
    let deadline = Instant::now() + 3 * LIMIT;
    let settled = || {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).ok();
        rotated.exists()
            && size(&log).is_some_and(|n| n <= 2000)
            && read_log(&scratch.logs(), "chatty", 2) == "line-498\nline-499\n"
    };
    while !settled() {
        assert!(
            Instant::now() < deadline,
            "log was never rotated down to its cap"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::metadata(&rotated).expect("rotated").len() > 0);
    runtime.stop("chatty", LIMIT).await.expect("stop");
}

#[tokio::test]
async fn refuses_bad_members_clearly() {
    let scratch = Scratch::new("bad");
    let runtime = ProcessRuntime::new(scratch.dir.clone());
    let check = async |spec: MemberSpec, expected: &str| {
        let error = runtime.start(spec).await.expect_err("start must fail");
        assert_eq!(error.to_string(), expected);
    };
    check(
        scratch.spec("m", &["cairn-test-no-such-program", "--flag"], &[]),
        "cannot start member m: program \"cairn-test-no-such-program\" not found",
    )
    .await;
    check(
        scratch.spec("m", &[], &[]),
        "invalid member \"m\": command is empty",
    )
    .await;
    check(
        scratch.spec("a/b", &["sleep", "1"], &[]),
        "invalid member \"a/b\": member id must be 1-200 letters, digits, '.', '_' or '-', \
         not starting with '.'",
    )
    .await;
    assert!(runtime.tracked().is_empty());
}

/// Runs the built-in workload when started as a member by `serves_the_builtin_workload`.
#[test]
#[ignore = "the entry point of a member process, not a test of its own"]
fn workload_member_entry() {
    if std::env::var_os("CAIRN_TEST_WORKLOAD").is_none() {
        return;
    }
    let config = cairn_workload::WorkloadConfig::from_env().expect("workload config");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime
        .block_on(cairn_workload::serve(config))
        .expect("workload");
}

#[tokio::test]
async fn serves_the_builtin_workload() {
    let scratch = Scratch::new("workload");
    let runtime = ProcessRuntime::new(scratch.dir.clone());
    let mut exits = runtime.exits();
    let exe = std::env::current_exe().expect("test executable");
    let exe = exe.to_str().expect("utf-8 path");
    let command = [
        exe,
        "--exact",
        "workload_member_entry",
        "--ignored",
        "--nocapture",
    ];
    let mut spec = scratch.spec("w1", &command, &["http", "admin"]);
    spec.env
        .insert("CAIRN_TEST_WORKLOAD".to_owned(), "1".to_owned());
    let running = scratch.start(&runtime, spec).await;
    let http = running.ports["http"];
    wait_for_log(
        &scratch.logs(),
        "w1",
        &format!("workload w1 listening on http={http}"),
    )
    .await;

    let response = timeout(LIMIT, async {
        let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
        let request = "GET /?bytes=10 HTTP/1.1\r\nHost: w1\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("receive");
        response
    })
    .await
    .expect("bounded");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("x-cairn-member: w1\r\n"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nmember w1 port http\n"),
        "{response}"
    );

    runtime.stop("w1", LIMIT).await.expect("stop");
    assert_eq!(
        next_exit(&mut exits, "w1").await.status,
        ExitStatus::Code(0),
        "graceful exit"
    );
}
