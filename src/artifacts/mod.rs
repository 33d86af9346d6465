//! Artifacts: files a try keeps with its run. Blobs live in one object store (a local folder
//! or S3-compatible storage, both through `object_store`), addressed by their SHA-256, so the
//! same content is stored once; what a run kept (run, task, try, name, size, digest) is a row
//! in `store`, written with the try's completion. This module owns the blobs, the per-try
//! folder tasks write into (`Outbox`), collecting that folder (names, escapes, limits) and
//! fetching blobs back into a local cache by digest. It writes no SQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub mod collect;
pub mod names;
pub mod retention;

pub use collect::{Collected, check_run_limit, collect};
pub use names::{NameError, check_name};

/// An artifact store that cannot be used, or an artifact that cannot be kept or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("artifact `{name}` is {size} bytes, over the limit of {limit} bytes per artifact")]
    TooLarge { name: String, size: u64, limit: u64 },
    #[error(
        "artifact `{name}` would bring the run's artifacts to {total} bytes, over the limit of \
         {limit} bytes per run"
    )]
    RunTooLarge {
        name: String,
        total: u64,
        limit: u64,
    },
    #[error(
        "artifact `{name}` is a symbolic link to {}, outside its folder; it was refused",
        target.display()
    )]
    Escapes { name: String, target: PathBuf },
    #[error("artifact `{name}` is not a regular file")]
    NotAFile { name: String },
    #[error("{} is not valid UTF-8 and cannot be an artifact's name", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("two files would both be kept as artifact `{name}`")]
    Duplicate { name: String },
    #[error("`artifacts` entry `{pattern}` is not usable: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("`artifacts` entry `{pattern}` matched no file under {}", folder.display())]
    NoMatch { pattern: String, folder: PathBuf },
    #[error("cannot read or write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the artifact store ({location}) failed: {source}")]
    Store {
        location: String,
        source: object_store::Error,
    },
    #[error(
        "the artifact store returned content with digest {actual} for blob {expected}; \
         it was not used"
    )]
    Corrupt { expected: String, actual: String },
    #[error("the artifact store is misconfigured: {0}")]
    Config(String),
    #[error("a background task failed: {0}")]
    Join(String),
}

pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;

impl ArtifactError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
        move |source| ArtifactError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Where blobs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local (or mounted) folder.
    Folder(PathBuf),
    /// An S3 bucket, or any S3-compatible service.
    S3(S3Location),
}

/// An S3-compatible bucket and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Keys start with this (no leading or trailing `/`); may be empty.
    pub prefix: String,
    /// `http://host:port` for S3-compatible services; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials never reach a log line.
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Size limits, checked when a try's artifacts are collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest single artifact, in bytes.
    pub per_artifact: u64,
    /// The most all of a run's artifacts may hold together, in bytes.
    pub per_run: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_artifact: 1 << 30,
            per_run: 10 << 30,
        }
    }
}

/// How a blob went into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub sha256: String,
    pub size: u64,
}

/// Requests to the store give up after this long, so an unreachable store fails the try (to
/// be retried) instead of holding it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per request against S3 before the error is the try's.
const S3_RETRIES: usize = 2;

/// The blob store, shared by every try, the API and retention. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
    /// Blobs are under `<prefix>/sha256/`.
    prefix: ObjectPath,
    /// Said in errors, so an outage names the store.
    location: String,
    pub limits: Limits,
}

