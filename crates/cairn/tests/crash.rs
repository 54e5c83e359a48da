//! `kill -9` of Cairn itself in the middle of a deploy: after a restart on the same data
//! directory the application converges with exactly the expected members, no duplicates and no
//! orphaned processes.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{BIN, Cairn, active, members};

/// Four tiers in a chain, two members each, every member slow to start, so a deploy takes a while.
fn blueprint() -> String {
    format!(
        r#"
application: crash
cartridges:
  slow:
    command: ["sh", "-c", "sleep 0.3; exec '{BIN}' workload"]
    ports:
      - port: 8000
components:
  t1: {{cartridge: slow, min: 2, max: 2}}
  t2: {{cartridge: slow, min: 2, max: 2, depends_on: [t1]}}
  t3: {{cartridge: slow, min: 2, max: 2, depends_on: [t2]}}
  t4: {{cartridge: slow, min: 2, max: 2, depends_on: [t3]}}
"#
    )
}

#[test]
fn cairn_killed_during_deploy_converges_without_duplicates_or_orphans() {
    let mut cairn = Cairn::start("crash", &[]);
    let (status, body) = cairn.post_blueprint(&blueprint());
    assert_eq!(status, 201, "{body}");
    // Crash at different points of the deploy: while the first tier starts, mid-way, and right
    // after restarting.
    for delay_ms in [150, 700, 400] {
        std::thread::sleep(Duration::from_millis(delay_ms));
        cairn.kill9();
        cairn.launch();
    }
    let view = cairn.wait_for(
        "crash",
        "Active with 8 Active members",
        Duration::from_secs(30),
        |v| v["status"] == "Active" && active(v) == 8,
    );
    let all = members(&view);
    assert_eq!(all.len(), 8, "exactly min members per cluster: {view}");
    let ids: BTreeSet<String> = all
        .iter()
        .map(|(_, m)| m["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids.len(), 8, "member ids are unique");
    for tier in ["t1", "t2", "t3", "t4"] {
        assert_eq!(
            all.iter().filter(|(alias, _)| alias == tier).count(),
            2,
            "{tier}: {view}"
        );
    }
    // The event log outlives the crashes: the deploy before the first one is still there.
    let (status, events) = cairn.get("/v1/events?application=crash");
    assert_eq!(status, 200, "{events}");
    let messages: Vec<&str> = events
        .as_array()
        .map(|list| list.iter().filter_map(|e| e["message"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        messages.iter().filter(|m| **m == "deployed").count(),
        1,
        "{messages:?}"
    );
    // Give anything stray a moment to show up, then compare with what really runs.
    std::thread::sleep(Duration::from_millis(500));
    let running: BTreeSet<String> = support::member_processes(&cairn.data_dir)
        .into_values()
        .collect();
    assert_eq!(
        running, ids,
        "running processes are exactly the members in the view"
    );
}
