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
    let header = ["RUN", "WORKFLOW", "STATE", "TRIGGER", "LOGICAL DATE (UTC)"];
    let rows: Vec<[String; 5]> = page["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|run| {
            let field = |name: &str| run[name].as_str().unwrap_or("").to_owned();
            [
                field("run_id"),
                field("workflow"),
                field("state"),
                field("trigger"),
                readable_time(&field("logical_date")),
            ]
        })
        .collect();
    print!("{}", table(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

/// An RFC 3339 time from the API as people read it: UTC to the second.
fn readable_time(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text).map_or_else(
        |_| text.to_owned(),
        |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

/// Left-aligned columns as wide as their widest cell, two spaces apart.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_a_table_of_aligned_columns() {
        let rows = [
            ["0193a".to_owned(), "hello".to_owned(), "success".to_owned()],
            [
                "0193b".to_owned(),
                "a_long_name".to_owned(),
                "failed".to_owned(),
            ],
        ];
        assert_eq!(
            table(&["RUN", "WORKFLOW", "STATE"], &rows),
            "RUN    WORKFLOW     STATE\n\
             0193a  hello        success\n\
             0193b  a_long_name  failed\n"
        );
        assert_eq!(
            readable_time("2026-12-06T10:27:03.123456789+00:00"),
            "2026-12-06 10:27:03"
        );
        assert_eq!(readable_time("not a time"), "not a time");
    }
}
