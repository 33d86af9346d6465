//! Data drift statistics whose numbers equal scipy's and Evidently's.
//!
//! The crate owns the statistical core of the `drift` operator: reading a columnar table from
//! CSV or JSONL (over any `std::io::Read` the caller gives), choosing a test per column the way
//! Evidently 0.7 does, computing it the way scipy computes it, and deciding dataset drift.
//!
//! It is pure: no file or network IO of its own, no clock, no async, no global state. Every
//! random choice (sampling, permutation p-values) takes an explicit seed.
//!
//! - [`read`]: CSV and JSONL readers into a [`table::Table`].
//! - [`table`]: columns, their kinds (inferred or given), the time window and sampling.
//! - [`stats`]: the tests themselves (KS, chi-square, Z, PSI, Wasserstein, Jensen-Shannon).
//! - [`text`]: descriptors of text columns, fed to the numeric tests.
//! - [`embedding`]: drift of embedding columns (mean distance, drifted components, MMD).
//! - [`detect`]: per-column method choice, thresholds, and the dataset verdict.
//! - [`histogram`]: the reference and current bins a report draws.

pub mod detect;
pub mod embedding;
pub mod histogram;
pub mod read;
pub mod rng;
pub mod stats;
pub mod table;
pub mod text;

pub use detect::{
    ColumnDrift, ColumnSpec, DatasetDrift, DriftConfig, Method, detect_drift, detect_drift_until,
};
pub use table::{ColumnKind, Table};

/// Everything that can go wrong while reading data or checking it for drift. Messages are
/// sentences a user can act on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("The {source_name} data could not be read: {message}")]
    Read {
        source_name: String,
        message: String,
    },
    #[error("The {source_name} data is malformed at line {line}: {message}")]
    Malformed {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error("The {source_name} data has no rows.")]
    EmptyData { source_name: String },
    #[error(
        "Column `{column}` has no values in the {source_name} data (after dropping missing ones)."
    )]
    EmptyColumn { column: String, source_name: String },
    #[error("Column `{column}` is missing from the {source_name} data.")]
    MissingColumn { column: String, source_name: String },
    #[error(
        "Column `{column}` is numeric but row {row} of the {source_name} data holds `{value}`, which is not a number."
    )]
    NotNumeric {
        column: String,
        source_name: String,
        row: usize,
        value: String,
    },
    #[error(
        "Column `{column}` holds embeddings but row {row} of the {source_name} data is not an array of numbers."
    )]
    NotEmbedding {
        column: String,
        source_name: String,
        row: usize,
    },
    #[error(
        "Column `{column}` holds embeddings of {expected} numbers but row {row} of the {source_name} data has {found}."
    )]
    EmbeddingWidth {
        column: String,
        source_name: String,
        row: usize,
        expected: usize,
        found: usize,
    },
    #[error(
        "Column `{column}` row {row} of the {source_name} data holds `{value}`, which is not a timestamp (RFC 3339, `YYYY-MM-DD HH:MM:SS` in UTC, or seconds since 1970)."
    )]
    NotTimestamp {
        column: String,
        source_name: String,
        row: usize,
        value: String,
    },
    #[error("Unknown drift method `{0}`; known methods: {known}.", known = detect::Method::NAMES.join(", "))]
    UnknownMethod(String),
    #[error("Method `{method}` does not apply to the {kind} column `{column}`.")]
    MethodNotForKind {
        method: String,
        kind: String,
        column: String,
    },
    #[error("Unknown column kind `{0}`; use numeric, categorical, text or embedding.")]
    UnknownKind(String),
    #[error("{0}")]
    InvalidSetting(String),
    /// The caller asked to stop (see [`detect::detect_drift_until`]).
    #[error("The drift check was stopped before it finished.")]
    Stopped,
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
