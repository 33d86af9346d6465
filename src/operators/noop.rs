//! `noop`: does nothing and succeeds. For joins, placeholders and benchmarks.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Completion, OpContext, Result};

/// `noop` takes no settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopConfig {}

pub async fn run(_ctx: &OpContext, _config: NoopConfig) -> Result<Completion> {
    Ok(Completion::default())
}
