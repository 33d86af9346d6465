//! What differs between a tracking run's lineage and a run started to reproduce it: the
//! workflow version the reproduction pinned, and each input file by content (same, changed,
//! missing from the reproduction, or new in it). Pure.

use serde::Serialize;

use super::{InputFile, Lineage};

/// How one input file of either run compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputStatus {
    Same,
    Changed,
    /// The original read it; the reproduction did not.
    Missing,
    /// The reproduction read it; the original did not.
    New,
}

/// One input file, by the path the workflow names it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputComparison {
    pub path: String,
    pub status: InputStatus,
    /// Its SHA-256 in the original run, when the original read it.
    pub original: Option<String>,
    /// Its SHA-256 in the reproduction, when the reproduction read it.
    pub reproduced: Option<String>,
}

/// The comparison of a reproduction with its original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// The workflow version (content hash) the original ran; `None` when it recorded none.
    pub original_version: Option<String>,
    /// The workflow version the reproduction pinned.
    pub reproduced_version: String,
    pub same_version: bool,
    /// Every input of either run, by path; `None` until the reproduction has tracked its own
    /// lineage.
    pub inputs: Option<Vec<InputComparison>>,
    /// Everything compared matches; `false` while the reproduction's inputs are not known.
    pub identical: bool,
    /// Each difference as a sentence, for pages.
    pub differences: Vec<String>,
}

/// The first 12 characters of a hash, as pages show them.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Compares the original's lineage with the reproduction's pinned version and, once it has
/// tracked them, its input files.
pub fn compare(
    original: &Lineage,
    reproduced_version: &str,
    reproduced_inputs: Option<&[InputFile]>,
) -> Comparison {
    let mut differences = Vec::new();
    let same_version = original.version_hash.as_deref() == Some(reproduced_version);
    if !same_version {
        differences.push(match &original.version_hash {
            Some(was) => format!(
                "the workflow version differs: {} in the original, {} now",
                short(was),
                short(reproduced_version)
            ),
            None => "the original recorded no workflow version, so it cannot be compared".into(),
        });
    }
    let inputs = reproduced_inputs.map(|now| {
        let mut compared: Vec<InputComparison> = original
            .inputs
            .iter()
            .map(|was| {
                let reproduced = now.iter().find(|f| f.path == was.path);
                let status = match reproduced {
                    None => InputStatus::Missing,
                    Some(f) if f.sha256 == was.sha256 => InputStatus::Same,
                    Some(_) => InputStatus::Changed,
                };
                InputComparison {
                    path: was.path.clone(),
                    status,
                    original: Some(was.sha256.clone()),
                    reproduced: reproduced.map(|f| f.sha256.clone()),
                }
            })
            .collect();
        compared.extend(
            now.iter()
                .filter(|f| !original.inputs.iter().any(|was| was.path == f.path))
                .map(|f| InputComparison {
                    path: f.path.clone(),
                    status: InputStatus::New,
                    original: None,
                    reproduced: Some(f.sha256.clone()),
                }),
        );
        compared
    });
    for input in inputs.iter().flatten() {
        let sentence = match (input.status, &input.original, &input.reproduced) {
            (InputStatus::Changed, Some(was), Some(now)) => format!(
                "input `{}` changed: sha256 {} in the original, {} now",
                input.path,
                short(was),
                short(now)
            ),
            (InputStatus::Missing, ..) => format!(
                "input `{}` was read by the original but not by this run",
                input.path
            ),
            (InputStatus::New, ..) => format!(
                "input `{}` is new: the original did not read it",
                input.path
            ),
            _ => continue,
        };
        differences.push(sentence);
    }
    Comparison {
        original_version: original.version_hash.clone(),
        reproduced_version: reproduced_version.to_owned(),
        same_version,
        identical: differences.is_empty() && inputs.is_some(),
        inputs,
        differences,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(path: &str, sha: &str) -> InputFile {
        InputFile {
            path: path.into(),
            sha256: sha.into(),
        }
    }

    fn lineage(inputs: Vec<InputFile>) -> Lineage {
        Lineage {
            version_hash: Some("v1".into()),
            inputs,
            ..Lineage::default()
        }
    }

    #[test]
    fn the_same_version_and_inputs_are_identical() {
        let original = lineage(vec![input("a.jsonl", "aa"), input("p.yaml", "pp")]);
        let now = [input("p.yaml", "pp"), input("a.jsonl", "aa")];
        let c = compare(&original, "v1", Some(&now));
        assert!(c.identical, "{c:?}");
        assert!(c.differences.is_empty());
        let statuses: Vec<InputStatus> = c.inputs.iter().flatten().map(|i| i.status).collect();
        assert_eq!(statuses, [InputStatus::Same, InputStatus::Same]);
    }

    #[test]
    fn each_difference_is_named() {
        let original = lineage(vec![input("a.jsonl", "aa"), input("gone.txt", "gg")]);
        let now = [input("a.jsonl", "ab"), input("new.txt", "nn")];
        let c = compare(&original, "v2", Some(&now));
        assert!(!c.identical);
        assert!(!c.same_version);
        let statuses: Vec<(&str, InputStatus)> = c
            .inputs
            .iter()
            .flatten()
            .map(|i| (i.path.as_str(), i.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("a.jsonl", InputStatus::Changed),
                ("gone.txt", InputStatus::Missing),
                ("new.txt", InputStatus::New)
            ]
        );
        assert_eq!(c.differences.len(), 4, "{:?}", c.differences);
        assert!(c.differences[0].contains("workflow version differs: v1"));
        assert!(c.differences[1].contains("`a.jsonl` changed: sha256 aa in the original, ab now"));
    }

    #[test]
    fn inputs_not_yet_tracked_are_not_called_identical() {
        let c = compare(&lineage(vec![input("a", "aa")]), "v1", None);
        assert!(c.same_version);
        assert!(c.inputs.is_none());
        assert!(!c.identical);
        assert!(c.differences.is_empty());
    }
}
