//! The environment and command line a member is started with; no I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::MemberSpec;

/// The variable that names the member in its own environment, and lets adopt recognise it.
pub(crate) const MEMBER_ID_VAR: &str = "CAIRN_MEMBER_ID";
/// The variable that tells which Cairn (by its data directory) started the member.
pub(crate) const DATA_DIR_VAR: &str = "CAIRN_DATA_DIR";
const PORT_VAR_PREFIX: &str = "CAIRN_PORT_";

/// The variable holding the port named `name`: `CAIRN_PORT_` and the name upper-cased,
/// with every character other than a letter or digit turned into `_`.
pub fn port_env_name(name: &str) -> String {
    let suffix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{PORT_VAR_PREFIX}{suffix}")
}

/// Whether an inherited variable describes ports and so must not leak into a member.
pub(crate) fn is_port_var(name: &str) -> bool {
    name == "PORT" || name == "CAIRN_PORTS" || name.starts_with(PORT_VAR_PREFIX)
}

/// Checks what the operating system or the log file name would reject.
pub(crate) fn validate(spec: &MemberSpec) -> Result<(), String> {
    let id = &spec.member_id;
    let id_ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !id_ok {
        return Err(
            "member id must be 1-200 letters, digits, '.', '_' or '-', not starting with '.'"
                .to_owned(),
        );
    }
    let Some(program) = spec.command.first() else {
        return Err("command is empty".to_owned());
    };
    if program.is_empty() {
        return Err("command names an empty program".to_owned());
    }
    if let Some(arg) = spec.command.iter().find(|arg| arg.contains('\0')) {
        return Err(format!("command argument {arg:?} contains a NUL byte"));
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(format!(
                "environment variable name {key:?} is empty or has '=' or NUL"
            ));
        }
        if value.contains('\0') {
            return Err(format!("environment variable {key} contains a NUL byte"));
        }
    }
    for field in [&spec.application, &spec.cluster] {
        if field.contains('\0') {
            return Err(format!("{field:?} contains a NUL byte"));
        }
    }
    let mut port_vars = BTreeMap::new();
    for port in &spec.ports {
        if port.name.is_empty() || port.name.contains([',', '=', '\0']) {
            return Err(format!(
                "port name {:?} is empty or has ',', '=' or NUL",
                port.name
            ));
        }
        if let Some(other) = port_vars.insert(port_env_name(&port.name), &port.name) {
            return Err(format!("port names {other:?} and {:?} collide", port.name));
        }
    }
    Ok(())
}

/// The variables Cairn gives a member; they win over the caller's `spec.env`.
pub(crate) fn member_env(
    spec: &MemberSpec,
    ports: &[(String, SocketAddr)],
    data_dir: &str,
) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    env.insert(MEMBER_ID_VAR.to_owned(), spec.member_id.clone());
    env.insert("CAIRN_APPLICATION".to_owned(), spec.application.clone());
    env.insert("CAIRN_CLUSTER".to_owned(), spec.cluster.clone());
    env.insert(DATA_DIR_VAR.to_owned(), data_dir.to_owned());
    if let Some((_, first)) = ports.first() {
        env.insert("PORT".to_owned(), first.port().to_string());
        let listing: Vec<String> = ports
            .iter()
            .map(|(name, addr)| format!("{name}={}", addr.port()))
            .collect();
        env.insert("CAIRN_PORTS".to_owned(), listing.join(","));
    }
    for (name, addr) in ports {
        env.insert(port_env_name(name), addr.port().to_string());
    }
    env
}

