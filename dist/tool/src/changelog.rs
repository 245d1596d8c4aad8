//! `CHANGELOG.md` into the Debian changelog (deb-changelog(5)) that the
//! package ships as `/usr/share/doc/encapd/changelog.Debian.gz`.
//!
//! The Markdown is held to a small grammar, so that the conversion is
//! exact and anything else is an error naming the line:
//!
//! ```text
//! # Changelog               (anything before the first release heading is ignored)
//! ## 0.1.0 (2026-12-07)     a release: version and date, newest first
//! - An item, which may      a top-level bullet is one changelog item;
//!   continue on lines       lines indented by two or more spaces continue it
//!   indented by two spaces.
//! ```
//!
//! Each release becomes the entry of package version `<version>-1`. The
//! package being built must be the newest release (its entry comes first);
//! a build with another Debian revision (`-N`, e.g. a test package for an
//! upgrade) gets an entry of its own on top that says so. Items are
//! rewrapped to 80 columns (lintian's limit); `**` emphasis is dropped.

use anyhow::{Result, anyhow, bail};
use jiff::civil::Date;

/// The width a changelog line may not exceed (lintian:
/// debian-changelog-line-too-long).
const WIDTH: usize = 80;

/// One `## VERSION (DATE)` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: String,
    pub date: Date,
    pub items: Vec<String>,
}

/// What is being built.
#[derive(Debug)]
pub struct Build<'a> {
    pub package: &'a str,
    /// Cargo's version.
    pub upstream: &'a str,
    /// The Debian revision (1 for the release itself).
    pub revision: u32,
    /// `Name <address>`.
    pub maintainer: &'a str,
    /// The commit the package is built from, for a rebuild's entry.
    pub commit: Option<&'a str>,
    /// The date a rebuild's entry carries.
    pub today: Date,
}

/// Parses the releases of `markdown`, newest first (see the module docs).
pub fn parse(markdown: &str) -> Result<Vec<Release>> {
    let mut releases: Vec<Release> = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        let at = index + 1;
        if let Some(heading) = line.strip_prefix("## ") {
            releases.push(parse_heading(heading).map_err(|e| anyhow!("line {at}: {e}"))?);
            continue;
        }
        let Some(release) = releases.last_mut() else { continue };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(item) = line.strip_prefix("- ") {
            release.items.push(item.trim().to_owned());
        } else if line.starts_with("  ") && !release.items.is_empty() {
            let item = release.items.last_mut().expect("checked non-empty");
            item.push(' ');
            item.push_str(line.trim());
        } else {
            bail!("line {at}: a release holds only `- ` items and their continuation lines (indented by two spaces): {line:?}");
        }
    }
    check_order(&releases)?;
    Ok(releases)
}

fn parse_heading(heading: &str) -> Result<Release> {
    let shape = || anyhow!("a release heading is `## VERSION (YYYY-MM-DD)`, not `## {heading}`");
    let (version, rest) = heading.split_once(' ').ok_or_else(shape)?;
    let date = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(shape)?;
    let date: Date = date.parse().map_err(|e| anyhow!("release {version}: date {date:?}: {e}"))?;
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric() || ".+~".contains(c)) {
        bail!("release version {version:?}: letters, digits and . + ~ only (Debian's upstream version, no revision)");
    }
    Ok(Release { version: version.to_owned(), date, items: Vec::new() })
}

fn check_order(releases: &[Release]) -> Result<()> {
    for r in releases {
        if r.items.is_empty() {
            bail!("release {} lists no `- ` item", r.version);
        }
    }
    for pair in releases.windows(2) {
        if pair[0].version == pair[1].version {
            bail!("release {} appears twice", pair[0].version);
        }
        if pair[0].date < pair[1].date {
            bail!(
                "releases are listed newest first, but {} ({}) comes before {} ({})",
                pair[0].version,
                pair[0].date,
                pair[1].version,
                pair[1].date
            );
        }
    }
    Ok(())
}

/// The Debian changelog of `build`, from `releases`.
pub fn debian(releases: &[Release], build: &Build<'_>) -> Result<String> {
    let newest = releases.first().ok_or_else(|| anyhow!("no release heading (`## VERSION (YYYY-MM-DD)`)"))?;
    if newest.version != build.upstream {
        bail!(
            "the package is version {} but the newest release listed is {}: add `## {} (YYYY-MM-DD)` with its changes first",
            build.upstream,
            newest.version,
            build.upstream
        );
    }
    if build.revision == 0 {
        bail!("Debian revision 0: revisions start at 1");
    }
    let mut out = String::new();
    if build.revision != 1 {
        let from = build.commit.map(|c| format!(" from commit {c}")).unwrap_or_default();
        let item = format!(
            "Package revision {} of {}{from}: a build for testing an upgrade over {}-1, not a release.",
            build.revision, build.upstream, build.upstream
        );
        entry(&mut out, build, &format!("{}-{}", build.upstream, build.revision), build.today.max(newest.date), &[item]);
    }
    for r in releases {
        entry(&mut out, build, &format!("{}-1", r.version), r.date, &r.items);
    }
    Ok(out)
}

