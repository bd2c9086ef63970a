//! Stage configs: a YAML file plus `--set key=value` overrides (dotted keys for nested fields),
//! deserialised into the stage's typed config, where an unknown key is an error that names it.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use crate::TrainerError;

/// Read `path`, apply each `key=value` override (the value parsed as YAML: `0.5`, `true`,
/// `[a, b]`, or a plain string), and deserialise.
pub fn load<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T, TrainerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainerError::Io(path.display().to_string(), e))?;
    let mut root: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| TrainerError::Config(format!("{}: {e}", path.display())))?;
    if root.is_null() {
        root = Value::Mapping(Mapping::new());
    }
    for assignment in overrides {
        let (key, raw) = assignment.split_once('=').ok_or_else(|| {
            TrainerError::Config(format!("--set {assignment}: expected key=value"))
        })?;
        let value: Value =
            serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        set_path(&mut root, key, value)
            .map_err(|e| TrainerError::Config(format!("--set {assignment}: {e}")))?;
    }
    serde_yaml_ng::from_value(root)
        .map_err(|e| TrainerError::Config(format!("{}: {e}", path.display())))
}

fn set_path(root: &mut Value, dotted: &str, value: Value) -> Result<(), String> {
    let mut node = root;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (index, part) in parts.iter().enumerate() {
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| format!("`{}` is not a section", parts[..index].join(".")))?;
        let key = Value::String(part.to_string());
        if index + 1 == parts.len() {
            map.insert(key, value);
            return Ok(());
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    Err("empty key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        rank: usize,
        alpha: f64,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Stage {
        base_model: String,
        max_steps: usize,
        lora: Inner,
    }

    #[test]
    fn overrides_nested_keys_and_rejects_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.yaml");
        std::fs::write(
            &path,
            "base_model: models/tiny\nmax_steps: 10\nlora:\n  rank: 8\n  alpha: 16\n",
        )
        .unwrap();
        let stage: Stage = load(&path, &["max_steps=25".into(), "lora.alpha=4.5".into()]).unwrap();
        assert_eq!(
            stage,
            Stage {
                base_model: "models/tiny".into(),
                max_steps: 25,
                lora: Inner {
                    rank: 8,
                    alpha: 4.5
                }
            }
        );
        let err = load::<Stage>(&path, &["lora.rnak=4".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rnak"), "{err}");
        std::fs::write(
            &path,
            "base_model: m\nmax_stesp: 3\nlora: {rank: 1, alpha: 1}\n",
        )
        .unwrap();
        assert!(load::<Stage>(&path, &[])
            .unwrap_err()
            .to_string()
            .contains("max_stesp"));
        assert!(load::<Stage>(&path, &["nonsense".into()])
            .unwrap_err()
            .to_string()
            .contains("key=value"));
    }
}
