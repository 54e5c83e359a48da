//! Whatever the input, the parsers and checks answer with a value or diagnostics, never a panic.

use std::path::Path;

use cairn_model::*;
use proptest::prelude::*;

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = root.join("../shared/stratos-samples");
    [
        root.join("examples/minimal.yaml"),
        root.join("examples/three-tier.yaml"),
        shared.join("cartridges/mock/php.json"),
        shared.join("cartridge-groups/group1.json"),
        shared.join("applications/complex/php-tomcat-group-postgres-mysql-group-esb/artifacts/application.json"),
        shared.join("application-policies/application-policy-3.json"),
        shared.join("deployment-policies/deployment-policy-2.json"),
        shared.join("autoscaling-policies/autoscaling-policy-1.json"),
    ]
    .iter()
    .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
    .collect()
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "'",
    "-",
    "\n",
    " ",
    "  ",
    "\t",
    "0",
    "-1",
    "70000",
    "1e999",
    "null",
    "~",
    "true",
    "\"x\"",
    "&a ",
    "*a",
    "!!str ",
    "? ",
    "# c",
    "|",
    ">",
    "---",
    "...",
    "\\u0000",
    "é",
    "cartridge.",
    "group.x",
    "depends_on: [",
    "components:",
    "ports: [0]",
    "min: 9",
    "max: 0",
    "<<: *a",
    "%YAML 1.2",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete { at: f64, len: usize },
    Insert { at: f64, token: usize },
    Duplicate { at: f64, len: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0.0..1.0, 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0.0..1.0, 0..TOKENS.len()).prop_map(|(at, token)| Edit::Insert { at, token }),
        (0.0..1.0, 1usize..80).prop_map(|(at, len)| Edit::Duplicate { at, len }),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let spot = |at: f64, n: usize| ((at * n as f64) as usize).min(n);
        match e {
            Edit::Delete { at, len } => {
                let start = spot(*at, chars.len());
                let end = (start + len).min(chars.len());
                chars.drain(start..end);
            }
            Edit::Insert { at, token } => {
                let start = spot(*at, chars.len());
                chars.splice(start..start, TOKENS[*token].chars());
            }
            Edit::Duplicate { at, len } => {
                let start = spot(*at, chars.len());
                let end = (start + len).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                chars.splice(end..end, copy);
            }
        }
    }
    chars.into_iter().collect()
}

/// Runs every entry point over one text; only panics matter.
fn exercise(text: &str) {
    let mut bundles = Vec::new();
    bundles.extend(parse_yaml("fuzz", text).ok());
    for kind in ArtifactKind::ALL {
        bundles.extend(parse_stratos(kind, "fuzz", text).ok());
    }
    bundles.extend(parse_stratos_any("fuzz", text).ok().map(|(_, b)| b));
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = detect_stratos_kind(&value);
    }
    for bundle in bundles {
        let _ = validate_bundle(&bundle);
        let mut catalog = Catalog::default();
        catalog.add_bundle(bundle.clone());
        for app in &bundle.applications {
            for policy in &bundle.application_policies {
                let _ = resolve(&catalog, &app.id, &policy.id);
            }
            for kind in ArtifactKind::ALL {
                let _ = catalog.applications_using(kind, &app.id);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        exercise(&text);
    }

    #[test]
    fn mutated_artifacts_never_panic(seed in 0usize..8, edits in prop::collection::vec(edit(), 1..6)) {
        let seeds = seeds();
        exercise(&apply(&seeds[seed % seeds.len()], &edits));
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    for text in [
        "[".repeat(100_000),
        "- ".repeat(100_000),
        "{a: ".repeat(50_000),
    ] {
        exercise(&text);
    }
}