impl Artifacts {
    /// Opens the store at `location`. Neither a folder nor S3 is touched until the first
    /// request; a folder is created by the first blob written.
    pub fn open(location: &Location, limits: Limits) -> Result<Artifacts> {
        match location {
            Location::Folder(root) => {
                // Rooted at `/` with the folder as the key prefix: the store creates folders as
                // it writes, so opening does no IO and leaves nothing behind unused.
                let absolute = if root.is_absolute() {
                    root.clone()
                } else {
                    std::env::current_dir()
                        .map_err(ArtifactError::io(root))?
                        .join(root)
                };
                let prefix = ObjectPath::from_absolute_path(&absolute).map_err(|e| {
                    ArtifactError::Config(format!(
                        "the folder {} cannot hold artifacts: {e}",
                        absolute.display()
                    ))
                })?;
                Ok(Artifacts {
                    store: Arc::new(object_store::local::LocalFileSystem::new()),
                    prefix,
                    location: absolute.display().to_string(),
                    limits,
                })
            }
            Location::S3(s3) => {
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_retry(object_store::RetryConfig {
                        max_retries: S3_RETRIES,
                        retry_timeout: REQUEST_TIMEOUT,
                        ..Default::default()
                    })
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_timeout(REQUEST_TIMEOUT)
                            .with_connect_timeout(Duration::from_secs(5)),
                    );
                if let Some(endpoint) = &s3.endpoint {
                    // S3-compatible services are addressed by path, and often over plain HTTP
                    // on a private network.
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder
                    .build()
                    .map_err(|e| ArtifactError::Config(e.to_string()))?;
                let prefix = ObjectPath::from(s3.prefix.as_str());
                Ok(Artifacts {
                    store: Arc::new(store),
                    prefix,
                    location: format!("s3://{}/{}", s3.bucket, s3.prefix),
                    limits,
                })
            }
        }
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn blob_path(&self, sha256: &str) -> ObjectPath {
        let fan_out = sha256.get(..2).unwrap_or("00");
        self.prefix
            .clone()
            .join("sha256")
            .join(fan_out)
            .join(sha256)
    }

    fn store_error(&self) -> impl FnOnce(object_store::Error) -> ArtifactError + '_ {
        |source| ArtifactError::Store {
            location: self.location.clone(),
            source,
        }
    }

    /// Stores the file at `path` under its digest and returns the digest and size. The blob
    /// is written even when it exists: that refreshes its age, which retention reads so as
    /// never to delete a blob a completion is about to reference.
    pub async fn put_file(&self, path: &Path) -> Result<StoredBlob> {
        let owned = path.to_owned();
        let (sha256, size) = tokio::task::spawn_blocking(move || digest_file(&owned))
            .await
            .map_err(|e| ArtifactError::Join(e.to_string()))??;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(ArtifactError::io(path))?;
        let mut writer =
            object_store::buffered::BufWriter::new(self.store.clone(), self.blob_path(&sha256));
        // A multipart upload left unfinished is aborted so the store keeps no parts of it.
        if let Err(error) = tokio::io::copy(&mut file, &mut writer).await {
            let _ = writer.abort().await;
            return Err(self.upload_error(path, error));
        }
        if let Err(error) = writer.shutdown().await {
            return Err(self.upload_error(path, error));
        }
        Ok(StoredBlob { sha256, size })
    }

    /// The store's own error when it is one (an outage), else the file's.
    fn upload_error(&self, path: &Path, error: std::io::Error) -> ArtifactError {
        if error
            .get_ref()
            .is_some_and(|inner| inner.is::<object_store::Error>())
        {
            return match error
                .into_inner()
                .map(|i| i.downcast::<object_store::Error>())
            {
                Some(Ok(store_error)) => self.store_error()(*store_error),
                _ => ArtifactError::Join("the upload's error was lost".to_owned()),
            };
        }
        ArtifactError::Io {
            path: path.to_owned(),
            source: error,
        }
    }

