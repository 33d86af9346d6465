//! `sluice runs`: lists recent runs through the API of a running server.

use std::process::ExitCode;

use super::Settings;
use super::client::{ApiClient, ServerArgs};
use crate::config::Overrides;

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Only runs of this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only runs in this state (queued, running, success, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn execute(config: Option<&std::path::Path>, args: RunsArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config, Overrides::default())?;
    let client = ApiClient::new(&args.server, &settings.config)?;
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(workflow) = &args.workflow {
        query.push(format!("workflow={workflow}"));
    }
    if let Some(state) = &args.state {
        query.push(format!("state={state}"));
    }
    let page = client
        .get(&format!("/api/v1/runs?{}", query.join("&")))
        .await?;
    if args.json {
        println!("{page}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<20}  {:<9}  {:<9}  {:<25}",
        "RUN", "WORKFLOW", "STATE", "TRIGGER", "LOGICAL DATE"
    );
    for run in page["runs"].as_array().into_iter().flatten() {
        let field = |name: &str| run[name].as_str().unwrap_or("").to_owned();
        println!(
            "{:<36}  {:<20}  {:<9}  {:<9}  {:<25}",
            field("run_id"),
            field("workflow"),
            field("state"),
            field("trigger"),
            field("logical_date")
        );
    }
    Ok(ExitCode::SUCCESS)
}
