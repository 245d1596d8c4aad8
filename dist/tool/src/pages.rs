//! Man pages and shell completions from encapd's clap definition.
//!
//! The pages are section 8 (a daemon an administrator runs): `encapd.8`
//! gives the synopsis and the subcommands, plus the sections clap has no
//! field for (files, exit status, see also); `encapd-<sub>.8` gives each
//! subcommand's options and long help, as git's pages do. Nothing in them
//! is written twice: options and their help come from the definition,
//! the rest is the table below.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// A rendered page and its file name.
pub struct Page {
    pub file: String,
    pub roff: Vec<u8>,
}

/// Section 8: system administration commands and daemons.
const SECTION: &str = "8";

/// The command as the man pages and completions describe it: clap's
/// implicit `help` subcommand is left out (it is not a page of its own).
fn command() -> clap::Command {
    let mut cmd = encapd::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `encapd.8` and one page per subcommand.
pub fn man_pages() -> Result<Vec<Page>> {
    let cmd = command();
    // Every page's footer names the build: "encapd 0.1.0 (git <commit>)".
    let source = format!("encapd {}", cmd.get_version().unwrap_or_default());
    let mut pages = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = Man::new(sub.clone()).section(SECTION).manual("encapd").source(&source);
        let mut roff = Vec::new();
        man.render(&mut roff).with_context(|| format!("rendering {}", man.get_filename()))?;
        pages.push(Page { file: man.get_filename(), roff });
    }
    let subs: Vec<String> = pages.iter().map(|p| p.file.trim_end_matches(".8").to_owned()).collect();
    let man = Man::new(cmd).section(SECTION).manual("encapd").source(&source);
    let mut roff = Vec::new();
    man.render(&mut roff).context("rendering encapd.8")?;
    extra_sections(&subs).to_writer(&mut roff).context("rendering encapd.8")?;
    pages.push(Page { file: man.get_filename(), roff });
    Ok(pages)
}

/// FILES, EXIT STATUS and SEE ALSO of `encapd.8`.
fn extra_sections(subcommand_pages: &[String]) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/encapd/encapd.toml",
            "The configuration (a conffile). The example the package installs is refused by encapd check until [node] public_ip and subnet are filled in.",
        ),
        ("/etc/encapd/peers.toml", "The other nodes, with the file control source; watched, so an edit applies while encapd runs."),
        (
            "/run/encapd/encap0.sock",
            "The control socket a successor takes the data path over from (encapd upgrade, systemctl reload encapd); named after the TUN device.",
        ),
        ("/run/flannel/subnet.env", "This node's subnet and MTU for flannel's CNI plugin."),
        ("/var/lib/encapd", "With the etcd source, the lease state that lets a restart claim the same subnet."),
        (
            "/usr/share/doc/encapd/",
            "The README, install.md (installation, ports, kernels, upgrades), configuration.md (every setting), operating.md (signals, metrics, alerts, upgrades in place) and the changelog.",
        ),
    ] {
        r.control("TP", []);
        r.text([italic(path)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        ("0", "Success."),
        ("1", "Runtime failure."),
        ("2", "Invalid configuration or usage; the message names the file, field and value."),
    ] {
        r.control("TP", []);
        r.text([bold(code)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = subcommand_pages.iter().map(|p| format!("{p}({SECTION})")).collect();
    refs.extend(["systemctl(1)".to_owned(), "journalctl(1)".to_owned()]);
    r.text([roman(refs.join(", "))]);
    r
}

/// (file name, text) of the bash, zsh and fish completions.
pub fn completions() -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = command();
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, "encapd", &mut text);
        let file = match shell {
            Shell::Bash => "encapd.bash",
            Shell::Zsh => "_encapd",
            _ => "encapd.fish",
        };
        out.push((file.to_owned(), text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(name: &str) -> String {
        let pages = man_pages().unwrap();
        let p = pages.iter().find(|p| p.file == name).unwrap_or_else(|| panic!("no page {name}"));
        String::from_utf8(p.roff.clone()).unwrap()
    }

    #[test]
    fn one_page_per_subcommand_and_one_for_encapd() {
        let files: Vec<String> = man_pages().unwrap().into_iter().map(|p| p.file).collect();
        let mut subs: Vec<String> = command().get_subcommands().map(|s| format!("encapd-{}.8", s.get_name())).collect();
        subs.push("encapd.8".into());
        assert_eq!(files, subs);
        assert!(!files.iter().any(|f| f.contains("help")), "{files:?}");
    }

    #[test]
    fn every_option_of_every_subcommand_is_on_its_page() {
        for sub in command().get_subcommands() {
            let text = page(&format!("encapd-{}.8", sub.get_name()));
            assert!(text.contains(&format!("\n.TH encapd-{} 8 ", sub.get_name())), "{text}");
            for arg in sub.get_arguments().filter_map(|a| a.get_long()) {
                // roff escapes the dashes: \-\-config
                assert!(text.contains(&format!("\\-\\-{}", arg.replace('-', "\\-"))), "--{arg} missing from {}:\n{text}", sub.get_name());
            }
        }
    }

    #[test]
    fn the_main_page_names_the_version_files_and_subcommand_pages() {
        let text = page("encapd.8");
        assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
        for want in ["/etc/encapd/encapd.toml", ".SH \"EXIT STATUS\"", "encapd\\-run(8)", "encapd\\-upgrade(8)"] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
    }

    #[test]
    fn completions_know_every_subcommand() {
        let all = completions().unwrap();
        assert_eq!(all.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["encapd.bash", "_encapd", "encapd.fish"]);
        for (file, text) in all {
            let text = String::from_utf8(text).unwrap();
            for sub in command().get_subcommands() {
                assert!(text.contains(sub.get_name()), "{file} lacks {}", sub.get_name());
            }
        }
    }
}
