//! The workflow file as written: a YAML tree with the position of every node (`tree`), the
//! typed structs of format v1 that also generate the JSON Schema (`format`), and a checker of
//! a tree against such a schema that reports every structural problem at once (`check`).
//! No semantic checks and no IO here.

pub mod check;
pub mod format;
pub mod suggest;
pub mod tree;

pub use format::{TaskSpec, WorkflowSpec};
pub use tree::{Entry, Node, NodeValue, Pos, SyntaxError, parse};
