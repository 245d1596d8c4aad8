//! docs/configuration.md is the reference of the configuration file and
//! the peers file: this test fails when the parser accepts a field the
//! reference does not list, or the reference lists one the parser does not
//! accept, in any section of either file. No root needed.
//!
//! **What the parser accepts** is asked of the parser itself. Every table
//! of both files is a serde struct with `deny_unknown_fields`, so a key it
//! does not know is refused with serde's list of the ones it does
//! (`unknown field `zz`, expected one of `a`, `b`, …`). The test feeds an
//! unknown key at the top level, reads the list, and for each name feeds an
//! unknown key inside it, as `[name]` and as `[[name]]`: a table answers
//! with its own list (and is walked in turn, so a nested table such as
//! `[node.x]` is found too), a plain field refuses the table as the wrong
//! type. No list is kept here by hand, so a field added to
//! `src/config/raw.rs` or `src/config/peers.rs` is found without touching
//! this test. A table that takes unknown keys silently (no
//! `deny_unknown_fields`) fails the test: its keys cannot be known.
//!
//! **What the reference lists** is read from docs/configuration.md: under
//! the heading `## The configuration file` (or `## The peers file`), each
//! heading that names a table in backticks (`` ### `[dataplane]` ``,
//! `` ### `[[peer]]` ``) is followed by a table with one row per field,
//! the field's name in backticks in the first cell, and every other cell
//! filled (type, default, limits, where it applies, error).
//!
//! It also checks that every environment variable the daemon's source
//! reads (`std::env::var`/`var_os`, by literal or by a `const` in the same
//! file) has a row in the reference's environment table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use encapd::config::{Config, PeerDefaults, parse_peers};

const REFERENCE: &str = "docs/configuration.md";
const CONFIG_HEADING: &str = "The configuration file";
const PEERS_HEADING: &str = "The peers file";
const ENV_HEADING: &str = "Environment variables";
/// A key no table has.
const PROBE: &str = "zz_not_a_field";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A table's path as the reference writes it: `[a.b]`, `[[peer]]`, or
/// `(top level)` for the file's top level.
fn show(path: &[String], array: bool) -> String {
    match (path.is_empty(), array) {
        (true, _) => "(top level)".into(),
        (false, true) => format!("[[{}]]", path.join(".")),
        (false, false) => format!("[{}]", path.join(".")),
    }
}

/// The names serde lists in `unknown field `x`, expected one of `a`, `b``
/// (also `expected `a`` and `expected `a` or `b``); None when `message` is
/// not that error about [`PROBE`].
fn expected_fields(message: &str) -> Option<BTreeSet<String>> {
    let at = message.find(&format!("unknown field `{PROBE}`"))?;
    let rest = &message[at..];
    let line = rest.lines().next().unwrap_or(rest);
    let (_, list) = line.split_once("expected")?;
    let names: BTreeSet<String> = list.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    (!names.is_empty() || list.contains("no fields")).then_some(names)
}

/// What one file's parser says about a document.
trait Parser {
    fn parse(&self, text: &str) -> Result<(), String>;
}

struct ConfigFile;
impl Parser for ConfigFile {
    fn parse(&self, text: &str) -> Result<(), String> {
        Config::parse(text, Path::new("/etc/encapd/encapd.toml")).map(drop).map_err(|e| e.to_string())
    }
}

struct PeersFile;
impl Parser for PeersFile {
    fn parse(&self, text: &str) -> Result<(), String> {
        parse_peers(text, "peers.toml", PeerDefaults { port: 8285, vxlan: false, wireguard: false }).map(drop).map_err(|e| e.to_string())
    }
}

/// What a parser accepts: each table (by its name as the reference writes
/// it) with its fields, each field with the name of the table it opens
/// (`Some("[node.x]")`) or `None` for a plain field. Errors say which
/// table could not be read.
type Accepted = BTreeMap<String, BTreeMap<String, Option<String>>>;

