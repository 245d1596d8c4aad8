//! Configurations for the baseline build (`--baseline REV`): a field the
//! older binary rejects is left out of its configs, as its own `encapd
//! check` names it: one it does not know yet (it rejects unknown fields),
//! or one it calls "only meaningful with" another setting (so without
//! effect there). A field it accepts stays, so it never falls back to a
//! default path on the host. Each removal is recorded in `commands.log`.

use std::path::Path;
use std::time::Duration;

use crate::exec::{argv, run_capture};

/// The field `encapd check`'s message names as rejected, if any.
fn rejected_field(message: &str) -> Option<String> {
    if let Some(rest) = message.split("unknown field `").nth(1) {
        let f = rest.split('`').next()?;
        if !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Some(f.to_owned());
        }
    }
    // "... [section] field = (value): only meaningful with ..."
    let line = message.lines().find(|l| l.contains("only meaningful with"))?;
    let before = line.split("only meaningful with").next()?;
    let after_section = before.rsplit_once("] ")?.1;
    let f = after_section.split(" = ").next()?.trim();
    (!f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then(|| f.to_owned())
}

/// `text` without key `field` (a line `field = ...`) or, when `field`
/// names a section, without that whole `[field]` section.
fn remove_field(text: &str, field: &str) -> String {
    let header = format!("[{field}]");
    if text.lines().any(|l| l.trim() == header) {
        let mut skip = false;
        let mut out = String::new();
        for l in text.lines() {
            if l.trim() == header {
                skip = true;
                continue;
            }
            if l.starts_with('[') {
                skip = false;
            }
            if !skip {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    } else {
        text.lines()
            .filter(|l| !l.trim_start().strip_prefix(field).is_some_and(|r| r.trim_start().starts_with('=')))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

/// Edits `config` until `base_bin check` (run in namespace `ns`) accepts
/// it, at most 8 fields; returns a line per field left out.
pub fn fit_config(base_bin: &Path, ns: &str, config: &Path, commit: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for _ in 0..8 {
        let args = argv(&[&base_bin.to_string_lossy(), "check", "--config", &config.to_string_lossy()]);
        let message = match run_capture(Some(ns), &args, Duration::from_secs(20)) {
            Ok(_) => break,
            Err(m) => m,
        };
        let Some(field) = rejected_field(&message) else { break };
        let text = std::fs::read_to_string(config).unwrap_or_default();
        let _ = std::fs::write(config, remove_field(&text, &field));
        let why = message.lines().find(|l| l.contains(&field)).unwrap_or("").trim();
        let name = config.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        notes.push(format!("# baseline: left `{field}` out of {name} ({commit} rejects it: {why})"));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rejected_field_is_found_in_both_messages() {
        assert_eq!(rejected_field("error: a.toml: unknown field `kernel_path`, expected one of ..."), Some("kernel_path".into()));
        assert_eq!(
            rejected_field("a.toml: [control] subnet_env = (\"x\"): only meaningful with source = \"etcd\""),
            Some("subnet_env".into())
        );
        assert_eq!(rejected_field("error: cannot open /dev/net/tun"), None);
    }

    #[test]
    fn a_key_or_a_whole_section_goes() {
        let text = "[dataplane]\nio = \"uring\"\nkernel_path = \"tc\"\n\n[metrics]\nlisten = \"off\"\n[process]\nx = 1\n";
        assert_eq!(remove_field(text, "kernel_path"), "[dataplane]\nio = \"uring\"\n\n[metrics]\nlisten = \"off\"\n[process]\nx = 1\n");
        assert_eq!(remove_field(text, "metrics"), "[dataplane]\nio = \"uring\"\nkernel_path = \"tc\"\n\n[process]\nx = 1\n");
        assert_eq!(remove_field("io_x = 1\nio = 2\n", "io"), "io_x = 1\n", "only the key itself");
    }
}
