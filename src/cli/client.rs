//! A small client of the JSON API, for the commands that talk to a running `sluice serve`
//! (`trigger`, `runs`, `backfill`).

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL [default: http://<bind from sluice.toml, or 127.0.0.1:8080>]
    #[arg(long, env = "SLUICE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// A bearer token the server accepts (the first of `SLUICE_API_TOKEN` by default).
    #[arg(
        long,
        env = "SLUICE_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(args: &ServerArgs, config: &crate::config::Config) -> anyhow::Result<Self> {
        let base = match &args.server {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", config.bind),
        };
        // `SLUICE_API_TOKEN` may list several tokens; any one of them authenticates.
        let token = args
            .token
            .as_deref()
            .and_then(|t| t.split(',').map(str::trim).find(|t| !t.is_empty()))
            .map(str::to_owned)
            .or_else(|| config.api_tokens.first().cloned());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(ApiClient { base, token, http })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the Sluice server at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(ApiError::from_answer(status, &body, self.token.is_some()).into())
    }
}

/// An answer of the server that is not a success. Kept typed so that the exit code can tell
/// refused input (exit 2) from everything else.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: reqwest::StatusCode,
    message: String,
}

impl ApiError {
    fn from_answer(status: reqwest::StatusCode, body: &Value, sent_token: bool) -> ApiError {
        let said = body["error"].as_str().unwrap_or("no details");
        let message = if status == reqwest::StatusCode::UNAUTHORIZED {
            // The server's own message is written for API clients (it names the HTTP header);
            // here the reader needs the flag or the variable.
            if sent_token {
                format!(
                    "the server did not accept the API token from `--token` or \
                     SLUICE_API_TOKEN ({said})"
                )
            } else {
                "the server needs an API token: pass `--token TOKEN` or set SLUICE_API_TOKEN \
                 to one of the tokens the server was started with (a server started without \
                 any token accepts no changes)"
                    .to_owned()
            }
        } else {
            let details: Vec<String> = body["details"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            // Refused input is said in the server's words, which are also the web UI's; the
            // HTTP status only helps when the server itself is the problem.
            let said = if ApiError::refuses_input(status) {
                said.to_owned()
            } else {
                format!("the server answered {status}: {said}")
            };
            if details.is_empty() {
                said
            } else {
                format!("{said}\n  {}", details.join("\n  "))
            }
        };
        ApiError { status, message }
    }

    /// Whether the server refused what was asked for — an unknown workflow or run, params
    /// that do not fit — rather than who asked or its own state.
    pub fn is_invalid_input(&self) -> bool {
        ApiError::refuses_input(self.status)
    }

    fn refuses_input(status: reqwest::StatusCode) -> bool {
        matches!(
            status,
            reqwest::StatusCode::BAD_REQUEST
                | reqwest::StatusCode::NOT_FOUND
                | reqwest::StatusCode::UNPROCESSABLE_ENTITY
        )
    }
}

/// Parses `-p KEY=VALUE` items by the types in a workflow's params schema (as the API
/// returns it): strings as they are, everything else as JSON.
pub fn params_from_cli(
    schema: &Value,
    raw: &[String],
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut params = serde_json::Map::new();
    for item in raw {
        let (key, value) = crate::params::split_cli_pair(item).map_err(anyhow::Error::msg)?;
        let kind = schema["properties"][&key]["type"]
            .as_str()
            .unwrap_or("string");
        let value = if kind == "string" {
            Value::String(value)
        } else {
            serde_json::from_str(&value).unwrap_or(Value::String(value))
        };
        params.insert(key, value);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cli_params_follow_the_schema_types() {
        let schema = json!({"properties": {
            "n": {"type": "integer"}, "name": {"type": "string"}, "on": {"type": "boolean"}
        }});
        let raw = ["n=3".to_owned(), "name=42".to_owned(), "on=true".to_owned()];
        let params = params_from_cli(&schema, &raw).unwrap();
        assert_eq!(
            Value::Object(params),
            json!({"n": 3, "name": "42", "on": true})
        );
        assert!(params_from_cli(&schema, &["novalue".to_owned()]).is_err());
    }
}
