//! `sluice trigger WORKFLOW`: starts a run through the API of a running server, and with
//! `--wait` follows it to its end.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::client::{ApiClient, ServerArgs, params_from_cli};
use super::{EXIT_USAGE, Settings};
use crate::config::Overrides;
use crate::lifecycle::RunState;

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
    let params = match params_from_cli(&workflow["params_schema"], &args.params) {
        Ok(params) => params,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
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
    let mut last_state = None;
    loop {
        let run = client.get(&format!("/api/v1/runs/{run_id}")).await?;
        let state: RunState = run["state"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|_| {
                anyhow::anyhow!(
                    "the server reported a run state it does not document: {}",
                    run["state"]
                )
            })?;
        if last_state != Some(state) {
            eprintln!("Run {run_id} {}.", super::run_outcome(state));
            last_state = Some(state);
        }
        match state {
            RunState::Success => return Ok(ExitCode::SUCCESS),
            RunState::Failed | RunState::Cancelled => {
                if let Some(error) = run["error"].as_str() {
                    eprintln!("{error}");
                }
                eprintln!(
                    "The tasks' errors and logs are on the run's page in the web UI, and \
                     `sluice logs {run_id}` prints them where the server's database is reachable."
                );
                return Ok(ExitCode::FAILURE);
            }
            // The API has no long poll for a run's end; a quarter second is quick enough for a person.
            RunState::Queued | RunState::Running => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
        }
    }
}
