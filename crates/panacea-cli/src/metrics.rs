//! `panacea metrics FILE`: every Pareto-front metric of a user's own points (a JSON array of
//! arrays, or CSV), in either sense. Parsing and computing live in `panacea-eval`; this file only
//! reads the files and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use panacea_eval::{all_metrics, parse_points, RefPoint, Sense};

/// Flags of `panacea metrics`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Points file: a JSON array of arrays of numbers, or CSV (one point per line, optional
    /// header).
    file: PathBuf,
    /// Whether larger (`max`, Panacea's rewards) or smaller (`min`) values are better.
    #[arg(long, default_value = "max")]
    sense: Sense,
    /// Hypervolume reference point: `auto` (the nadir pushed out by 5 % of the range, method.md
    /// §8.2) or comma-separated values in the same sense, e.g. `--ref=-1,-1`.
    #[arg(long = "ref", default_value = "auto", allow_hyphen_values = true)]
    reference: RefPoint,
    /// Optional reference set (same formats) for IGD, IGD+, GD, Δ₁ and ε.
    #[arg(long)]
    reference_set: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Accept a reference point that no point strictly dominates (HV 0, with a warning) instead
    /// of failing.
    #[arg(long)]
    allow_empty: bool,
}

fn read_points(path: &Path, dim: Option<usize>) -> anyhow::Result<Vec<Vec<f64>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_points(&text, &path.display().to_string(), dim)?)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dim = match &args.reference {
        RefPoint::Explicit(r) => Some(r.len()),
        RefPoint::Auto => None,
    };
    let points = read_points(&args.file, dim)?;
    let reference_set = match &args.reference_set {
        Some(p) => Some(read_points(p, Some(points[0].len()))?),
        None => None,
    };
    let m = all_metrics(
        &points,
        args.sense,
        &args.reference,
        reference_set.as_deref(),
        args.allow_empty,
    )
    .with_context(|| format!("computing metrics of {}", args.file.display()))?;
    for w in &m.warnings {
        eprintln!("warning: {}: {w}", args.file.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{}", m.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(file: PathBuf, reference: &str, allow_empty: bool) -> Args {
        Args {
            file,
            sense: Sense::Max,
            reference: reference.parse().unwrap(),
            reference_set: None,
            json: true,
            allow_empty,
        }
    }

    #[test]
    fn an_empty_hypervolume_fails_unless_allow_empty() {
        let dir = std::env::temp_dir().join(format!("panacea-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("points.csv");
        std::fs::write(&file, "0,4\n2,2\n4,0\n").unwrap();
        // (5, 5) is better than every maximised point: nothing dominates it.
        let err = run(args(file.clone(), "5,5", false)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("points.csv")
                && msg.contains("--allow-empty")
                && msg.contains("[5.0, 5.0]"),
            "{msg}"
        );
        assert!(run(args(file.clone(), "5,5", true)).is_ok());
        assert!(run(args(file, "-1,-1", false)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
