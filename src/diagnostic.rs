//! Problems found in a workflow file, with the place they were found: rendered as
//! `PATH:LINE:COL: error: MESSAGE` (or `warning:`) and an optional `help:` line.

use std::fmt;
use std::path::PathBuf;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Severity {
    /// The workflow cannot run as written.
    #[default]
    Error,
    /// The workflow runs, but something in it is risky (an unquoted value in a shell command).
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem in one file. `line` and `column` are 1-based; 0 means "the whole file".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: PathBuf,
    pub line: u32,
    pub column: u32,
    /// A full sentence saying what is wrong.
    pub message: String,
    /// A suggestion ("did you mean `needs`?"), when there is one.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.severity.as_str(),
            self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// A problem at a 1-based line and column (0, 0 for the whole file).
    pub fn new(
        path: impl Into<PathBuf>,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            line,
            column,
            message: message.into(),
            help: None,
        }
    }

    /// A warning at a 1-based line and column: worth fixing, but the workflow still runs.
    pub fn warning(
        path: impl Into<PathBuf>,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::new(path, line, column, message)
        }
    }

    /// The same problem with a suggestion.
    pub fn with_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Orders diagnostics as they appear in the file (stable for equal positions).
    pub fn sort(list: &mut [Diagnostic]) {
        list.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_a_compiler() {
        let d = Diagnostic::new("wf.yaml", 3, 5, "unknown key `neds`")
            .with_help(Some("did you mean `needs`?".into()));
        assert_eq!(
            d.to_string(),
            "wf.yaml:3:5: error: unknown key `neds`\n  help: did you mean `needs`?"
        );
        let w = Diagnostic::warning("wf.yaml", 7, 16, "unquoted");
        assert_eq!(w.to_string(), "wf.yaml:7:16: warning: unquoted");
    }
}
