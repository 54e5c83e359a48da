//! Text renderings of API answers for people: tables and the application tree.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn apps_table(apps: &Value) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["APPLICATION", "STATUS", "DEPLOYED", "MEMBERS ACTIVE/WANTED"]);
    for app in apps.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        table.add_row([
            str_of(app, "id").to_string(),
            str_of(app, "status").to_string(),
            app.get("deployed")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
            format!(
                "{}/{}",
                app.get("active_members")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                app.get("wanted_members")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            ),
        ]);
    }
    table
}

pub fn events_table(events: &Value) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["AT", "SUBJECT", "WHAT"]);
    for e in events.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        // Time of day is what a reader scans for; the date is in the JSON output.
        let at = str_of(e, "at");
        let time_of_day = at
            .split_once('T')
            .map_or(at, |(_, time)| time.trim_end_matches('Z'));
        table.add_row([
            time_of_day.to_string(),
            str_of(e, "subject").to_string(),
            str_of(e, "message").to_string(),
        ]);
    }
    table
}

/// Active and total members anywhere in a runtime view.
pub fn member_counts(view: &Value) -> (usize, usize) {
    let mut active = 0;
    let mut total = 0;
    visit_clusters(view, &mut |cluster| {
        for m in items(cluster, "members") {
            total += 1;
            if str_of(m, "status") == "Active" {
                active += 1;
            }
        }
    });
    (active, total)
}

fn visit_clusters(node: &Value, f: &mut impl FnMut(&Value)) {
    items(node, "clusters").iter().for_each(&mut *f);
    for group in items(node, "groups") {
        for instance in items(group, "instances") {
            visit_clusters(instance, f);
        }
    }
}

/// The runtime view as an indented tree.
pub fn tree(view: &Value) -> String {
    let mut out = format!("{} [{}]\n", str_of(view, "id"), str_of(view, "status"));
    node(view, 1, &mut out);
    out
}

fn node(v: &Value, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    for group in items(v, "groups") {
        out.push_str(&format!(
            "{pad}group {} [{}]\n",
            str_of(group, "alias"),
            str_of(group, "status")
        ));
        for instance in items(group, "instances") {
            out.push_str(&format!(
                "{pad}  instance {} [{}] in {}\n",
                str_of(instance, "id"),
                str_of(instance, "status"),
                str_of(instance, "network_partition")
            ));
            node(instance, depth + 2, out);
        }
    }
    for cluster in items(v, "clusters") {
        out.push_str(&format!(
            "{pad}cluster {} ({}) [{}] min {} max {}\n",
            str_of(cluster, "alias"),
            str_of(cluster, "cartridge"),
            str_of(cluster, "status"),
            cluster.get("min").and_then(Value::as_u64).unwrap_or(0),
            cluster.get("max").and_then(Value::as_u64).unwrap_or(0),
        ));
        for m in items(cluster, "members") {
            let ports: Vec<String> = m
                .get("ports")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "{pad}  {} [{}] {}/{} {}\n",
                str_of(m, "id"),
                str_of(m, "status"),
                str_of(m, "network_partition"),
                str_of(m, "partition"),
                ports.join(" ")
            ));
        }
    }
}
