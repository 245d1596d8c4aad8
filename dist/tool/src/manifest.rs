//! What the changelog needs from encapd's `Cargo.toml`: the package name,
//! its version and the Debian maintainer (`[package.metadata.deb]`, which
//! cargo-deb reads too), so that neither is written twice.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Manifest {
    package: PackageTable,
}

#[derive(Debug, Deserialize)]
struct PackageTable {
    name: String,
    version: String,
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    deb: Deb,
}

#[derive(Debug, Deserialize)]
struct Deb {
    maintainer: String,
}

/// The package as Debian names it.
#[derive(Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// The upstream version (Cargo's).
    pub version: String,
    /// `Name <address>`.
    pub maintainer: String,
}

impl Package {
    pub fn read(path: &Path) -> Result<Package> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Package::parse(&text).with_context(|| format!("{}", path.display()))
    }

    fn parse(text: &str) -> Result<Package> {
        let m: Manifest = toml::from_str(text)?;
        let p = m.package;
        Ok(Package { name: p.name, version: p.version, maintainer: p.metadata.deb.maintainer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_version_and_maintainer() {
        let text = "[package]\nname = \"encapd\"\nversion = \"0.1.0\"\n\n[package.metadata.deb]\nmaintainer = \"A <a@b.org>\"\n";
        let p = Package::parse(text).unwrap();
        assert_eq!(p, Package { name: "encapd".into(), version: "0.1.0".into(), maintainer: "A <a@b.org>".into() });
    }

    #[test]
    fn a_manifest_without_a_maintainer_is_an_error() {
        assert!(Package::parse("[package]\nname = \"encapd\"\nversion = \"0.1.0\"\n").is_err());
    }

    #[test]
    fn the_workspace_manifest_has_what_the_changelog_needs() {
        let p = Package::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml")).unwrap();
        assert_eq!(p.name, "encapd");
        assert!(p.maintainer.contains('<') && p.maintainer.ends_with('>'), "{}", p.maintainer);
    }
}
