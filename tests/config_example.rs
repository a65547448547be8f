//! `examples/config/socket-bridge.toml` lists every setting with its default and a one-line
//! comment, and cannot drift from the config types: its keys and values are compared with
//! `Config::default()` here, so a setting added, renamed or given a new default fails this
//! test until the example is regenerated:
//!
//! ```sh
//! SOCKET_BRIDGE_REGENERATE_EXAMPLE=1 cargo test --test config_example
//! ```
//!
//! Regeneration takes every key and default from `Config::default()` (in declaration order)
//! and keeps the comments already in the file. A new setting's comment is seeded from its
//! `///` doc comment in `src/config/`; one without a doc comment gets a placeholder that
//! keeps this test failing until a comment is written in the example.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use socket_bridge::config::Config;

const PLACEHOLDER: &str = "TODO: say in one line what this setting does";
const REGENERATE: &str = "SOCKET_BRIDGE_REGENERATE_EXAMPLE=1 cargo test --test config_example";

const HEADER: &str = "\
# socket-bridge: every setting with its default. Loading this file as it is changes nothing.
#
# Settings come from, in rising priority: built-in defaults, this file (--config FILE or
# SOCKET_BRIDGE_CONFIG), environment variables SOCKET_BRIDGE_<SECTION>__<KEY> (for example
# SOCKET_BRIDGE_AUTH__JWT__SECRET), and --set section.key=value flags. Values are TOML.
# Check a file without starting: socket-bridge --config FILE --check-config
#
# Settings without a default are shown commented out, with an example value. Keep secrets
# (grpc.api_keys, auth.jwt.secret, dashboard.password, redis.url) out of files that others
# can read: pass them as environment variables from a secret store.
#
# Generated from the config types; tests/config_example.rs fails when this file drifts from
# them. Regenerate after adding or changing a setting (comments here are kept):
#   SOCKET_BRIDGE_REGENERATE_EXAMPLE=1 cargo test --test config_example
";

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/config/socket-bridge.toml")
}