    /// Stores `bytes` under their digest.
    pub async fn put_bytes(&self, bytes: Vec<u8>) -> Result<StoredBlob> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        self.store
            .put(&self.blob_path(&sha256), bytes.into())
            .await
            .map_err(self.store_error())?;
        Ok(StoredBlob { sha256, size })
    }

    /// The blob's content as a stream of chunks (the API's downloads).
    pub async fn open_blob(
        &self,
        sha256: &str,
    ) -> Result<impl futures_util::Stream<Item = Result<bytes::Bytes>> + Send + 'static> {
        let found = self
            .store
            .get(&self.blob_path(sha256))
            .await
            .map_err(self.store_error())?;
        let location = self.location.clone();
        Ok(found.into_stream().map(move |chunk| {
            chunk.map_err(|source| ArtifactError::Store {
                location: location.clone(),
                source,
            })
        }))
    }

    /// Up to `limit` bytes from the start of a blob (previews).
    pub async fn read_head(&self, sha256: &str, size: u64, limit: u64) -> Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let bytes = self
            .store
            .get_range(&self.blob_path(sha256), 0..size.min(limit))
            .await
            .map_err(self.store_error())?;
        Ok(bytes.to_vec())
    }

    /// Makes the blob available at `dest`: fetched once, checked against its digest, written
    /// beside `dest` and renamed into place, so a half-written file is never seen. A file
    /// already at `dest` is the cached copy.
    pub async fn fetch_to(&self, sha256: &str, dest: &Path) -> Result<()> {
        if tokio::fs::try_exists(dest).await.unwrap_or(false) {
            return Ok(());
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(ArtifactError::io(parent))?;
        }
        let partial = dest.with_extension(format!("part-{}", uuid::Uuid::new_v4().simple()));
        let result = self.download(sha256, &partial).await;
        if let Err(error) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error);
        }
        tokio::fs::rename(&partial, dest)
            .await
            .map_err(ArtifactError::io(dest))
    }

    async fn download(&self, sha256: &str, to: &Path) -> Result<()> {
        let found = self
            .store
            .get(&self.blob_path(sha256))
            .await
            .map_err(self.store_error())?;
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(ArtifactError::io(to))?;
        let mut hasher = Sha256::new();
        let mut chunks = found.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(self.store_error())?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(ArtifactError::io(to))?;
        }
        file.flush().await.map_err(ArtifactError::io(to))?;
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            return Err(ArtifactError::Corrupt {
                expected: sha256.to_owned(),
                actual,
            });
        }
        Ok(())
    }

    /// The digests of the blobs last written before `written_before`, whatever refers to them:
    /// retention's candidates for orphans (blobs of tries that failed after storing them).
    pub async fn blobs_written_before(
        &self,
        written_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::collections::BTreeSet<String>> {
        let root = self.prefix.clone().join("sha256");
        let mut listing = self.store.list(Some(&root));
        let mut digests = std::collections::BTreeSet::new();
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                // An empty store has no `sha256` folder yet.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(error) => return Err(self.store_error()(error)),
            };
            let Some(digest) = meta.location.filename() else {
                continue;
            };
            // Only names that are digests are blobs (a partly written upload is not).
            let is_digest = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            if is_digest && meta.last_modified < written_before {
                digests.insert(digest.to_owned());
            }
        }
        Ok(digests)
    }

    /// Deletes the blob if it was last written before `written_before`; returns whether it
    /// did. A missing blob counts as deleted.
    pub async fn delete_blob_older_than(
        &self,
        sha256: &str,
        written_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let path = self.blob_path(sha256);
        match self.store.head(&path).await {
            Ok(meta) if meta.last_modified >= written_before => return Ok(false),
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(true),
            Err(error) => return Err(self.store_error()(error)),
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(error) => Err(self.store_error()(error)),
        }
    }
}

/// SHA-256 (hex) and size of a file. Blocking: call it off the async threads.
fn digest_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(ArtifactError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(ArtifactError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The media type of an artifact, from its name.
pub fn media_type(name: &str) -> String {
    let extension = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        // Not in the common tables, but what LLM pipelines write most.
        Some("jsonl" | "ndjson") => "application/x-ndjson".to_owned(),
        Some("md") => "text/markdown".to_owned(),
        Some("log") => "text/plain".to_owned(),
        _ => mime_guess::from_path(name)
            .first_or_octet_stream()
            .essence_str()
            .to_owned(),
    }
}

/// The folder a try writes its artifacts into (`$SLUICE_ARTIFACTS`), and the Rust API
/// operators keep files with. Whatever is in it when the try succeeds is collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// The folder of try `try_number` of `task` under the run's scratch folder. Task ids are
    /// `[a-z0-9_-]+`, so they are safe as folder names.
    pub fn for_try(scratch_dir: &Path, task: &str, try_number: u32) -> Outbox {
        Outbox {
            dir: scratch_dir
                .join("artifacts")
                .join(format!("{task}.try{try_number}")),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder (empty: a previous execution's files are removed, so a rescheduled
    /// or handed-back try keeps only what it writes now).
    pub async fn prepare(&self) -> Result<()> {
        let dir = self.dir.clone();
        // One trip to the blocking pool: every try does this.
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ArtifactError::io(&dir)(e)),
            }
            std::fs::create_dir_all(&dir).map_err(ArtifactError::io(&dir))
        })
        .await
        .map_err(|e| ArtifactError::Join(e.to_string()))?
    }

    /// Keeps `content` as artifact `name` (a relative path such as `report/summary.json`).
    pub async fn put(&self, name: &str, content: impl AsRef<[u8]>) -> Result<()> {
        let path = self.path_for(name)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(ArtifactError::io(parent))?;
        }
        tokio::fs::write(&path, content)
            .await
            .map_err(ArtifactError::io(&path))
    }

    /// Keeps a copy of the file at `source` as artifact `name`.
    pub async fn put_file(&self, name: &str, source: &Path) -> Result<()> {
        let path = self.path_for(name)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(ArtifactError::io(parent))?;
        }
        tokio::fs::copy(source, &path)
            .await
            .map_err(ArtifactError::io(source))?;
        Ok(())
    }

    fn path_for(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }
}

