//! `cargo xtask msrv`: each workspace member's `rust-version` against what its locked
//! dependency tree declares.
//!
//! A member's minimum supported Rust version is the highest `rust-version` declared by a
//! crate it depends on (normal and build dependencies, every platform, every feature, as
//! `Cargo.lock` resolves them), and at least 1.85 for edition 2024. A member that declares
//! less than that states a version nothing could build it with; the check fails then.
//! Clippy's `incompatible_msrv` lint covers the other half: the project's own code using a
//! standard-library API newer than the declared version.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// A Rust version as manifests write it: `1.85` or `1.85.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RustVersion {
    /// Always 1 in practice.
    pub major: u32,
    /// The release, e.g. 85.
    pub minor: u32,
    /// The patch release (0 when not written).
    pub patch: u32,
}

/// The first release with edition 2024, which every member uses.
pub const EDITION_2024: RustVersion = RustVersion {
    major: 1,
    minor: 85,
    patch: 0,
};

impl FromStr for RustVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split('.').map(str::parse::<u32>);
        let mut next = || parts.next().transpose().map_err(|e| format!("{s:?}: {e}"));
        let major = next()?.ok_or_else(|| format!("{s:?}: empty rust-version"))?;
        let minor = next()?.unwrap_or(0);
        let patch = next()?.unwrap_or(0);
        Ok(RustVersion {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for RustVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.patch == 0 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

/// One workspace member's declared and needed Rust version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The package name.
    pub name: String,
    /// Its `rust-version`, if it declares one.
    pub declared: Option<RustVersion>,
    /// The highest `rust-version` in its dependency tree, or edition 2024's 1.85.
    pub needed: RustVersion,
    /// The dependency that declares [`needed`](Self::needed) (`name version`), or
    /// `edition 2024`.
    pub why: String,
}

impl Member {
    /// Whether the declared version is at least the needed one.
    pub fn holds(&self) -> bool {
        self.declared.is_some_and(|d| d >= self.needed)
    }
}

/// Reads `cargo metadata --format-version 1` output and returns every workspace member's
/// figures.
///
/// # Errors
/// When the JSON lacks the fields `cargo metadata` writes, or a `rust-version` does not
/// parse.
pub fn members(metadata: &Value) -> Result<Vec<Member>, String> {
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .ok_or("no packages in the metadata")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or("no resolve graph in the metadata (was --no-deps given?)")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let version_of = |id: &str| -> Result<Option<RustVersion>, String> {
        packages
            .get(id)
            .and_then(|p| p["rust_version"].as_str())
            .map(str::parse)
            .transpose()
    };
    let label = |id: &str| {
        packages.get(id).map_or_else(
            || id.to_owned(),
            |p| {
                format!(
                    "{} {}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?")
                )
            },
        )
    };
    let mut out = Vec::new();
    for member in metadata["workspace_members"]
        .as_array()
        .ok_or("no workspace members in the metadata")?
    {
        let id = member
            .as_str()
            .ok_or("a workspace member is not a string")?;
        let mut needed = EDITION_2024;
        let mut why = "edition 2024".to_owned();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack = vec![id];
        while let Some(at) = stack.pop() {
            let Some(node) = nodes.get(at) else { continue };
            for dep in node["deps"].as_array().into_iter().flatten() {
                let used = dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build");
                let Some(pkg) = dep["pkg"].as_str() else {
                    continue;
                };
                if used && seen.insert(pkg) {
                    stack.push(pkg);
                    if let Some(v) = version_of(pkg)? {
                        if v > needed {
                            needed = v;
                            why = label(pkg);
                        }
                    }
                }
            }
        }
        out.push(Member {
            name: packages
                .get(id)
                .and_then(|p| p["name"].as_str())
                .unwrap_or(id)
                .to_owned(),
            declared: version_of(id)?,
            needed,
            why,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> Value {
        serde_json::json!({
            "packages": [
                {"id": "app", "name": "app", "version": "0.1.0", "rust_version": "1.85"},
                {"id": "lib", "name": "lib", "version": "0.1.0", "rust_version": "1.85"},
                {"id": "old", "name": "old", "version": "1.0.0", "rust_version": "1.70"},
                {"id": "new", "name": "new", "version": "2.3.0", "rust_version": "1.89.1"},
                {"id": "test-only", "name": "test-only", "version": "1.0.0", "rust_version": "1.95"},
                {"id": "deep", "name": "deep", "version": "0.4.0", "rust_version": "1.88"},
            ],
            "workspace_members": ["app", "lib"],
            "resolve": {"nodes": [
                {"id": "app", "deps": [
                    {"pkg": "lib", "dep_kinds": [{"kind": null}]},
                    {"pkg": "test-only", "dep_kinds": [{"kind": "dev"}]},
                ]},
                {"id": "lib", "deps": [
                    {"pkg": "old", "dep_kinds": [{"kind": null}]},
                    {"pkg": "new", "dep_kinds": [{"kind": "build", "target": "cfg(unix)"}]},
                ]},
                {"id": "old", "deps": [{"pkg": "deep", "dep_kinds": [{"kind": null}]}]},
                {"id": "new", "deps": []},
                {"id": "deep", "deps": []},
                {"id": "test-only", "deps": []},
            ]},
        })
    }

    #[test]
    fn the_highest_version_of_normal_and_build_dependencies_counts() {
        let members = members(&metadata()).unwrap();
        let app = &members[0];
        assert_eq!(app.name, "app");
        assert_eq!(app.needed, "1.89.1".parse().unwrap());
        assert_eq!(app.why, "new 2.3.0");
        assert!(!app.holds(), "1.85 is below 1.89.1");
        // The dev-dependency's 1.95 is not counted.
        assert_ne!(app.needed, "1.95".parse().unwrap());
    }

    #[test]
    fn a_member_declaring_enough_holds() {
        let mut meta = metadata();
        meta["packages"][1]["rust_version"] = "1.90".into();
        meta["resolve"]["nodes"][1]["deps"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        let members = members(&meta).unwrap();
        let lib = &members[1];
        // Through a dependency's own dependency.
        assert_eq!(lib.needed, "1.88".parse().unwrap());
        assert_eq!(lib.why, "deep 0.4.0");
        assert!(lib.holds());
    }

    #[test]
    fn versions_parse_and_print_as_written() {
        assert_eq!("1.85".parse::<RustVersion>().unwrap().to_string(), "1.85");
        assert_eq!(
            "1.89.1".parse::<RustVersion>().unwrap().to_string(),
            "1.89.1"
        );
        assert!("1.x".parse::<RustVersion>().is_err());
        assert!("1.85".parse::<RustVersion>().unwrap() < "1.85.1".parse().unwrap());
    }
}
