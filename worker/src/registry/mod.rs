//! Registry: the versioned model store under `models/`.
//!
//! Layout: `models/<name>/<version>/` holds `card.json` (the model card:
//! inputs in order, standardisation, threshold, training facts) and the
//! weights; `models/<name>/aliases.json` maps aliases such as `champion`
//! and `challenger` to versions. A model reference is a directory path,
//! `NAME/VERSION`, `NAME@ALIAS` or a bare `NAME` (its champion).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelRegistryError {
    #[error("model {reference:?}: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("cannot read {path}: {size} bytes, more than {MAX_ALIASES_BYTES} accepted")]
    AliasesTooLarge { path: String, size: u64 },
    #[error("cannot read {path}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("alias table {path} is not valid")]
    ParseAliases {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot serialise the alias table for {path}")]
    SerialiseAliases {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    WriteFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A resolved model: where it lives and what it is called.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLocation {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
}

pub const ALIASES_FILE: &str = "aliases.json";
/// Largest alias table read.
const MAX_ALIASES_BYTES: u64 = 1 << 20;

/// A model name, version or alias must be one plain path component, so
/// nothing in `aliases.json` or a reference can point outside the registry.
pub fn check_component(what: &str, s: &str) -> Result<(), ModelRegistryError> {
    let plain =
        !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0']) && s.len() <= 255;
    if plain {
        Ok(())
    } else {
        Err(ModelRegistryError::NotFound {
            reference: s.to_string(),
            detail: format!("{what} must be a single path component inside the registry"),
        })
    }
}

/// Reads a model's alias table (empty when there is none).
pub fn read_aliases(
    root: &Path,
    name: &str,
) -> Result<BTreeMap<String, String>, ModelRegistryError> {
    check_component("model name", name)?;
    let path = root.join(name).join(ALIASES_FILE);
    if let Ok(m) = std::fs::metadata(&path) {
        if m.len() > MAX_ALIASES_BYTES {
            return Err(ModelRegistryError::AliasesTooLarge {
                path: path.display().to_string(),
                size: m.len(),
            });
        }
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|source| ModelRegistryError::ParseAliases {
                path: path.display().to_string(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(ModelRegistryError::ReadFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Points `alias` of model `name` at `version` (atomic rename).
pub fn set_alias(
    root: &Path,
    name: &str,
    alias: &str,
    version: &str,
) -> Result<(), ModelRegistryError> {
    check_component("model name", name)?;
    check_component("alias", alias)?;
    check_component("version", version)?;
    if !root.join(name).join(version).join("card.json").is_file() {
        return Err(ModelRegistryError::NotFound {
            reference: format!("{name}/{version}"),
            detail: "no such version (card.json missing)".into(),
        });
    }
    let mut aliases = read_aliases(root, name)?;
    aliases.insert(alias.to_string(), version.to_string());
    let path = root.join(name).join(ALIASES_FILE);
    let tmp = path.with_extension("json.tmp");
    let werr = |source: std::io::Error| ModelRegistryError::WriteFile {
        path: path.display().to_string(),
        source,
    };
    let text = serde_json::to_string_pretty(&aliases).map_err(|source| {
        ModelRegistryError::SerialiseAliases {
            path: path.display().to_string(),
            source,
        }
    })?;
    std::fs::write(&tmp, text + "\n").map_err(werr)?;
    std::fs::rename(&tmp, &path).map_err(werr)?;
    Ok(())
}

/// Versions of a model, in numeric order where they are numbers.
pub fn versions(root: &Path, name: &str) -> Result<Vec<String>, ModelRegistryError> {
    let dir = root.join(name);
    let rd = std::fs::read_dir(&dir).map_err(|source| ModelRegistryError::ReadFile {
        path: dir.display().to_string(),
        source,
    })?;
    let mut v: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().join("card.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort_by_key(|s| (s.parse::<u64>().unwrap_or(u64::MAX), s.clone()));
    Ok(v)
}

/// The next free numeric version of a model.
pub fn next_version(root: &Path, name: &str) -> String {
    let last = versions(root, name)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    (last + 1).to_string()
}

/// Resolves a model reference against the registry root.
pub fn resolve(root: &Path, reference: &str) -> Result<ModelLocation, ModelRegistryError> {
    let nf = |detail: String| ModelRegistryError::NotFound {
        reference: reference.to_string(),
        detail,
    };
    let as_path = Path::new(reference);
    if as_path.join("card.json").is_file() {
        let dir = as_path.to_path_buf();
        let version = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = dir
            .parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(ModelLocation { name, version, dir });
    }
    let (name, version) = if let Some((name, alias)) = reference.split_once('@') {
        let aliases = read_aliases(root, name)?;
        let v = aliases.get(alias).ok_or_else(|| {
            nf(format!(
                "alias {alias:?} is not set in {} (known: {:?})",
                root.join(name).join(ALIASES_FILE).display(),
                aliases.keys().collect::<Vec<_>>()
            ))
        })?;
        (name.to_string(), v.clone())
    } else if let Some((name, version)) = reference.split_once('/') {
        (name.to_string(), version.to_string())
    } else {
        let aliases = read_aliases(root, reference)?;
        match aliases.get("champion") {
            Some(v) => (reference.to_string(), v.clone()),
            None => {
                let v = versions(root, reference)?;
                let last = v
                    .last()
                    .ok_or_else(|| nf("no versions in the registry".into()))?;
                (reference.to_string(), last.clone())
            }
        }
    };
    check_component("model name", &name)?;
    check_component("version", &version)?;
    let dir = root.join(&name).join(&version);
    if !dir.join("card.json").is_file() {
        return Err(nf(format!("{} has no card.json", dir.display())));
    }
    Ok(ModelLocation { name, version, dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_versions_and_aliases() {
        let root = tempfile::tempdir().unwrap();
        for v in ["1", "2", "10"] {
            let d = root.path().join("m").join(v);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("card.json"), "{}").unwrap();
        }
        assert_eq!(versions(root.path(), "m").unwrap(), ["1", "2", "10"]);
        assert_eq!(next_version(root.path(), "m"), "11");
        assert_eq!(resolve(root.path(), "m").unwrap().version, "10");
        set_alias(root.path(), "m", "champion", "2").unwrap();
        assert_eq!(resolve(root.path(), "m").unwrap().version, "2");
        assert_eq!(resolve(root.path(), "m@champion").unwrap().version, "2");
        assert_eq!(resolve(root.path(), "m/1").unwrap().version, "1");
        let by_dir = root.path().join("m/10");
        let loc = resolve(root.path(), by_dir.to_str().unwrap()).unwrap();
        assert_eq!((loc.name.as_str(), loc.version.as_str()), ("m", "10"));
        assert!(resolve(root.path(), "m@challenger").is_err());
        assert!(resolve(root.path(), "m/7").is_err());
        assert!(set_alias(root.path(), "m", "challenger", "7").is_err());
    }

    #[test]
    fn aliases_cannot_point_outside_the_registry() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("card.json"), "{}").unwrap();
        std::fs::create_dir_all(root.path().join("m")).unwrap();
        let rel = format!("../../{}", outside.path().display());
        for target in [rel.as_str(), "..", "/etc", "a/b", ""] {
            std::fs::write(
                root.path().join("m").join(ALIASES_FILE),
                serde_json::json!({ "champion": target }).to_string(),
            )
            .unwrap();
            let e = resolve(root.path(), "m@champion").unwrap_err().to_string();
            assert!(e.contains("single path component"), "{target}: {e}");
        }
        assert!(resolve(root.path(), "../x/1").is_err());
        assert!(set_alias(root.path(), "m", "champion", "../1").is_err());
    }
}
