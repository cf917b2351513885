//! `batch`: submit every spec of a JSON-lines file, with a journal so a re-run after a crash
//! or Ctrl-C skips what was already done, and derived idempotency keys so a submission the
//! journal missed is reconciled through the ledger instead of sent twice.

use super::Outcome;
use super::args::WaitTuning;
use super::commands::{submit_spec, wait_for, watch_options};
use crate::error::{Error, Result, exit};
use crate::model::JobSpec;
use crate::output::{BatchRow, Printer, Report, error_json};
use crate::session::Session;
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Parses the batch file; any malformed line fails the whole batch before anything is sent.
/// Orchestration fields (`after`, `retries`) need `--wait`: without it nothing would wait for a
/// prerequisite or resubmit a failed job, so such a file is refused rather than half-run.
pub fn parse(text: &str) -> Result<Vec<(usize, JobSpec)>> {
    let lines = crate::pipeline::parse(text)?;
    let orchestrated: Vec<String> = lines
        .iter()
        .filter(|l| l.orchestrated())
        .map(|l| l.line.to_string())
        .collect();
    if !orchestrated.is_empty() {
        return Err(Error::usage(format!(
            "line {}: `after` and `retries` need `batch --wait` (jobctl runs the pipeline while it waits); `--dry-run` shows the order",
            orchestrated.join(", ")
        )));
    }
    Ok(lines.into_iter().map(|l| (l.line, l.spec)).collect())
}

fn read_journal(path: &Path) -> BTreeMap<usize, BatchRow> {
    let mut done = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return done;
    };
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            let outcome = v["outcome"].as_str().unwrap_or_default();
            let (Some(n), Some(r)) = (v["line"].as_u64(), v["ref"].as_str()) else {
                continue;
            };
            if outcome != "failed" {
                done.insert(
                    n as usize,
                    BatchRow {
                        line: n as usize,
                        key: v["key"].as_str().map(String::from),
                        reference: Some(r.to_string()),
                        outcome: "skipped".into(),
                        error: None,
                    },
                );
            }
        }
    }
    done
}

fn append_journal(path: Option<&Path>, row: &BatchRow) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("journal {}", path.display()), e))?;
    let line = serde_json::to_string(row).map_err(|e| Error::io("journal", e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(format!("journal {}", path.display()), e))?;
    // The journal is what a re-run trusts: make each line durable before moving on.
    f.sync_data()
        .map_err(|e| Error::io(format!("journal {}", path.display()), e))
}

/// Runs `batch`.
pub async fn run(
    file: &Path,
    concurrency: usize,
    journal: Option<PathBuf>,
    wait: bool,
    timeout: Option<&str>,
    s: &Session,
    p: &Printer,
) -> Result<Outcome> {
    let stdin = file == Path::new("-");
    let text = if stdin {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::usage(format!("cannot read stdin: {e}")))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?
    };
    let specs = parse(&text)?;
    let journal = journal.or_else(|| {
        (!stdin).then(|| {
            let mut j = file.as_os_str().to_owned();
            j.push(".journal");
            PathBuf::from(j)
        })
    });
    let done = journal.as_deref().map(read_journal).unwrap_or_default();

    // Resolve every profile and validate every spec before sending anything.
    let mut work = Vec::new();
    for (n, spec) in &specs {
        let profile = spec
            .profile
            .clone()
            .or_else(|| spec.backend.clone())
            .unwrap_or_else(|| s.selected.clone());
        let bound = s
            .bound(&profile)
            .map_err(|e| Error::usage(format!("line {n}: {}", e.message)))?;
        bound
            .backend
            .validate(spec)
            .map_err(|e| Error::usage(format!("line {n}: {}", e.message)))?;
        work.push((*n, spec.clone(), bound));
    }

    let mut rows: Vec<BatchRow> = Vec::new();
    let mut pending = Vec::new();
    for (n, spec, bound) in work {
        if let Some(row) = done.get(&n) {
            p.batch_line(row);
            rows.push(row.clone());
        } else {
            pending.push((n, spec, bound));
        }
    }
    let mut stream =
        futures::stream::iter(pending.into_iter().map(|(n, spec, bound)| async move {
            let result = submit_spec(&bound, &spec, s).await;
            (n, spec, result)
        }))
        .buffer_unordered(concurrency.max(1));
    let mut code = exit::SUCCESS;
    while let Some((n, spec, result)) = stream.next().await {
        let row = match result {
            Ok((job, existing)) => BatchRow {
                line: n,
                key: spec.key.clone(),
                reference: Some(job.reference.clone()),
                outcome: if existing { "reconciled" } else { "submitted" }.into(),
                error: None,
            },
            Err(e) => {
                code = code.max(e.exit_code());
                BatchRow {
                    line: n,
                    key: spec.key.clone(),
                    reference: None,
                    outcome: "failed".into(),
                    error: Some(error_json(&e)["error"].clone()),
                }
            }
        };
        append_journal(journal.as_deref(), &row)?;
        p.batch_line(&row);
        rows.push(row);
    }
    rows.sort_by_key(|r| r.line);
    if !wait {
        return Ok(Outcome {
            report: Report::Batch(rows),
            code,
        });
    }
    let mut targets = Vec::new();
    for r in &rows {
        if let Some(reference) = &r.reference {
            targets.push(s.resolve(reference)?);
        }
    }
    let tuning = WaitTuning {
        timeout: timeout.map(String::from),
        interval: None,
        max_interval: "30s".into(),
        unreachable_timeout: "5m".into(),
    };
    let interval = s
        .selected_bound()
        .map(|b| b.profile.poll_interval)
        .unwrap_or_default();
    let opts = watch_options(
        &tuning,
        interval.max(std::time::Duration::from_millis(200)),
        false,
        p,
    )?;
    let mut out = wait_for(&targets, &opts, s, p).await;
    out.code = if code != exit::SUCCESS && out.code == exit::SUCCESS {
        code
    } else {
        out.code
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_named_and_keys_are_derived() {
        let e = parse("{\"command\":[\"true\"]}\n\n# note\n{oops}\n").unwrap_err();
        assert!(e.message.starts_with("line 4:"), "{e}");
        let specs =
            parse("{\"command\":[\"true\"]}\n{\"key\":\"mine\",\"command\":[\"true\"]}\n").unwrap();
        assert_eq!(specs.len(), 2);
        assert!(specs[0].1.key.as_deref().unwrap().starts_with("batch-1-"));
        assert_eq!(specs[1].1.key.as_deref(), Some("mine"));
        // The same line gives the same key on a re-run.
        assert_eq!(
            parse("{\"command\":[\"true\"]}").unwrap()[0].1.key,
            specs[0].1.key
        );
    }
}
