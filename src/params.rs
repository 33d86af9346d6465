//! Typed run parameters: their declarations in a workflow file and the checking of a run's
//! values against them (defaults, types, enums, bounds).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of a run parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

/// The declaration of one run parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    /// The parameter's type; values are checked against it before a run starts.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The value used when a run does not set the parameter. Without one, it is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The allowed values.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// The smallest allowed value (integer and number parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// The largest allowed value (integer and number parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// What the parameter means; shown in the trigger form and `sluice schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
