//! CI reports of a wait (`--report`): a JUnit XML file, which GitLab, Jenkins and GitHub test
//! reporters read, and a GitHub Actions step summary with `::error::` annotations.
//!
//! Every awaited job is one test case: succeeded jobs pass, failed ones are failures carrying
//! their reason and last output lines, canceled and blocked ones are skipped, and jobs that had
//! not ended when the wait stopped (timeout, Ctrl-C) are errors.

use crate::error::{Error, Result};
use crate::model::{Job, JobState, LogsRequest};
use crate::session::Session;
use chrono::{DateTime, Utc};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// How many of a failed job's last output lines a report carries.
pub const OUTPUT_LINES: usize = 30;

/// One `--report` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// `junit=PATH`: a JUnit XML file.
    Junit(PathBuf),
    /// `github`: `$GITHUB_STEP_SUMMARY` table and `::error::` annotations.
    Github,
}

impl FromStr for ReportTarget {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once('=') {
            Some(("junit", path)) if !path.trim().is_empty() => {
                Ok(ReportTarget::Junit(PathBuf::from(path)))
            }
            None if s == "github" => Ok(ReportTarget::Github),
            _ => Err(format!(
                "'{s}' is not a report: write junit=PATH (a JUnit XML file) or github (a GitHub Actions step summary)"
            )),
        }
    }
}

/// How a test case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The job succeeded.
    Passed,
    /// The job failed: why, and its last output lines where the backend has logs.
    Failed {
        /// The reason (platform reason, exit code).
        message: String,
        /// Last output lines.
        output: Vec<String>,
    },
    /// Canceled, or never submitted because a prerequisite did not succeed.
    Skipped {
        /// Why.
        message: String,
    },
    /// The wait ended before the job did, or the job could not be submitted.
    Error {
        /// Why.
        message: String,
    },
}

/// One job as a test case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The job's name, else its key, else its reference.
    pub name: String,
    /// The profile (JUnit's class name, so reporters group by platform).
    pub classname: String,
    /// `PROFILE:ID`, when there is a job.
    pub reference: Option<String>,
    /// State shown in the summary (`succeeded`, `blocked`…).
    pub state: String,
    /// Attempts made (1 unless retried).
    pub attempts: u32,
    /// Run duration.
    pub time: Duration,
    /// How it ended.
    pub verdict: Verdict,
}

/// Run duration of a job: start (or creation) to end (or now, while still running).
pub fn run_duration(job: &Job, now: DateTime<Utc>) -> Duration {
    let Some(from) = job.started_at.or(job.created_at) else {
        return Duration::ZERO;
    };
    let to = job.ended_at.unwrap_or(now);
    (to - from).to_std().unwrap_or_default()
}

impl Case {
    /// The case of a job as last observed; `name` overrides the job's own name (a batch key).
    pub fn from_job(job: &Job, name: Option<&str>, now: DateTime<Utc>) -> Self {
        let verdict = match job.state {
            JobState::Succeeded => Verdict::Passed,
            JobState::Failed => Verdict::Failed {
                message: failure_message(job),
                output: Vec::new(),
            },
            JobState::Canceled => Verdict::Skipped {
                message: job
                    .reason
                    .clone()
                    .map_or_else(|| "canceled".to_string(), |r| format!("canceled: {r}")),
            },
            other => Verdict::Error {
                message: format!("the wait ended while the job was still {other}"),
            },
        };
        Case {
            name: job
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .or_else(|| name.map(String::from))
                .unwrap_or_else(|| job.reference.clone()),
            classname: job.profile.clone(),
            reference: Some(job.reference.clone()),
            state: job.state.to_string(),
            attempts: 1,
            time: run_duration(job, now),
            verdict,
        }
    }
}

fn failure_message(job: &Job) -> String {
    let mut parts = vec![format!("{} failed", job.reference)];
    if let Some(native) = job
        .native_state
        .as_deref()
        .filter(|n| !n.eq_ignore_ascii_case(job.state.as_str()))
    {
        parts.push(format!("({native})"));
    }
    if let Some(code) = job.exit_code {
        parts.push(format!("with exit code {code}"));
    }
    let mut m = parts.join(" ");
    if let Some(r) = job.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        m.push_str(": ");
        m.push_str(r);
    }
    m
}

/// Characters XML 1.0 cannot hold (terminal escapes in job output, for one) are dropped, so a
/// job's output can never make the report unreadable.
fn xml_safe(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || ('\u{20}'..='\u{D7FF}').contains(&c)
                || ('\u{E000}'..='\u{FFFD}').contains(&c)
                || c >= '\u{10000}'
        })
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.trim().is_empty() && !h.chars().any(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_string())
}

