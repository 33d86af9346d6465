//! catalog

pub mod versions;

/// Placeholder until the loader lands: compiles a workflow from its source text.
pub fn compile_source(
    _path: &std::path::Path,
    _source: &str,
) -> Result<crate::dag::Workflow, Vec<crate::diagnostic::Diagnostic>> {
    Err(Vec::new())
}

/// Placeholder until the loader lands.
pub fn load_file(
    _path: &std::path::Path,
) -> Result<crate::dag::Workflow, Vec<crate::diagnostic::Diagnostic>> {
    Err(Vec::new())
}
