//! Drift benchmark: reference and current CSV files of 1,000,000 rows × 20 numeric columns
//! (generated once, seeded), read and checked by sluice-drift, then by Evidently's
//! `DataDriftPreset` on the same files in the same run.
//!
//! `cargo run --release -p sluice-drift --example bench -- [--rows N] [--columns N]
//! [--dir DIR] [--repeat N] [--python PATH]`; the Python (with Evidently) defaults to
//! `SLUICE_TEST_DRIFT_PYTHON`, and Evidently is skipped when there is none.

use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sluice_drift::read::read_csv;
use sluice_drift::rng::SeededRng;
use sluice_drift::{DriftConfig, Table, detect_drift};

struct Options {
    rows: usize,
    columns: usize,
    dir: PathBuf,
    repeat: usize,
    python: Option<PathBuf>,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        rows: 1_000_000,
        columns: 20,
        dir: std::env::temp_dir().join("sluice-drift-bench"),
        repeat: 3,
        python: std::env::var_os("SLUICE_TEST_DRIFT_PYTHON").map(PathBuf::from),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rows" => options.rows = value.parse()?,
            "--columns" => options.columns = value.parse()?,
            "--dir" => options.dir = PathBuf::from(value),
            "--repeat" => options.repeat = value.parse::<usize>()?.max(1),
            "--python" => options.python = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(options)
}

/// Writes a CSV of `rows` × `columns` numbers with six decimals; column c of the current data
/// is shifted by c/100 standard deviations, so some columns drift and some do not.
fn generate(
    path: &Path,
    rows: usize,
    columns: usize,
    seed: u64,
    shifted: bool,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let header: Vec<String> = (0..columns).map(|c| format!("f{c}")).collect();
    writeln!(out, "{}", header.join(","))?;
    let mut rng = SeededRng::new(seed);
    let mut line = String::with_capacity(columns * 12);
    for _ in 0..rows {
        line.clear();
        for c in 0..columns {
            if c > 0 {
                line.push(',');
            }
            let shift = if shifted { c as f64 / 100.0 } else { 0.0 };
            let value = 10.0 + 3.0 * (rng.normal() + shift);
            line.push_str(&format!("{value:.6}"));
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

fn read_both(reference: &Path, current: &Path) -> Result<(Table, Table), Box<dyn Error>> {
    let read = |path: &Path, name: &str| -> Result<Table, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        read_csv(std::io::BufReader::new(file), name).map_err(|e| e.to_string())
    };
    let (reference, current) = std::thread::scope(|scope| {
        let reference = scope.spawn(|| read(reference, "reference"));
        let current = read(current, "current");
        (reference.join(), current)
    });
    let reference = reference.map_err(|_| "the reading thread panicked")??;
    Ok((reference, current?))
}

/// CPU seconds this process has used (user + system, all threads), from /proc/self/stat;
/// on a shared machine this shows the work done, which wall time under load hides.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // The kernel reports in USER_HZ, 100 on Linux.
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = options()?;
    std::fs::create_dir_all(&options.dir)?;
    let stem = format!("{}x{}", options.rows, options.columns);
    let reference_path = options.dir.join(format!("reference_{stem}.csv"));
    let current_path = options.dir.join(format!("current_{stem}.csv"));
    if !reference_path.exists() || !current_path.exists() {
        eprintln!("Generating {} …", options.dir.display());
        generate(&reference_path, options.rows, options.columns, 1, false)?;
        generate(&current_path, options.rows, options.columns, 2, true)?;
    }

    let mut read_seconds = Vec::new();
    let mut check_seconds = Vec::new();
    let mut read_cpu = Vec::new();
    let mut check_cpu = Vec::new();
    let mut verdict = None;
    for _ in 0..options.repeat {
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let (reference, current) = read_both(&reference_path, &current_path)?;
        let read = started.elapsed().as_secs_f64();
        read_cpu.push(cpu_seconds() - cpu);
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let result = detect_drift(&reference, &current, &DriftConfig::default())?;
        let check = started.elapsed().as_secs_f64();
        check_cpu.push(cpu_seconds() - cpu);
        read_seconds.push(read);
        check_seconds.push(check);
        verdict = Some(result);
    }
    let verdict = verdict.ok_or("no repetition ran")?;
    let (read, check) = (median(read_seconds), median(check_seconds));
    let (read_cpu, check_cpu) = (median(read_cpu), median(check_cpu));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sluice-drift: {} rows x {} columns, read {read:.3} s, check {check:.3} s, total {:.3} s \
         (median of {}); CPU time read {read_cpu:.2} s, check {check_cpu:.2} s; methods {:?}; \
         drifted {}/{} (share {:.2}); load average {}",
        options.rows,
        options.columns,
        read + check,
        options.repeat,
        verdict
            .columns
            .iter()
            .map(|c| c.method.name())
            .collect::<std::collections::BTreeSet<_>>(),
        verdict.drifted_columns.len(),
        verdict.columns.len(),
        verdict.drift_share,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let Some(python) = options.python else {
        println!("Evidently: skipped (no --python and no SLUICE_TEST_DRIFT_PYTHON)");
        return Ok(());
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench_evidently.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&reference_path)
        .arg(&current_path)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "Evidently's run failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let number = |key: &str| report[key].as_f64().ok_or(format!("no {key} in {report}"));
    let (evidently_read, evidently_check) = (number("read_seconds")?, number("report_seconds")?);
    let (evidently_read_cpu, evidently_check_cpu) =
        (number("read_cpu_seconds")?, number("report_cpu_seconds")?);
    println!(
        "Evidently: read {evidently_read:.3} s, report {evidently_check:.3} s, total {:.3} s; \
         CPU time read {evidently_read_cpu:.2} s, report {evidently_check_cpu:.2} s; \
         drifted {}/{} (share {:.2})",
        evidently_read + evidently_check,
        number("drifted")?,
        verdict.columns.len(),
        number("share")?
    );
    println!(
        "ratio (Evidently / sluice-drift): check {:.1}x, total {:.1}x; in CPU time check {:.1}x, \
         total {:.1}x",
        evidently_check / check,
        (evidently_read + evidently_check) / (read + check),
        evidently_check_cpu / check_cpu,
        (evidently_read_cpu + evidently_check_cpu) / (read_cpu + check_cpu)
    );
    Ok(())
}