fn accepted_fields(parser: &dyn Parser) -> Result<Accepted, String> {
    let mut out = Accepted::new();
    let mut todo: Vec<(Vec<String>, bool)> = vec![(Vec::new(), false)];
    while let Some((path, array)) = todo.pop() {
        let text = if path.is_empty() {
            format!("{PROBE} = 1\n")
        } else if array {
            format!("[[{}]]\n{PROBE} = 1\n", path.join("."))
        } else {
            format!("[{}]\n{PROBE} = 1\n", path.join("."))
        };
        let fields = match parser.parse(&text) {
            Err(e) => expected_fields(&e).ok_or_else(|| format!("{}: unexpected answer to an unknown key: {e}", show(&path, array)))?,
            Ok(()) => {
                return Err(format!("{} accepted the unknown key `{PROBE}`: give it #[serde(deny_unknown_fields)]", show(&path, array)));
            }
        };
        let mut kinds = BTreeMap::new();
        for field in fields {
            let mut child = path.clone();
            child.push(field.clone());
            let kind = table_kind(parser, &child);
            kinds.insert(field, kind.map(|array| show(&child, array)));
            if let Some(array) = kind {
                todo.push((child, array));
            }
        }
        out.insert(show(&path, array), kinds);
    }
    Ok(out)
}

/// Whether `path` names a table (`Some(false)`), an array of tables
/// (`Some(true)`) or a plain field (`None`), by what the parser answers to
/// an unknown key inside it.
fn table_kind(parser: &dyn Parser, path: &[String]) -> Option<bool> {
    let dotted = path.join(".");
    for (array, text) in [(false, format!("[{dotted}]\n{PROBE} = 1\n")), (true, format!("[[{dotted}]]\n{PROBE} = 1\n"))] {
        if parser.parse(&text).err().is_some_and(|e| expected_fields(&e).is_some()) {
            return Some(array);
        }
    }
    None
}

/// A Markdown table row's cells (the outer pipes removed; pipes inside
/// backticks kept).
fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    let mut out = vec![String::new()];
    let mut code = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                code = !code;
                out.last_mut().unwrap().push(c);
            }
            '\\' if chars.peek() == Some(&'|') => out.last_mut().unwrap().push(chars.next().unwrap()),
            '|' if !code => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    Some(out.into_iter().map(|c| c.trim().to_owned()).collect())
}

/// A field row's name: the first cell is exactly one identifier in backticks.
fn field_name(cell: &str) -> Option<&str> {
    let name = cell.strip_prefix('`')?.strip_suffix('`')?;
    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_').then_some(name)
}

/// What the reference lists under the `## {part}` heading: table -> fields,
/// with the problems found in the rows (empty cells).
struct Listed {
    tables: BTreeMap<String, BTreeSet<String>>,
    problems: Vec<String>,
}

fn listed_fields(doc: &str, part: &str) -> Listed {
    let mut listed = Listed { tables: BTreeMap::new(), problems: Vec::new() };
    let mut in_part = false;
    let mut table: Option<String> = None;
    let mut fence = false;
    for (n, line) in doc.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        if let Some(title) = line.strip_prefix("## ") {
            in_part = title.trim() == part;
            table = None;
            continue;
        }
        if !in_part {
            continue;
        }
        if line.starts_with("###") {
            // `[a.b]`, `[[peer]]` or "(top level)" in the heading.
            let title = line.trim_start_matches('#').trim();
            table = title
                .split('`')
                .skip(1)
                .step_by(2)
                .find(|t| t.starts_with('[') && t.ends_with(']'))
                .map(str::to_owned)
                .or_else(|| title.contains("(top level)").then(|| "(top level)".to_owned()));
            if let Some(t) = &table {
                listed.tables.entry(t.clone()).or_default();
            }
            continue;
        }
        let (Some(t), Some(row)) = (&table, cells(line)) else { continue };
        let Some(name) = row.first().and_then(|c| field_name(c)) else { continue };
        if !listed.tables.get_mut(t).unwrap().insert(name.to_owned()) {
            listed.problems.push(format!("{REFERENCE}:{}: `{t} {name}` has two rows", n + 1));
        }
        if row.len() < 6 || row.iter().any(String::is_empty) {
            listed.problems.push(format!(
                "{REFERENCE}:{}: the row of `{t} {name}` needs six filled cells (field, type, default, limits, applies to, error)",
                n + 1
            ));
        }
    }
    listed
}

