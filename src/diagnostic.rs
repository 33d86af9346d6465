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
        write!(f, "{}:{}:{}: error: {}", self.path.display(), self.line, self.column, self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}
