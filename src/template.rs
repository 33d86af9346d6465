//! Templating with minijinja: the render context (params, run, tasks, event, secrets, …) and
//! the native-value rule (a string that is exactly one `{{ expression }}` yields the value).

/// A template that could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    /// The 1-based line inside the template source, when known.
    pub line: Option<u32>,
}

/// Whether a string contains template syntax at all (most strings do not: they are copied
/// as they are, without compiling anything).
pub fn contains_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// Checks a template's syntax without rendering it (for `sluice validate`).
pub fn check_syntax(source: &str) -> Result<(), TemplateError> {
    if !contains_template(source) {
        return Ok(());
    }
    let env = minijinja::Environment::new();
    env.template_from_str(source).map(drop).map_err(|e| TemplateError {
        message: e.to_string(),
        line: e.line().map(|l| l as u32),
    })
}