/// The differences between what the parser accepts and what the
/// reference lists, each saying what to add or remove where. A field that
/// opens a table is documented by that table's heading, not by a row.
fn compare(part: &str, source: &str, accepted: &Accepted, listed: &Listed) -> Vec<String> {
    let mut out = listed.problems.clone();
    for (table, fields) in accepted {
        let leaves: BTreeSet<String> = fields.iter().filter(|(_, t)| t.is_none()).map(|(f, _)| f.clone()).collect();
        let tables: BTreeSet<String> = fields.keys().filter(|f| !leaves.contains(*f)).cloned().collect();
        let Some(documented) = listed.tables.get(table) else {
            if !leaves.is_empty() {
                out.push(format!(
                    "{REFERENCE} has no heading for {table}, whose fields the parser accepts ({}): add `### `{table}`` under `## {part}` \
                     with a table of one row per field: | field | type | default | limits | applies to | error |",
                    leaves.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                ));
            }
            continue;
        };
        for f in leaves.difference(documented) {
            out.push(format!(
                "the parser accepts `{table} {f}`, which {REFERENCE} does not list: add a row \
                 | `{f}` | type | default | limits | applies to | error | to the table under `### `{table}`` (`## {part}`)"
            ));
        }
        for f in documented.difference(&leaves) {
            let why =
                if tables.contains(f) { "a table, documented by its own heading" } else { "refused by the parser as an unknown field" };
            out.push(format!(
                "{REFERENCE} lists `{table} {f}` under `## {part}`, which is {why}: remove the row, or add the field to the parser ({source})"
            ));
        }
    }
    for table in listed.tables.keys().filter(|t| !accepted.contains_key(*t)) {
        out.push(format!(
            "{REFERENCE} documents {table} under `## {part}`, which the parser has no table for: remove the section, \
             or add the table to the parser ({source})"
        ));
    }
    out
}

fn reference() -> String {
    std::fs::read_to_string(repo().join(REFERENCE)).unwrap_or_else(|e| panic!("{REFERENCE}: {e}"))
}

#[test]
fn every_config_file_field_is_in_the_reference_and_nothing_else() {
    let accepted = accepted_fields(&ConfigFile).unwrap_or_else(|e| panic!("the config parser: {e}"));
    assert!(accepted.len() >= 7 && accepted["[dataplane]"].contains_key("workers"), "the probe read too little: {accepted:?}");
    let problems = compare(CONFIG_HEADING, "src/config/raw.rs", &accepted, &listed_fields(&reference(), CONFIG_HEADING));
    assert!(problems.is_empty(), "{REFERENCE} and the config parser disagree:\n- {}", problems.join("\n- "));
}

#[test]
fn every_peers_file_field_is_in_the_reference_and_nothing_else() {
    let accepted = accepted_fields(&PeersFile).unwrap_or_else(|e| panic!("the peers parser: {e}"));
    assert!(accepted.get("[[peer]]").is_some_and(|f| f.contains_key("public_ip")), "the probe read too little: {accepted:?}");
    let problems = compare(PEERS_HEADING, "src/config/peers.rs", &accepted, &listed_fields(&reference(), PEERS_HEADING));
    assert!(problems.is_empty(), "{REFERENCE} and the peers parser disagree:\n- {}", problems.join("\n- "));
}

/// The reader itself: a row missing, a row too many, an empty cell, a
/// missing section each give a message naming what to do.
#[test]
fn the_comparison_names_what_to_add_and_where() {
    let doc = "## The configuration file\n\n### `[node]`\n\n| field | type | default | limits | applies to | error |\n|---|---|---|---|---|---|\n\
               | `public_ip` | string | none | IP | all | msg |\n| `colour` | string | none | none | all | msg |\n| `subnet` | string |  | x | all | msg |\n";
    let listed = listed_fields(doc, CONFIG_HEADING);
    let leaves = |names: &[&str]| names.iter().map(|n| (n.to_string(), None)).collect::<BTreeMap<_, _>>();
    let accepted: Accepted = [
        (
            "(top level)".to_owned(),
            [("node".to_owned(), Some("[node]".to_owned())), ("metrics".to_owned(), Some("[metrics]".to_owned()))].into(),
        ),
        ("[node]".to_owned(), leaves(&["public_ip", "subnet", "subnet6"])),
        ("[metrics]".to_owned(), leaves(&["listen"])),
    ]
    .into();
    let problems = compare(CONFIG_HEADING, "src/config/raw.rs", &accepted, &listed).join("\n");
    for want in [
        "the row of `[node] subnet` needs six filled cells",
        "the parser accepts `[node] subnet6`, which docs/configuration.md does not list: add a row",
        "lists `[node] colour`",
        "has no heading for [metrics]",
    ] {
        assert!(problems.contains(want), "{want:?} missing from:\n{problems}");
    }
    assert_eq!(
        expected_fields(&format!("unknown field `{PROBE}`, expected one of `a`, `b`, `c_d`")),
        Some(["a", "b", "c_d"].map(str::to_owned).into())
    );
    assert_eq!(expected_fields(&format!("unknown field `{PROBE}`, expected `peer`")), Some(["peer".to_owned()].into()));
    assert_eq!(expected_fields("missing field `public_ip`"), None);
}