fn entry(out: &mut String, build: &Build<'_>, version: &str, date: Date, items: &[String]) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&format!("{} ({version}) unstable; urgency=medium\n\n", build.package));
    for item in items {
        wrap_item(out, &item.replace("**", ""));
    }
    // Noon UTC: a release has a day, not a time; a fixed time keeps the
    // file the same for every build of one release.
    out.push_str(&format!("\n -- {}  {} 12:00:00 +0000\n", build.maintainer, date.strftime("%a, %d %b %Y")));
}

/// `  * first line` and `    continuation`, every line at most [`WIDTH`]
/// columns (a single word longer than that stands alone on its line).
fn wrap_item(out: &mut String, item: &str) {
    let mut line = String::from("  *");
    for word in item.split_whitespace() {
        if line.len() > 4 && line.len() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("   ");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(revision: u32) -> Build<'static> {
        Build {
            package: "encapd",
            upstream: "0.2.0",
            revision,
            maintainer: "A B <ab@example.org>",
            commit: Some("abc123"),
            today: "2027-01-05".parse().unwrap(),
        }
    }

    const NOTES: &str = "# Changelog\n\nIntro text, ignored.\n\n## 0.2.0 (2027-01-02)\n\n- Second **release**: one item that is long enough to be wrapped because it goes on and on past eighty columns.\n- Another,\n  continued.\n\n## 0.1.0 (2026-12-07)\n\n- First.\n";

    #[test]
    fn parses_releases_items_and_continuations() {
        let r = parse(NOTES).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].version, "0.2.0");
        assert_eq!(r[0].date, "2027-01-02".parse::<Date>().unwrap());
        assert_eq!(r[0].items[1], "Another, continued.");
        assert_eq!(r[1].items, vec!["First.".to_owned()]);
    }

    #[test]
    fn renders_deb_changelog_entries_wrapped_at_80_columns() {
        let text = debian(&parse(NOTES).unwrap(), &build(1)).unwrap();
        let want_start = "encapd (0.2.0-1) unstable; urgency=medium\n\n  * Second release: one item that is long enough to be wrapped because it goes\n    on and on past eighty columns.\n  * Another, continued.\n\n -- A B <ab@example.org>  Sat, 02 Jan 2027 12:00:00 +0000\n\nencapd (0.1.0-1) unstable;";
        assert!(text.starts_with(want_start), "{text}");
        assert!(text.ends_with("  * First.\n\n -- A B <ab@example.org>  Mon, 07 Dec 2026 12:00:00 +0000\n"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    }

    #[test]
    fn another_revision_gets_an_entry_of_its_own_on_top() {
        let text = debian(&parse(NOTES).unwrap(), &build(3)).unwrap();
        assert!(
            text.starts_with("encapd (0.2.0-3) unstable; urgency=medium\n\n  * Package revision 3 of 0.2.0 from commit abc123:"),
            "{text}"
        );
        assert!(text.contains("Tue, 05 Jan 2027 12:00:00 +0000\n\nencapd (0.2.0-1)"), "{text}");
    }

    #[test]
    fn a_package_version_that_is_not_the_newest_release_is_refused() {
        let mut b = build(1);
        b.upstream = "0.3.0";
        let e = debian(&parse(NOTES).unwrap(), &b).unwrap_err().to_string();
        assert!(e.contains("add `## 0.3.0 (YYYY-MM-DD)`"), "{e}");
    }

    #[test]
    fn malformed_markdown_names_the_line() {
        for (text, want) in [
            ("## 0.1.0\n- x\n", "line 1: a release heading"),
            ("## 0.1.0 (2026-13-01)\n- x\n", "line 1: release 0.1.0: date"),
            ("## 0.1.0 (2026-12-01)\nprose\n", "line 2: a release holds only"),
            ("## 0.1.0 (2026-12-01)\n", "lists no `- ` item"),
            ("## 0.1.0 (2026-12-01)\n- x\n## 0.2.0 (2026-12-02)\n- y\n", "newest first"),
            ("## 0.1.0-1 (2026-12-01)\n- x\n", "no revision"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_repository_changelog_converts_for_the_cargo_version() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let notes = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
        let package = crate::manifest::Package::read(&root.join("Cargo.toml")).unwrap();
        let b = Build { upstream: &package.version, maintainer: &package.maintainer, ..build(1) };
        let text = debian(&parse(&notes).unwrap(), &b).unwrap();
        assert!(text.starts_with(&format!("encapd ({}-1) unstable; urgency=medium\n", package.version)), "{text}");
    }
}
