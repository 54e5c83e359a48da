//! Acknowledged writes survive SIGKILL: this test binary runs itself as a child that writes in a
//! loop and prints every acknowledged write, is killed mid-loop, and the parent reopens the store.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_store::{DATABASE_FILE_NAME, RedbStore, Store, StoreError, StoreExt, Txn};
use support::TempDir;

/// Set only in the child: the data dir it writes to.
const CHILD_DATA_DIR: &str = "CAIRN_STORE_CRASH_CHILD_DATA_DIR";
const ACKS_BEFORE_KILL: usize = 150;
const ROUNDS: usize = 3;

fn item_key(n: u64) -> String {
    format!("items/{n:08}")
}

fn item_value(n: u64) -> String {
    format!("value of item {n}")
}

/// The child's write loop; a no-op when run as an ordinary test.
#[test]
fn crash_child_writer() {
    let Some(data_dir) = std::env::var_os(CHILD_DATA_DIR) else {
        return;
    };
    let store = RedbStore::open(data_dir).expect("child opens the store");
    let last: Option<u64> = store.get_json("last").expect("get");
    for n in last.map_or(0, |last| last + 1).. {
        // Each commit writes an item and the counter together, so the parent can check atomicity.
        let txn = match store.get("last").expect("get") {
            Some(last) => Txn::new().if_mod_revision("last", last.mod_revision),
            None => Txn::new().if_absent("last"),
        };
        let txn = txn
            .put(&item_key(n), item_value(n))
            .put_json("last", &n)
            .expect("encode");
        assert!(store.txn(txn).expect("txn").succeeded);
        println!("ack {n}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new("crash");
    for round in 0..ROUNDS {
        let acknowledged = run_and_kill_child(&dir);
        let store = RedbStore::open(dir.path()).expect("store reopens after SIGKILL");
        let last: u64 = store.get_json("last").expect("get").expect("counter");
        let highest_ack = acknowledged.iter().copied().max().expect("some acks");
        assert!(
            last >= highest_ack,
            "round {round}: last committed {last} < acknowledged {highest_ack}"
        );
        assert_eq!(store.revision(), last + 1);
        let items = store.list("items/").expect("list").entries;
        assert_eq!(
            items.len() as u64,
            last + 1,
            "items and counter commit together"
        );
        for (n, item) in (0u64..).zip(&items) {
            assert_eq!(item.key, item_key(n));
            assert_eq!(item.value, item_value(n).into_bytes());
        }
    }
}

/// Runs the child writer on `dir`, checks that the store refuses a second open while the child
/// holds it, SIGKILLs the child mid-loop and returns every write the child acknowledged.
fn run_and_kill_child(dir: &TempDir) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DATA_DIR, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines, acks) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some(n) = line.strip_prefix("ack ") else {
                continue;
            };
            if lines.send(n.parse::<u64>().expect("ack number")).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acknowledged = Vec::new();
    while acknowledged.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match acks.recv_timeout(left) {
            Ok(n) => acknowledged.push(n),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "child stopped acknowledging after {} writes: {error}",
                    acknowledged.len()
                );
            }
        }
    }

    let expected_path = dir.path().join(DATABASE_FILE_NAME);
    match RedbStore::open(dir.path()) {
        Err(error @ StoreError::AlreadyOpen { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&expected_path.display().to_string()),
                "{message}"
            );
        }
        Err(other) => panic!("expected AlreadyOpen while the child holds the store, got {other}"),
        Ok(_) => panic!("opened a store another process holds"),
    }

    // Child::kill sends SIGKILL on Unix.
    child.kill().expect("SIGKILL the child");
    child.wait().expect("child reaped");
    // Acks the child printed before it died are acknowledged too; the reader ends at EOF.
    while let Ok(n) = acks.recv_timeout(Duration::from_secs(5)) {
        acknowledged.push(n);
    }
    acknowledged
}
