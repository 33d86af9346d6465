//! Problems found in a workflow file, with the place they were found: rendered as
//! `PATH:LINE:COL: error: MESSAGE` and an optional `help:` line.

use std::fmt;
use std::path::PathBuf;

/// One problem in one file. `line` and `column` are 1-based; 0 means "the whole file".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
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
            "{}:{}:{}: error: {}",
            self.path.display(),
            self.line,
            self.column,
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
            path: path.into(),
            line,
            column,
            message: message.into(),
            help: None,
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
    }
}
