//! A member killed with SIGKILL is replaced, and its group's termination behaviour decides who
//! else restarts: real processes, real health checks.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{Cairn, members};

fn blueprint(termination: &str) -> String {
    format!(
        r#"
application: heal
cartridges:
  w:
    ports:
      - port: 8000
components:
  outside:
    cartridge: w
  grp:
    termination: {termination}
    components:
      a:
        cartridge: w
      b:
        cartridge: w
        depends_on: [a]
      c:
        cartridge: w
"#
    )
}

/// Member id by cluster alias (each cluster here has one member).
fn ids(view: &serde_json::Value) -> BTreeMap<String, String> {
    members(view)
        .into_iter()
        .map(|(alias, m)| (alias, m["id"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Kills cluster `a`'s member and returns the ids before and after the application is whole again.
fn kill_a(termination: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let cairn = Cairn::start(&format!("heal-{termination}"), &[]);
    let (status, body) = cairn.post_blueprint(&blueprint(termination));
    assert_eq!(status, 201, "{body}");
    let before = ids(&cairn.wait_active("heal"));
    assert_eq!(before.len(), 4, "{before:?}");
    let pid = support::pid_of(&cairn.data_dir, &before["a"]).expect("a's member runs");
    support::kill9(pid);
    let after = cairn.wait_for(
        "heal",
        "a replaced and everything Active again",
        Duration::from_secs(20),
        |v| {
            let now = ids(v);
            v["status"] == "Active"
                && now.len() == 4
                && now.get("a") != before.get("a")
                && members(v).iter().all(|(_, m)| m["status"] == "Active")
        },
    );
    let after = ids(&after);
    // Exactly the expected processes run: no leftovers of the restarted members.
    let running: Vec<String> = support::member_processes(&cairn.data_dir)
        .into_values()
        .collect();
    assert_eq!(running.len(), 4, "running: {running:?}, view: {after:?}");
    (before, after)
}

fn check(termination: &str, restarted: &[&str]) {
    let (before, after) = kill_a(termination);
    for alias in ["outside", "a", "b", "c"] {
        let changed = before[alias] != after[alias];
        let expected = alias == "a" || restarted.contains(&alias);
        assert_eq!(
            changed, expected,
            "{termination}: {alias} restarted = {changed}; before {before:?}, after {after:?}"
        );
    }
}

#[test]
fn terminate_none_replaces_only_the_dead_member() {
    check("terminate-none", &[]);
}

#[test]
fn terminate_dependents_restarts_what_depends_on_it() {
    check("terminate-dependents", &["b"]);
}

#[test]
fn terminate_all_restarts_the_whole_group_instance() {
    check("terminate-all", &["b", "c"]);
}