/// The JUnit XML document: `<testsuites>` holding one `<testsuite name=suite>` with one
/// `<testcase>` per job, in the widely accepted Ant/Jenkins layout.
pub fn junit_xml(suite: &str, cases: &[Case], started: DateTime<Utc>) -> Result<String> {
    let xml_err = |e: std::io::Error| Error::io("writing the JUnit report", e);
    let count = |f: fn(&Verdict) -> bool| cases.iter().filter(|c| f(&c.verdict)).count();
    let failures = count(|v| matches!(v, Verdict::Failed { .. })).to_string();
    let errors = count(|v| matches!(v, Verdict::Error { .. })).to_string();
    let skipped = count(|v| matches!(v, Verdict::Skipped { .. })).to_string();
    let tests = cases.len().to_string();
    let total = secs(cases.iter().map(|c| c.time).sum());
    // The schema's timestamp has no zone; it is UTC, like every time jobctl prints.
    let timestamp = started.format("%Y-%m-%dT%H:%M:%S").to_string();
    let host = hostname();
    let suite = xml_safe(suite);

    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(xml_err)?;
    // The strict (Ant/Jenkins) schema allows no attributes on <testsuites>; the counts are on
    // the suite, where every reporter reads them.
    w.create_element("testsuites")
        .write_inner_content(|w| {
            w.create_element("testsuite")
                .with_attributes([
                    ("name", suite.as_str()),
                    ("package", suite.as_str()),
                    ("id", "0"),
                    ("timestamp", timestamp.as_str()),
                    ("hostname", host.as_str()),
                    ("tests", tests.as_str()),
                    ("failures", failures.as_str()),
                    ("errors", errors.as_str()),
                    ("skipped", skipped.as_str()),
                    ("time", total.as_str()),
                ])
                .write_inner_content(|w| {
                    w.create_element("properties").write_empty()?;
                    for c in cases {
                        write_case(w, c)?;
                    }
                    w.create_element("system-out").write_empty()?;
                    w.create_element("system-err").write_empty()?;
                    Ok(())
                })?;
            Ok(())
        })
        .map_err(xml_err)?;
    let mut bytes = w.into_inner();
    bytes.push(b'\n');
    String::from_utf8(bytes).map_err(|e| Error::io("writing the JUnit report", e))
}

