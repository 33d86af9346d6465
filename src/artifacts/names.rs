//! Artifact names: relative paths inside a try's artifacts folder (`report/summary.json`).
//! The one check every way in (the folder, the `artifacts:` globs, the operator API, the URL
//! of a download) goes through.

use std::path::{Component, Path};

/// A name that cannot be an artifact's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a valid artifact name: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// The longest name kept, in bytes.
const MAX_NAME_LEN: usize = 1024;

/// Checks that `name` is a relative path that stays inside its folder: no `..`, no absolute
/// path, no empty or `.` segments, no backslashes or control characters.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let refuse = |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("it is longer than 1024 bytes");
    }
    if name.starts_with('/') || Path::new(name).is_absolute() {
        return refuse("absolute paths are not allowed; use a path relative to the folder");
    }
    if name.contains('\\') {
        return refuse("use `/` to separate folders");
    }
    if name.chars().any(char::is_control) {
        return refuse("it contains control characters");
    }
    for segment in name.split('/') {
        match segment {
            "" => return refuse("it has an empty path segment"),
            "." => return refuse("`.` segments are not allowed"),
            ".." => return refuse("`..` would leave the artifacts folder"),
            _ => {}
        }
    }
    // Belt and braces: what the OS would make of it.
    if Path::new(name)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return refuse("it must be a plain relative path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_names() {
        for good in [
            "results.jsonl",
            "report/summary.json",
            "a b/c-d_e.txt",
            "..x/y..z",
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn escapes_and_absolute_paths_are_refused_with_a_reason() {
        for (bad, reason) in [
            ("../secrets", "`..`"),
            ("a/../../b", "`..`"),
            ("/etc/passwd", "absolute"),
            ("a\\..\\b", "`/`"),
            ("a//b", "empty path segment"),
            ("./a", "`.`"),
            ("", "empty"),
            ("a\nb", "control"),
        ] {
            let error = check_name(bad).unwrap_err();
            assert!(error.to_string().contains(reason), "{bad:?}: {error}");
        }
    }
}
