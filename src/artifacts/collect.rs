//! Collecting what a successful try kept: every file in its artifacts folder
//! (`$SLUICE_ARTIFACTS`) and the files its `artifacts:` globs match under the workflow's
//! folder. Names are checked, symbolic links that lead out of their folder are refused, and
//! the size limits are applied here, before anything is uploaded.

use std::path::{Path, PathBuf};

use globset::GlobMatcher;

use super::{ArtifactError, Limits, Outbox, Result, check_name, media_type};

/// A file to keep, found by `collect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The artifact's name: its path relative to the folder it was found in.
    pub name: String,
    /// Where its content is (a symbolic link's target, resolved).
    pub path: PathBuf,
    pub size: u64,
    pub media_type: String,
}

/// Finds the files a try keeps, in name order, each within the per-artifact limit. The
/// per-run limit needs what the run already holds: `check_run_limit`.
pub async fn collect(
    outbox: &Outbox,
    globs: &[String],
    base_dir: &Path,
    limits: Limits,
) -> Result<Vec<Collected>> {
    let outbox = outbox.dir().to_owned();
    let globs = globs.to_vec();
    let base_dir = base_dir.to_owned();
    tokio::task::spawn_blocking(move || collect_blocking(&outbox, &globs, &base_dir, limits))
        .await
        .map_err(|e| ArtifactError::Join(e.to_string()))?
}

/// Checks that `files` fit in the run's limit beside the `run_total` bytes it already holds;
/// the error names the file that would cross it.
pub fn check_run_limit(files: &[Collected], run_total: u64, limits: Limits) -> Result<()> {
    let mut total = run_total;
    for file in files {
        total = total.saturating_add(file.size);
        if total > limits.per_run {
            return Err(ArtifactError::RunTooLarge {
                name: file.name.clone(),
                total,
                limit: limits.per_run,
            });
        }
    }
    Ok(())
}

