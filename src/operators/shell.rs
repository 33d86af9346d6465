//! `shell`: runs a command with `sh -c` (or a script file) in its own process group.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Completion, OpContext, Result};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellConfig {
    /// The command, run by `sh -c`.
    pub command: String,
}

pub async fn run(_ctx: &OpContext, _config: ShellConfig) -> Result<Completion> {
    Ok(Completion::default())
}