fn write_case(w: &mut Writer<Vec<u8>>, c: &Case) -> std::io::Result<()> {
    let name = xml_safe(&c.name);
    let class = xml_safe(if c.classname.is_empty() {
        "jobctl"
    } else {
        &c.classname
    });
    let time = secs(c.time);
    let el = w.create_element("testcase").with_attributes([
        ("name", name.as_str()),
        ("classname", class.as_str()),
        ("time", time.as_str()),
    ]);
    match &c.verdict {
        Verdict::Passed => {
            el.write_empty()?;
        }
        Verdict::Failed { message, output } => {
            let message = xml_safe(message);
            let mut body = message.clone();
            if c.attempts > 1 {
                body.push_str(&format!(" (after {} attempts)", c.attempts));
            }
            if !output.is_empty() {
                body.push_str(&format!("\n\nlast {} output lines:\n", output.len()));
                body.push_str(&xml_safe(&output.join("\n")));
            }
            el.write_inner_content(|w| {
                w.create_element("failure")
                    .with_attributes([("message", message.as_str()), ("type", "JobFailed")])
                    .write_text_content(BytesText::new(&body))?;
                Ok(())
            })?;
        }
        Verdict::Skipped { message } => {
            let message = xml_safe(message);
            el.write_inner_content(|w| {
                w.create_element("skipped")
                    .with_attribute(("message", message.as_str()))
                    .write_empty()?;
                Ok(())
            })?;
        }
        Verdict::Error { message } => {
            let message = xml_safe(message);
            el.write_inner_content(|w| {
                w.create_element("error")
                    .with_attributes([("message", message.as_str()), ("type", "JobNotFinished")])
                    .write_text_content(BytesText::new(&message))?;
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// A Markdown table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// The GitHub step summary: a heading, a count line and one table row per job.
pub fn github_summary(title: &str, cases: &[Case]) -> String {
    let mut out = format!("### {}\n\n", cell(title));
    let count = |f: fn(&Verdict) -> bool| cases.iter().filter(|c| f(&c.verdict)).count();
    out.push_str(&format!(
        "{} jobs: {} succeeded, {} failed, {} skipped, {} unfinished\n\n",
        cases.len(),
        count(|v| matches!(v, Verdict::Passed)),
        count(|v| matches!(v, Verdict::Failed { .. })),
        count(|v| matches!(v, Verdict::Skipped { .. })),
        count(|v| matches!(v, Verdict::Error { .. })),
    ));
    out.push_str("| | Job | Reference | Profile | State | Attempts | Duration | Details |\n");
    out.push_str("|---|---|---|---|---|---:|---:|---|\n");
    for c in cases {
        let (mark, details) = match &c.verdict {
            Verdict::Passed => ("✅", String::new()),
            Verdict::Failed { message, .. } => ("❌", message.clone()),
            Verdict::Skipped { message } => ("⏭️", message.clone()),
            Verdict::Error { message } => ("⚠️", message.clone()),
        };
        out.push_str(&format!(
            "| {mark} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&c.name),
            c.reference
                .as_deref()
                .map(|r| format!("`{}`", cell(r)))
                .unwrap_or_default(),
            cell(&c.classname),
            cell(&c.state),
            c.attempts,
            humantime::format_duration(Duration::from_secs(c.time.as_secs())),
            cell(&details),
        ));
    }
    out.push('\n');
    out
}

/// Escapes a workflow command's message (GitHub's own rules: `%`, CR, LF).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value (also `:` and `,`).
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `::error title=…::message` lines for failed jobs (and jobs that could not be submitted).
pub fn github_annotations(cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|c| match &c.verdict {
            Verdict::Failed { message, .. } => Some((c, message)),
            Verdict::Error { message } if c.reference.is_none() => Some((c, message)),
            _ => None,
        })
        .map(|(c, message)| {
            format!(
                "::error title={}::{}",
                escape_property(&format!("jobctl: {} failed", c.name)),
                escape_data(message)
            )
        })
        .collect()
}

/// The last `n` lines of a job's output (and error stream, where separate), for a failure's
/// report. Best effort: a backend without logs, or one that does not answer within a few
/// seconds, gives no lines rather than delaying or failing the report.
pub async fn last_output(session: &Session, job: &Job, n: usize) -> Vec<String> {
    let Ok(bound) = session.bound(&job.profile) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for stderr in [false, true] {
        let mut buf: Vec<u8> = Vec::new();
        let read = bound.backend.logs(
            &job.id,
            LogsRequest {
                follow: false,
                stderr,
                // Plain text: a report is read in a CI page, not a terminal.
                ndjson: false,
                color: false,
            },
            &mut buf,
        );
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(10), read).await,
            Ok(Ok(()))
        );
        if !ok {
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(n)..];
        if stderr && !tail.is_empty() {
            lines.push("--- stderr ---".to_string());
        }
        lines.extend(tail.iter().map(|l| l.to_string()));
    }
    lines
}

/// Fills the output lines of failed cases whose jobs are known.
pub async fn add_output(session: &Session, cases: &mut [Case], jobs: &[Job]) {
    for c in cases.iter_mut() {
        let Verdict::Failed { output, .. } = &mut c.verdict else {
            continue;
        };
        if let Some(job) = jobs
            .iter()
            .find(|j| Some(&j.reference) == c.reference.as_ref())
        {
            *output = last_output(session, job, OUTPUT_LINES).await;
        }
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("report {}", path.display()), e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::io(format!("report {}", path.display()), e))
}

/// Writes every requested report. Annotations go to `annotations` (stdout in table mode,
/// stderr otherwise, so a JSON stdout stays one JSON value; GitHub reads both). Every target is
/// attempted; the first failure is returned.
pub fn write_reports(
    targets: &[ReportTarget],
    title: &str,
    cases: &[Case],
    started: DateTime<Utc>,
    annotations: &mut dyn Write,
    summary_path: Option<PathBuf>,
) -> Result<()> {
    let mut first_error = None;
    for t in targets {
        let r = match t {
            ReportTarget::Junit(path) => {
                junit_xml(title, cases, started).and_then(|xml| write_file(path, &xml))
            }
            ReportTarget::Github => {
                for line in github_annotations(cases) {
                    let _ = writeln!(annotations, "{line}");
                }
                match &summary_path {
                    Some(p) => std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .and_then(|mut f| f.write_all(github_summary(title, cases).as_bytes()))
                        .map_err(|e| Error::io(format!("GITHUB_STEP_SUMMARY {}", p.display()), e)),
                    None => {
                        eprintln!(
                            "warning: --report github: GITHUB_STEP_SUMMARY is not set (not running in GitHub Actions?); no summary written"
                        );
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn job(state: JobState) -> Job {
        let mut j = Job::new("17", state, Some("X".into()));
        j.stamp("local", "local");
        j.started_at = Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 0).single();
        j.ended_at = Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 3).single();
        j
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 0).unwrap()
    }

    #[test]
    fn targets_parse_and_bad_ones_are_explained() {
        assert_eq!(
            "junit=out/r.xml".parse::<ReportTarget>(),
            Ok(ReportTarget::Junit("out/r.xml".into()))
        );
        assert_eq!("github".parse::<ReportTarget>(), Ok(ReportTarget::Github));
        for bad in ["junit", "junit=", "xml=a", "gitlab"] {
            let e = bad.parse::<ReportTarget>().unwrap_err();
            assert!(e.contains("junit=PATH"), "{e}");
        }
    }

    #[test]
    fn cases_follow_the_job_state() {
        let mut failed = job(JobState::Failed);
        failed.exit_code = Some(3);
        failed.reason = Some("boom".into());
        let c = Case::from_job(&failed, Some("key-1"), t0());
        assert_eq!(c.name, "key-1");
        assert_eq!(c.classname, "local");
        assert_eq!(c.time, Duration::from_secs(3));
        assert_eq!(
            c.verdict,
            Verdict::Failed {
                message: "local:17 failed (X) with exit code 3: boom".into(),
                output: vec![]
            }
        );
        let mut named = job(JobState::Canceled);
        named.name = Some("nightly".into());
        let c = Case::from_job(&named, Some("key"), t0());
        assert_eq!(c.name, "nightly");
        assert!(matches!(c.verdict, Verdict::Skipped { .. }));
        let mut running = job(JobState::Running);
        running.ended_at = None;
        let c = Case::from_job(&running, None, t0() + chrono::Duration::seconds(10));
        assert_eq!(c.name, "local:17");
        assert_eq!(c.time, Duration::from_secs(10));
        assert!(matches!(c.verdict, Verdict::Error { .. }));
    }

    #[test]
    fn junit_escapes_and_drops_what_xml_cannot_hold() {
        let mut c = Case::from_job(&job(JobState::Failed), Some("a<b>&\"c\""), t0());
        c.verdict = Verdict::Failed {
            message: "bad \u{1b}[31mred\u{1b}[0m".into(),
            output: vec!["line <1>".into(), "]]> & done".into()],
        };
        let xml = junit_xml("jobctl", &[c], t0()).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(
            xml.contains("name=\"a&lt;b&gt;&amp;&quot;c&quot;\""),
            "{xml}"
        );
        assert!(!xml.contains('\u{1b}'));
        assert!(xml.contains("line &lt;1&gt;"), "{xml}");
        assert!(xml.contains("timestamp=\"2026-11-21T08:00:00\""), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
    }

    #[test]
    fn github_summary_and_annotations() {
        let mut ok = Case::from_job(&job(JobState::Succeeded), Some("a|b"), t0());
        ok.attempts = 2;
        let bad = Case::from_job(&job(JobState::Failed), Some("post"), t0());
        let blocked = Case {
            name: "after".into(),
            classname: "slurm".into(),
            reference: None,
            state: "blocked".into(),
            attempts: 0,
            time: Duration::ZERO,
            verdict: Verdict::Skipped {
                message: "prerequisite post (line 2) failed".into(),
            },
        };
        let s = github_summary("jobctl batch p.jsonl", &[ok, bad.clone(), blocked]);
        assert!(
            s.contains("3 jobs: 1 succeeded, 1 failed, 1 skipped, 0 unfinished"),
            "{s}"
        );
        assert!(
            s.contains("| ✅ | a\\|b | `local:17` | local | succeeded | 2 | 3s |"),
            "{s}"
        );
        assert!(
            s.contains("| ⏭️ | after |  | slurm | blocked | 0 | 0s | prerequisite post"),
            "{s}"
        );
        let mut multi = bad;
        multi.name = "a,b:c".into();
        multi.verdict = Verdict::Failed {
            message: "50% done\nthen died".into(),
            output: vec![],
        };
        assert_eq!(
            github_annotations(&[multi]),
            vec!["::error title=jobctl%3A a%2Cb%3Ac failed::50%25 done%0Athen died"]
        );
    }

    #[test]
    fn write_reports_appends_the_summary_and_writes_junit() {
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("summary.md");
        std::fs::write(&summary, "earlier step\n").unwrap();
        let junit = dir.path().join("sub/r.xml");
        let cases = [Case::from_job(&job(JobState::Failed), None, t0())];
        let mut ann = Vec::new();
        write_reports(
            &[ReportTarget::Junit(junit.clone()), ReportTarget::Github],
            "jobctl wait",
            &cases,
            t0(),
            &mut ann,
            Some(summary.clone()),
        )
        .unwrap();
        let s = std::fs::read_to_string(&summary).unwrap();
        assert!(s.starts_with("earlier step\n### jobctl wait"), "{s}");
        assert!(
            std::fs::read_to_string(&junit)
                .unwrap()
                .contains("<testcase")
        );
        assert!(
            String::from_utf8(ann)
                .unwrap()
                .starts_with("::error title=")
        );
        // An unwritable target is reported, after the others were written.
        let e = write_reports(
            &[ReportTarget::Junit(dir.path().join("summary.md/x.xml"))],
            "t",
            &cases,
            t0(),
            &mut Vec::new(),
            None,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 7);
    }
}
