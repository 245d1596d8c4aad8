//! `encapd-dist`: generates what the Debian package ships besides the
//! binary, the unit and the example configuration (`scripts/package.sh`
//! runs it before `cargo deb`):
//!
//! - `encapd-dist man DIR`: `encapd.8` and one page per subcommand
//!   (`encapd-run.8`, ...), rendered by `clap_mangen` from encapd's own
//!   clap definition ([`encapd::cli::Cli`]), plus the sections clap does
//!   not know (files, exit status, see also).
//! - `encapd-dist completions DIR`: bash, zsh and fish completions
//!   (`clap_complete`), from the same definition.
//! - `encapd-dist changelog --revision N --out FILE`: the Debian changelog
//!   of package version `<Cargo.toml version>-N`, from `CHANGELOG.md`.
//!
//! Why a crate of its own, and not a build script or a hidden `encapd`
//! subcommand (a decision):
//!
//! - **The definition is the one the binary parses.** This crate links the
//!   encapd library and asks `Cli::command()`, so a man page cannot
//!   describe a flag the binary does not have. A build script cannot link
//!   the crate it builds; it would have to `include!` the CLI module,
//!   which uses the rest of the crate (default values, the config module).
//! - **The daemon carries only what it runs** (the rule `bench/tool`
//!   follows, bench/README.md): `clap_mangen`, `clap_complete` and the
//!   changelog code are not in the `encapd` binary, which a hidden
//!   `encapd generate` subcommand (ripgrep's way) would put there.
//! - A build script would also run on every `cargo build` of the daemon,
//!   and write outside `OUT_DIR` or into a path cargo-deb cannot name.
//!
//! Exit codes: 0 success, 1 failure (the message names the file), 2 usage.

#![deny(unsafe_code)]

mod changelog;
mod manifest;
mod pages;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "encapd-dist", version, about = "Man pages, shell completions and the Debian changelog of encapd's package")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes encapd.8 and encapd-<subcommand>.8 into DIR.
    Man { dir: PathBuf },
    /// Writes the bash (encapd.bash), zsh (_encapd) and fish (encapd.fish) completions into DIR.
    Completions { dir: PathBuf },
    /// Writes the Debian changelog of package version <version>-<revision>.
    Changelog {
        /// The workspace's Cargo.toml (version, `[package.metadata.deb] maintainer`).
        #[arg(long, default_value = "Cargo.toml")]
        manifest: PathBuf,
        /// The release notes to convert.
        #[arg(long, default_value = "CHANGELOG.md")]
        changelog: PathBuf,
        /// The Debian revision of the package being built.
        #[arg(long, default_value_t = 1)]
        revision: u32,
        /// The commit the package is built from, named in a rebuild's entry.
        #[arg(long)]
        commit: Option<String>,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("encapd-dist: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Man { dir } => {
            create_dir(&dir)?;
            for page in pages::man_pages()? {
                write(&dir.join(&page.file), &page.roff)?;
            }
        }
        Command::Completions { dir } => {
            create_dir(&dir)?;
            for (file, text) in pages::completions()? {
                write(&dir.join(file), &text)?;
            }
        }
        Command::Changelog { manifest, changelog, revision, commit, out } => {
            let package = manifest::Package::read(&manifest)?;
            let notes = std::fs::read_to_string(&changelog).with_context(|| format!("reading {}", changelog.display()))?;
            let releases = changelog::parse(&notes).with_context(|| format!("{}", changelog.display()))?;
            let build = changelog::Build {
                package: &package.name,
                upstream: &package.version,
                revision,
                maintainer: &package.maintainer,
                commit: commit.as_deref(),
                today: jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date(),
            };
            let text = changelog::debian(&releases, &build).with_context(|| format!("{}", changelog.display()))?;
            write(&out, text.as_bytes())?;
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