/// Environment variable names read in `file`: the argument of every
/// `env::var(...)`/`env::var_os(...)`, a literal or a `const` of the file;
/// a function parameter (a helper such as `first_directory(var)`) is
/// resolved through the literals its callers in the same file pass. A
/// file's unit tests (from `#[cfg(test)] mod`, by convention at its end)
/// are not the daemon's and are left out.
fn env_reads(file: &str) -> BTreeSet<String> {
    let file = file.find("#[cfg(test)]\nmod ").map_or(file, |at| &file[..at]);
    let literal = |s: &str| s.trim().strip_prefix('"').and_then(|s| s.strip_suffix('"')).map(str::to_owned);
    let consts: BTreeMap<String, String> = file
        .lines()
        .filter_map(|l| {
            let rest = l.trim().trim_start_matches("pub ").strip_prefix("const ")?;
            let (name, value) = rest.split_once(": &str =")?;
            Some((name.trim().to_owned(), literal(value.trim().trim_end_matches(';'))?))
        })
        .collect();
    let mut out = BTreeSet::new();
    for call in ["env::var(", "env::var_os("] {
        for (at, _) in file.match_indices(call) {
            let arg = file[at + call.len()..].split(')').next().unwrap_or("");
            if let Some(name) = literal(arg).or_else(|| consts.get(arg.trim()).cloned()) {
                out.insert(name);
            } else if let Some(helper) = enclosing_fn(&file[..at]) {
                // The helper's callers in this file name the variables.
                for (c, _) in file.match_indices(&format!("{helper}(\"")) {
                    let rest = &file[c + helper.len() + 2..];
                    out.insert(rest.split('"').next().unwrap_or("").to_owned());
                }
            }
        }
    }
    out
}

/// The name of the last `fn` opened before the end of `before`.
fn enclosing_fn(before: &str) -> Option<String> {
    let at = before.rfind("fn ")?;
    Some(before[at + 3..].split(|c: char| !c.is_alphanumeric() && c != '_').next()?.to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_environment_variable_encapd_reads_is_in_the_reference() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let mut read: BTreeMap<String, String> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for name in env_reads(&text) {
            read.entry(name).or_insert_with(|| f.strip_prefix(repo()).unwrap().display().to_string());
        }
    }
    // env_logger reads RUST_LOG (src/main.rs: `Env::default()`).
    read.insert("RUST_LOG".into(), "src/main.rs (env_logger)".into());
    assert!(read.contains_key("NOTIFY_SOCKET") && read.contains_key("STATE_DIRECTORY"), "the scan found too little: {read:?}");
    let doc = reference();
    let mut documented = BTreeSet::new();
    let mut in_part = false;
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_part = title.trim() == ENV_HEADING;
        } else if in_part && let Some(name) = cells(line).and_then(|c| c.first().and_then(|c| field_name(c).map(str::to_owned))) {
            documented.insert(name);
        }
    }
    let missing: Vec<String> = read
        .iter()
        .filter(|(name, _)| !documented.contains(*name))
        .map(|(name, file)| format!("`{name}` (read in {file}): add a row to the table under `## {ENV_HEADING}`"))
        .collect();
    assert!(missing.is_empty(), "{REFERENCE} does not list every environment variable encapd reads:\n- {}", missing.join("\n- "));
}