/// Replaces each `${NAME}` in `arg` by `lookup(NAME)`; unknown names and stray `$` stay as written,
/// so shell snippets that use their own variables pass through.
pub(crate) fn substitute(arg: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let replacement = after.find('}').and_then(|end| {
            let name = &after[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let value = if valid { lookup(name) } else { None };
            value.map(|value| (value, end))
        });
        match replacement {
            Some((value, end)) => {
                out.push_str(&value);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortRequest;

    fn spec(member_id: &str, command: &[&str], ports: &[&str]) -> MemberSpec {
        MemberSpec {
            member_id: member_id.to_owned(),
            application: "app".to_owned(),
            cluster: "web".to_owned(),
            command: command.iter().map(|arg| (*arg).to_owned()).collect(),
            env: BTreeMap::from([("DB_PORT".to_owned(), "5432".to_owned())]),
            ports: ports
                .iter()
                .map(|name| PortRequest {
                    name: (*name).to_owned(),
                    port: 80,
                })
                .collect(),
            log_dir: "/tmp".into(),
        }
    }

    #[test]
    fn substitutes_known_variables_only() {
        let check = |arg: &str, expected: &str| {
            let lookup = |name: &str| match name {
                "PORT" => Some("8080".to_owned()),
                "EMPTY" => Some(String::new()),
                _ => None,
            };
            assert_eq!(substitute(arg, lookup), expected, "arg {arg:?}");
        };
        check("--port=${PORT}", "--port=8080");
        check("${PORT}${PORT}", "80808080");
        check("a${EMPTY}b", "ab");
        check("$PORT", "$PORT");
        check("${UNKNOWN} ${PORT}", "${UNKNOWN} 8080");
        check("${not valid} ${PORT}", "${not valid} 8080");
        check("${1X}", "${1X}");
        check("${PORT", "${PORT");
        check("${}", "${}");
        check("é${PORT}é", "é8080é");
    }

    #[test]
    fn names_port_variables() {
        for (name, expected) in [
            ("http", "CAIRN_PORT_HTTP"),
            ("http-alt", "CAIRN_PORT_HTTP_ALT"),
            ("Admin.2", "CAIRN_PORT_ADMIN_2"),
            ("ü", "CAIRN_PORT__"),
        ] {
            assert_eq!(port_env_name(name), expected);
        }
    }

    #[test]
    fn rejects_specs_the_system_would_refuse() {
        let check = |spec: MemberSpec, expected: Option<&str>| {
            assert_eq!(validate(&spec).err().as_deref(), expected, "{spec:?}");
        };
        check(spec("web-1.a_b", &["sh"], &["http", "admin"]), None);
        let bad_id =
            Some("member id must be 1-200 letters, digits, '.', '_' or '-', not starting with '.'");
        check(spec("", &["sh"], &[]), bad_id);
        check(spec("../x", &["sh"], &[]), bad_id);
        check(spec(".hidden", &["sh"], &[]), bad_id);
        check(spec("a", &[], &[]), Some("command is empty"));
        check(
            spec("a", &[""], &[]),
            Some("command names an empty program"),
        );
        check(
            spec("a", &["sh", "x\0"], &[]),
            Some("command argument \"x\\0\" contains a NUL byte"),
        );
        check(
            spec("a", &["sh"], &["http-alt", "http.alt"]),
            Some("port names \"http-alt\" and \"http.alt\" collide"),
        );
        check(
            spec("a", &["sh"], &["a=b"]),
            Some("port name \"a=b\" is empty or has ',', '=' or NUL"),
        );
        let mut bad_env = spec("a", &["sh"], &[]);
        bad_env.env.insert("A=B".to_owned(), String::new());
        check(
            bad_env,
            Some("environment variable name \"A=B\" is empty or has '=' or NUL"),
        );
    }

    #[test]
    fn tells_the_member_its_ports() {
        let spec = spec("m1", &["sh"], &["http", "admin-api"]);
        let ports = vec![
            ("http".to_owned(), "127.0.0.1:4001".parse().expect("addr")),
            (
                "admin-api".to_owned(),
                "127.0.0.1:4002".parse().expect("addr"),
            ),
        ];
        let env = member_env(&spec, &ports, "/data");
        let rendered: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            rendered,
            [
                "CAIRN_APPLICATION=app",
                "CAIRN_CLUSTER=web",
                "CAIRN_DATA_DIR=/data",
                "CAIRN_MEMBER_ID=m1",
                "CAIRN_PORTS=http=4001,admin-api=4002",
                "CAIRN_PORT_ADMIN_API=4002",
                "CAIRN_PORT_HTTP=4001",
                "DB_PORT=5432",
                "PORT=4001",
            ]
        );
        assert!(is_port_var("CAIRN_PORT_X") && is_port_var("PORT") && !is_port_var("PORTS"));
    }
}