/// Where a downstream try finds artifact `name` with digest `sha256`: a cache under the run's
/// scratch folder keyed by digest, so a blob is fetched once per run and worker.
pub fn cached_path(scratch_dir: &Path, sha256: &str, name: &str) -> PathBuf {
    let file_name = Path::new(name)
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_else(|| "artifact".into());
    scratch_dir
        .join("artifact-cache")
        .join(sha256)
        .join(file_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &Path) -> Artifacts {
        Artifacts::open(&Location::Folder(dir.join("store")), Limits::default()).expect("store")
    }

    #[tokio::test]
    async fn a_file_round_trips_by_digest_and_is_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts = local(dir.path());
        assert!(
            !dir.path().join("store").exists(),
            "opening the store leaves nothing behind"
        );
        let source = dir.path().join("results.jsonl");
        std::fs::write(&source, b"{\"a\":1}\n{\"a\":2}\n").expect("write");
        let stored = artifacts.put_file(&source).await.expect("put");
        assert_eq!(stored.size, 16);
        assert_eq!(
            stored.sha256,
            hex::encode(Sha256::digest(b"{\"a\":1}\n{\"a\":2}\n"))
        );
        let dest = cached_path(
            &dir.path().join("scratch"),
            &stored.sha256,
            "out/results.jsonl",
        );
        assert!(dest.ends_with(format!("{}/results.jsonl", stored.sha256)));
        artifacts
            .fetch_to(&stored.sha256, &dest)
            .await
            .expect("fetch");
        assert_eq!(
            std::fs::read(&dest).expect("read"),
            b"{\"a\":1}\n{\"a\":2}\n"
        );
        let head = artifacts
            .read_head(&stored.sha256, stored.size, 7)
            .await
            .expect("head");
        assert_eq!(head, b"{\"a\":1}");
    }

    #[tokio::test]
    async fn a_blob_whose_content_does_not_match_its_digest_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts = local(dir.path());
        let stored = artifacts.put_bytes(b"good".to_vec()).await.expect("put");
        // Tamper with the blob behind the store's back.
        let blob = dir
            .path()
            .join("store/sha256")
            .join(&stored.sha256[..2])
            .join(&stored.sha256);
        std::fs::write(&blob, b"evil").expect("tamper");
        let dest = dir.path().join("cache/x");
        let error = artifacts.fetch_to(&stored.sha256, &dest).await.unwrap_err();
        assert!(matches!(error, ArtifactError::Corrupt { .. }), "{error}");
        assert!(!dest.exists(), "a corrupt blob is never left in the cache");
    }

    #[tokio::test]
    async fn blobs_are_deleted_only_when_older_than_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts = local(dir.path());
        let stored = artifacts.put_bytes(b"x".to_vec()).await.expect("put");
        let long_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        assert!(
            !artifacts
                .delete_blob_older_than(&stored.sha256, long_ago)
                .await
                .expect("delete")
        );
        let later = chrono::Utc::now() + chrono::Duration::seconds(5);
        assert!(
            artifacts
                .delete_blob_older_than(&stored.sha256, later)
                .await
                .expect("delete")
        );
        let dest = dir.path().join("cache/x");
        assert!(artifacts.fetch_to(&stored.sha256, &dest).await.is_err());
    }

    #[tokio::test]
    async fn the_outbox_refuses_names_that_leave_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::for_try(dir.path(), "score", 2);
        outbox.prepare().await.expect("prepare");
        outbox
            .put("report/summary.json", b"{}")
            .await
            .expect("a nested name");
        assert!(
            dir.path()
                .join("artifacts/score.try2/report/summary.json")
                .is_file()
        );
        for bad in ["../x", "/etc/passwd", "a/../../x", ""] {
            let error = outbox.put(bad, b"x").await.unwrap_err();
            assert!(matches!(error, ArtifactError::Name(_)), "{bad}: {error}");
        }
    }

    #[test]
    fn media_types_come_from_the_name() {
        assert_eq!(media_type("results.jsonl"), "application/x-ndjson");
        assert_eq!(media_type("a/b.json"), "application/json");
        assert_eq!(media_type("t.csv"), "text/csv");
        assert_eq!(media_type("plot.png"), "image/png");
        assert_eq!(media_type("blob"), "application/octet-stream");
    }
}
