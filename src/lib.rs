//! Sluice: workflow orchestration for LLMOps. Workflow files are read in two steps (`spec`, the
//! file as written; `dag`, the checked workflow), stored and run through `store`, and executed
//! by `scheduler` and `worker`. See ARCHITECTURE.md for the map.

// Layer 1: pure building blocks.
pub mod config;
pub mod diagnostic;
pub mod duration;
pub mod github;
pub mod lifecycle;
pub mod metric;
pub mod params;
pub mod retry;
pub mod schedule;
pub mod secrets;
pub mod spec;
pub mod template;
// Layer 2: the compiled, checked workflow.
pub mod dag;
// Layer 3: persistence (the database, and artifact blobs beside it).
pub mod artifacts;
pub mod store;
// Layer 4: experiment tracking and the model registry.
pub mod tracking;
// Layer 5: operators.
pub mod operators;
// Layer 6: matching triggers to runs (pure).
pub mod triggers;
// Layer 7: loading workflow files.
pub mod catalog;
// Layer 8: the runtime.
pub mod scheduler;
pub mod server;
pub mod web;
pub mod worker;
// Layer 9: the command line.
pub mod cli;
