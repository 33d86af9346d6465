//! `sluice backfill WORKFLOW --from DATE --to DATE`: creates the scheduled runs of a date
//! range through the API of a running server (they start as `max_active_runs` allows), or
//! cancels a backfill with `--cancel ID`.

use std::process::ExitCode;

use chrono::NaiveDate;
use serde_json::json;

use super::Settings;
use super::client::{ApiClient, ServerArgs, params_from_cli};
use crate::config::Overrides;

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The workflow to backfill.
    #[arg(required_unless_present = "cancel")]
    pub workflow: Option<String>,
    /// The first logical date (YYYY-MM-DD, in the workflow's time zone).
    #[arg(long, required_unless_present = "cancel")]
    pub from: Option<NaiveDate>,
    /// The last logical date, included.
    #[arg(long, required_unless_present = "cancel")]
    pub to: Option<NaiveDate>,
    /// A run parameter for every run (repeatable).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Cancel the runs of this backfill that have not ended.
    #[arg(long, value_name = "BACKFILL_ID", conflicts_with_all = ["workflow", "from", "to"])]
    pub cancel: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn execute(
    config: Option<&std::path::Path>,
    args: BackfillArgs,
) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config, Overrides::default())?;
    let client = ApiClient::new(&args.server, &settings.config)?;
    if let Some(id) = &args.cancel {
        let cancelled = client
            .post(&format!("/api/v1/backfills/{id}/cancel"), &json!({}))
            .await?;
        let count = cancelled["cancelled"].as_array().map_or(0, Vec::len);
        println!("Cancelled {count} runs of backfill {id}.");
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(workflow), Some(from), Some(to)) = (&args.workflow, args.from, args.to) else {
        anyhow::bail!("give WORKFLOW, --from and --to, or --cancel BACKFILL_ID");
    };
    let detail = client.get(&format!("/api/v1/workflows/{workflow}")).await?;
    let params = match params_from_cli(&detail["params_schema"], &args.params) {
        Ok(params) => params,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let created = client
        .post(
            &format!("/api/v1/workflows/{workflow}/backfill"),
            &json!({ "from": from, "to": to, "params": params }),
        )
        .await?;
    let runs = created["run_ids"].as_array().map_or(0, Vec::len);
    println!(
        "Backfill {} created {runs} runs of {workflow}.",
        created["backfill_id"].as_str().unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