/// A setting tree in declaration order (`serde_json::Value` would sort the keys).
#[derive(Debug, Clone)]
enum Node {
    Leaf(serde_json::Value),
    Section(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a setting value or section")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Leaf(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Leaf(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Leaf(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Leaf(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Leaf(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf(serde_json::Value::Null))
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf(serde_json::Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<serde_json::Value>()? {
                    items.push(item);
                }
                Ok(Node::Leaf(items.into()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Node>()? {
                    entries.push((k, v));
                }
                Ok(Node::Section(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Every setting of `Config::default()`, sections in declaration order.
fn defaults() -> Vec<(String, Node)> {
    // serde_json writes struct fields in declaration order, and writes unset options as null.
    let text = serde_json::to_string(&Config::default()).expect("defaults serialize");
    match serde_json::from_str::<Node>(&text).expect("defaults parse") {
        Node::Section(entries) => entries,
        Node::Leaf(v) => panic!("Config serialized to a single value {v}"),
    }
}

fn toml_value(v: &serde_json::Value) -> toml::Value {
    match v {
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Number(n) if n.is_f64() => toml::Value::Float(n.as_f64().unwrap()),
        serde_json::Value::Number(n) => {
            toml::Value::Integer(n.as_i64().unwrap_or_else(|| panic!("{n} does not fit a TOML integer")))
        }
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(items) => toml::Value::Array(items.iter().map(toml_value).collect()),
        other => panic!("no TOML form for {other}"),
    }
}

/// What the current file says about each setting: its comment, and for settings without a
/// default, the example value of the commented-out line.
#[derive(Default)]
struct Existing {
    comments: HashMap<String, Vec<String>>,
    unset_examples: HashMap<String, String>,
}

fn unset_keys(entries: &[(String, Node)], prefix: &str, out: &mut Vec<String>) {
    for (key, node) in entries {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match node {
            Node::Leaf(serde_json::Value::Null) => out.push(path),
            Node::Leaf(_) => {}
            Node::Section(inner) => unset_keys(inner, &path, out),
        }
    }
}

fn parse_existing(text: &str, tree: &[(String, Node)]) -> Existing {
    let mut unset = Vec::new();
    unset_keys(tree, "", &mut unset);
    let mut existing = Existing::default();
    let mut section = String::new();
    let mut pending: Vec<String> = Vec::new();
    let mut in_header = true;
    for line in text.lines() {
        let trimmed = line.trim();
        if in_header {
            // The header is regenerated from HEADER; it ends at the first blank line.
            if trimmed.is_empty() {
                in_header = false;
            }
            continue;
        }
        if trimmed.is_empty() {
            pending.clear();
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            existing.comments.insert(format!("[{name}]"), std::mem::take(&mut pending));
            section = name.to_owned();
        } else if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim();
            if let Some((key, value)) = comment.split_once('=')
                && unset.contains(&format!("{section}.{}", key.trim()))
            {
                let path = format!("{section}.{}", key.trim());
                existing.comments.insert(path.clone(), std::mem::take(&mut pending));
                existing.unset_examples.insert(path, value.trim().to_owned());
            } else {
                pending.push(comment.to_owned());
            }
        } else if let Some((key, _)) = trimmed.split_once('=') {
            existing.comments.insert(format!("{section}.{}", key.trim()), std::mem::take(&mut pending));
        }
    }
    existing
}

/// The `///` doc comment of each field of the config types (`src/config/`), by setting path, joined into one
/// line: the seed for a new setting's comment.
fn doc_comments() -> HashMap<String, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let source = ["mod.rs", "sections.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).expect("read the config types"))
        .collect::<Vec<_>>()
        .join("\n");
    // struct name -> [(field, type, doc)]
    let mut structs: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
    let mut current: Option<String> = None;
    let mut doc: Vec<String> = Vec::new();
    for line in source.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct ") {
            current = rest.split([' ', '{', '(']).next().map(str::to_owned);
            doc.clear();
        } else if t == "}" {
            current = None;
        } else if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim().to_owned());
        } else if let (Some(name), Some(rest)) = (&current, t.strip_prefix("pub ")) {
            if let Some((field, ty)) = rest.split_once(':') {
                let ty = ty.trim().trim_end_matches(',').to_owned();
                structs.entry(name.clone()).or_default().push((field.trim().to_owned(), ty, doc.join(" ")));
            }
            doc.clear();
        } else if !t.starts_with("#[") {
            doc.clear();
        }
    }
    let mut out = HashMap::new();
    fn walk(
        structs: &HashMap<String, Vec<(String, String, String)>>,
        name: &str,
        prefix: &str,
        out: &mut HashMap<String, String>,
    ) {
        for (field, ty, doc) in structs.get(name).into_iter().flatten() {
            let path = if prefix.is_empty() { field.clone() } else { format!("{prefix}.{field}") };
            if structs.contains_key(ty) {
                walk(structs, ty, &path, out);
            } else if !doc.is_empty() {
                out.insert(path, doc.clone());
            }
        }
    }
    walk(&structs, "Config", "", &mut out);
    out
}

fn render(tree: &[(String, Node)], existing: &Existing, docs: &HashMap<String, String>) -> String {
    let mut out = String::from(HEADER);
    fn section(
        out: &mut String,
        name: &str,
        entries: &[(String, Node)],
        existing: &Existing,
        docs: &HashMap<String, String>,
    ) {
        out.push('\n');
        for line in existing.comments.get(&format!("[{name}]")).into_iter().flatten() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "[{name}]");
        for (key, node) in entries {
            let Node::Leaf(value) = node else { continue };
            let path = format!("{name}.{key}");
            match existing.comments.get(&path).filter(|c| !c.is_empty()) {
                Some(lines) => lines.iter().for_each(|l| {
                    let _ = writeln!(out, "# {l}");
                }),
                None => {
                    let _ = writeln!(out, "# {}", docs.get(&path).map_or(PLACEHOLDER, String::as_str));
                }
            }
            if value.is_null() {
                let example = existing.unset_examples.get(&path).map_or("\"\"", String::as_str);
                let _ = writeln!(out, "# {key} = {example}");
            } else {
                let _ = writeln!(out, "{key} = {}", toml_value(value));
            }
        }
        for (key, node) in entries {
            if let Node::Section(inner) = node {
                section(out, &format!("{name}.{key}"), inner, existing, docs);
            }
        }
    }
    for (name, node) in tree {
        match node {
            Node::Section(entries) => section(&mut out, name, entries, existing, docs),
            Node::Leaf(_) => panic!("top-level setting {name} outside a section: extend this generator"),
        }
    }
    out
}

fn read_example() -> String {
    std::fs::read_to_string(example_path()).unwrap_or_default()
}

#[test]
fn example_config_lists_every_setting_with_its_default_and_a_comment() {
    let tree = defaults();
    let current = read_example();
    let expected = render(&tree, &parse_existing(&current, &tree), &doc_comments());
    if std::env::var_os("SOCKET_BRIDGE_REGENERATE_EXAMPLE").is_some() {
        std::fs::create_dir_all(example_path().parent().unwrap()).unwrap();
        std::fs::write(example_path(), &expected).unwrap();
        eprintln!("wrote {}", example_path().display());
    } else if current != expected {
        let line = current
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(expected.lines().count()));
        panic!(
            "{} differs from the config types (first at line {}: file has {:?}, types give {:?}).\nRegenerate it: {REGENERATE}",
            example_path().display(),
            line + 1,
            current.lines().nth(line).unwrap_or("<end of file>"),
            expected.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
    let placeholders: Vec<_> = expected
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(PLACEHOLDER))
        .map(|(i, _)| format!("line {}: {}", i + 2, expected.lines().nth(i + 1).unwrap_or("")))
        .collect();
    assert!(
        placeholders.is_empty(),
        "write a one-line comment for these settings in {}:\n{}",
        example_path().display(),
        placeholders.join("\n")
    );
}

#[test]
fn example_config_loads_and_every_value_equals_the_default() {
    let loaded = Config::from_toml(&read_example()).expect("the example config loads and validates");
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(Config::default()).unwrap(),
        "loading the example must change nothing"
    );
}

#[test]
fn every_commented_out_example_value_has_the_type_of_its_setting() {
    let tree = defaults();
    let existing = parse_existing(&read_example(), &tree);
    let mut unset = Vec::new();
    unset_keys(&tree, "", &mut unset);
    assert!(!unset.is_empty(), "some settings have no default");
    for path in unset {
        let example = existing.unset_examples.get(&path).unwrap_or_else(|| panic!("{path} is not in the example"));
        let (section, key) = path.rsplit_once('.').unwrap();
        let doc = format!("[{section}]\n{key} = {example}\n");
        // Types only: a lone example value (a TLS key without its certificate) need not be
        // a valid configuration on its own.
        toml::from_str::<Config>(&doc).unwrap_or_else(|e| panic!("example value of {path} ({example}): {e}"));
    }
}
