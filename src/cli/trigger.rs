//! `sluice trigger WORKFLOW`: starts a run through the API of a running server, and with
//! `--wait` follows it to its end.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::Settings;
use super::client::{ApiClient, ServerArgs, params_from_cli};
use crate::config::Overrides;

#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// The workflow to run.
    pub workflow: String,
    /// A run parameter (repeatable).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Wait for the run to end; exit 0 if it succeeded, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
}

pub async fn execute(
    config: Option<&std::path::Path>,
    args: TriggerArgs,
) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config, Overrides::default())?;
    let client = ApiClient::new(&args.server, &settings.config)?;
    let workflow = client
        .get(&format!("/api/v1/workflows/{}", args.workflow))
        .await?;
    let params = params_from_cli(&workflow["params_schema"], &args.params)?;
    let created = client
        .post(
            &format!("/api/v1/workflows/{}/runs", args.workflow),
            &json!({ "params": params }),
        )
        .await?;
    let run_id = created["run_id"].as_str().unwrap_or_default().to_owned();
    println!("{run_id}");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut last_state = String::new();
    loop {
        let run = client.get(&format!("/api/v1/runs/{run_id}")).await?;
        let state = run["state"].as_str().unwrap_or("unknown").to_owned();
        if state != last_state {
            eprintln!("Run {run_id} is {state}.");
            last_state = state.clone();
        }
        match state.as_str() {
            "success" => return Ok(ExitCode::SUCCESS),
            "failed" | "cancelled" => {
                if let Some(error) = run["error"].as_str() {
                    eprintln!("{error}");
                }
                return Ok(ExitCode::FAILURE);
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