fn collect_blocking(
    outbox: &Path,
    globs: &[String],
    base_dir: &Path,
    limits: Limits,
) -> Result<Vec<Collected>> {
    let mut found = Vec::new();
    if outbox.is_dir() {
        let root = outbox.canonicalize().map_err(ArtifactError::io(outbox))?;
        walk(&root, &root, &mut |_| true, &mut found)?;
    }
    if !globs.is_empty() {
        let root = base_dir
            .canonicalize()
            .map_err(ArtifactError::io(base_dir))?;
        for pattern in globs {
            let matcher = compile(pattern)?;
            let start = root.join(literal_prefix(pattern));
            let before = found.len();
            if start.is_file() || start.is_symlink() {
                if matcher.is_match(literal_prefix(pattern)) {
                    add_file(&root, &start, &mut found)?;
                }
            } else if start.is_dir() {
                walk(
                    &root,
                    &start,
                    &mut |name| matcher.is_match(name),
                    &mut found,
                )?;
            }
            if found.len() == before {
                return Err(ArtifactError::NoMatch {
                    pattern: pattern.clone(),
                    folder: base_dir.to_owned(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = found.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(ArtifactError::Duplicate {
            name: pair[0].name.clone(),
        });
    }
    if let Some(file) = found.iter().find(|f| f.size > limits.per_artifact) {
        return Err(ArtifactError::TooLarge {
            name: file.name.clone(),
            size: file.size,
            limit: limits.per_artifact,
        });
    }
    Ok(found)
}

/// A task's `artifacts:` glob, compiled by the same function `dag::compile` checks it with.
fn compile(pattern: &str) -> Result<GlobMatcher> {
    crate::dag::globs::artifact_glob(pattern).map_err(|reason| ArtifactError::Pattern {
        pattern: pattern.to_owned(),
        reason,
    })
}

/// The leading segments of `pattern` without glob syntax: where to start walking.
fn literal_prefix(pattern: &str) -> &str {
    let mut end = 0;
    for (i, segment) in pattern.split('/').enumerate() {
        if segment.contains(['*', '?', '[', '{']) {
            break;
        }
        end = if i == 0 {
            segment.len()
        } else {
            end + 1 + segment.len()
        };
    }
    &pattern[..end]
}

/// Adds every file under `dir` whose name (relative to `root`) `wanted` accepts.
fn walk(
    root: &Path,
    dir: &Path,
    wanted: &mut dyn FnMut(&str) -> bool,
    found: &mut Vec<Collected>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(ArtifactError::io(dir))?
        .collect::<std::result::Result<_, _>>()
        .map_err(ArtifactError::io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(ArtifactError::io(&path))?;
        if kind.is_dir() {
            walk(root, &path, wanted, found)?;
        } else if wanted(&relative_name(root, &path)?) {
            add_file(root, &path, found)?;
        }
    }
    Ok(())
}

/// Adds one file (or symbolic link to a file inside `root`) as an artifact.
fn add_file(root: &Path, path: &Path, found: &mut Vec<Collected>) -> Result<()> {
    let name = relative_name(root, path)?;
    check_name(&name)?;
    let meta = std::fs::symlink_metadata(path).map_err(ArtifactError::io(path))?;
    let content = if meta.file_type().is_symlink() {
        let target = path.canonicalize().map_err(|_| ArtifactError::Escapes {
            name: name.clone(),
            target: std::fs::read_link(path).unwrap_or_default(),
        })?;
        // Only what is inside the folder may be kept: a link out of it could expose any
        // file the worker can read.
        if !target.starts_with(root) {
            return Err(ArtifactError::Escapes { name, target });
        }
        if !target.is_file() {
            return Err(ArtifactError::NotAFile { name });
        }
        target
    } else if meta.is_file() {
        path.to_owned()
    } else {
        return Err(ArtifactError::NotAFile { name });
    };
    let size = std::fs::metadata(&content)
        .map_err(ArtifactError::io(&content))?
        .len();
    found.push(Collected {
        media_type: media_type(&name),
        name,
        path: content,
        size,
    });
    Ok(())
}

fn relative_name(root: &Path, path: &Path) -> Result<String> {
    let relative = path
        .strip_prefix(root)
        .map_err(|_| ArtifactError::Escapes {
            name: path.display().to_string(),
            target: path.to_owned(),
        })?;
    let parts: Vec<&str> = relative
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<_>>()
        .ok_or_else(|| ArtifactError::NotUtf8 {
            path: path.to_owned(),
        })?;
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &[u8]) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    async fn outbox_with(dir: &Path) -> Outbox {
        let outbox = Outbox::for_try(&dir.join("scratch"), "t", 1);
        outbox.prepare().await.expect("prepare");
        outbox
    }

    #[tokio::test]
    async fn the_folder_and_the_globs_are_collected_by_relative_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = outbox_with(dir.path()).await;
        write(&outbox.dir().join("results.jsonl"), b"{}\n");
        write(&outbox.dir().join("plots/a.png"), b"png");
        let base = dir.path().join("wf");
        write(&base.join("out/report.csv"), b"a,b\n1,2\n");
        write(&base.join("out/skip.txt"), b"no");
        write(&base.join("model.bin"), b"0101");
        let globs = vec!["out/*.csv".to_owned(), "model.bin".to_owned()];
        let found = collect(&outbox, &globs, &base, Limits::default())
            .await
            .expect("collect");
        let names: Vec<_> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.bin",
                "out/report.csv",
                "plots/a.png",
                "results.jsonl"
            ]
        );
        let csv = &found[1];
        assert_eq!((csv.size, csv.media_type.as_str()), (8, "text/csv"));
    }

    #[tokio::test]
    async fn a_symbolic_link_out_of_the_folder_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = outbox_with(dir.path()).await;
        write(&dir.path().join("secret.txt"), b"key");
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), outbox.dir().join("leak"))
            .expect("symlink");
        let error = collect(&outbox, &[], dir.path(), Limits::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ArtifactError::Escapes { .. }), "{error}");
        assert!(error.to_string().contains("`leak`"), "{error}");
        // A link that stays inside is kept, under the link's name.
        std::fs::remove_file(outbox.dir().join("leak")).expect("rm");
        write(&outbox.dir().join("real.txt"), b"ok");
        std::os::unix::fs::symlink(outbox.dir().join("real.txt"), outbox.dir().join("alias"))
            .expect("symlink");
        let found = collect(&outbox, &[], dir.path(), Limits::default())
            .await
            .expect("collect");
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].name.as_str(), found[0].size), ("alias", 2));
    }

    #[tokio::test]
    async fn globs_that_leave_the_folder_or_match_nothing_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = outbox_with(dir.path()).await;
        for (pattern, says) in [
            ("../*.txt", "`..`"),
            ("/etc/passwd", "absolute"),
            ("missing/*.csv", "matched no file"),
        ] {
            let error = collect(
                &outbox,
                &[pattern.to_owned()],
                dir.path(),
                Limits::default(),
            )
            .await
            .unwrap_err();
            assert!(error.to_string().contains(says), "{pattern}: {error}");
        }
    }

    #[tokio::test]
    async fn limits_name_the_file_and_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = outbox_with(dir.path()).await;
        write(&outbox.dir().join("big.bin"), &[0u8; 2048]);
        write(&outbox.dir().join("small.txt"), &[b'x'; 100]);
        let per_artifact = Limits {
            per_artifact: 1024,
            per_run: 1 << 20,
        };
        let error = collect(&outbox, &[], dir.path(), per_artifact)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "artifact `big.bin` is 2048 bytes, over the limit of 1024 bytes per artifact"
        );
        let per_run = Limits {
            per_artifact: 4096,
            per_run: 3000,
        };
        let files = collect(&outbox, &[], dir.path(), per_run)
            .await
            .expect("within the per-artifact limit");
        assert_eq!(
            check_run_limit(&files, 800, per_run).map_err(|e| e.to_string()),
            Ok(())
        );
        // 1000 bytes kept by earlier tasks + 2048 crosses 3000 at the first file.
        let error = check_run_limit(&files, 1000, per_run).unwrap_err();
        assert_eq!(
            error.to_string(),
            "artifact `big.bin` would bring the run's artifacts to 3048 bytes, over the limit \
             of 3000 bytes per run"
        );
    }

    #[test]
    fn the_walk_starts_at_the_literal_part_of_a_glob() {
        assert_eq!(literal_prefix("out/*.csv"), "out");
        assert_eq!(literal_prefix("a/b/c.txt"), "a/b/c.txt");
        assert_eq!(literal_prefix("**/*.json"), "");
        assert_eq!(literal_prefix("data/{a,b}/x"), "data");
    }
}
