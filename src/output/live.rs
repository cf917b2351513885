//! The live display of a wait, as a pure model: each job's compact state goes in, the lines
//! to draw for a given terminal size come out ([`LiveModel`]; [`Board`] is the same for the
//! lines of a pipeline). Drawing (indicatif, the terminal's size, the clock) stays in the
//! output module ([`super::WatchView`], [`super::PipelineDisplay`]), so every layout decision
//! here is tested without a terminal.
//!
//! When every job fits the terminal, each gets a line; when they do not, the display is a
//! summary (a bar of finished/total, elapsed, counts per state) and the most recent state
//! changes, ending with "+N more". The model keeps one small record per job — never the
//! platform's answer — and a bounded list of recent changes, so its memory and the cost of a
//! frame do not grow with thousands of jobs beyond that record.

use super::paint_state;
use crate::model::{Job, JobState};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

/// Most recent changes remembered: more than any terminal has rows.
const RECENT: usize = 512;

/// Width of the finished/total bar in the summary line.
const BAR: usize = 20;

/// What the display keeps of one job: enough for its line, no more.
#[derive(Debug, Clone, Default)]
struct Row {
    /// `None` until the first answer.
    state: Option<JobState>,
    native: Option<Box<str>>,
    progress: Option<f32>,
    /// What the job is doing, where the backend says (cloudpss progress titles).
    title: Option<Box<str>>,
    since: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
}

/// The size of the area to draw in and the clock.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Columns available; no line is longer.
    pub width: usize,
    /// Terminal rows; the display uses at most one less, so the cursor line never scrolls it.
    pub height: usize,
    /// How long the wait has run.
    pub elapsed: Duration,
    /// Now, for each job's own elapsed time.
    pub now: DateTime<Utc>,
}

/// The jobs of one wait as the live display sees them.
#[derive(Debug)]
pub struct LiveModel {
    names: Vec<Box<str>>,
    /// Job positions sorted by reference, to find a job from an event without a second copy
    /// of every reference.
    by_name: Vec<u32>,
    rows: Vec<Row>,
    /// Jobs per state, indexed like [`JobState::ALL`].
    counts: [usize; JobState::ALL.len()],
    /// Jobs without an answer yet.
    unseen: usize,
    /// Positions of the jobs whose state changed last, most recent first, each at most once.
    recent: VecDeque<usize>,
}

fn slot(state: JobState) -> usize {
    JobState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or(JobState::ALL.len() - 1)
}

impl LiveModel {
    /// A model of `targets` (profile, id), in the order the wait reports them.
    pub fn new(targets: &[(String, String)]) -> Self {
        let names: Vec<Box<str>> = targets
            .iter()
            .map(|(p, id)| format!("{p}:{id}").into_boxed_str())
            .collect();
        let mut by_name: Vec<u32> = (0..names.len() as u32).collect();
        by_name.sort_by(|a, b| names[*a as usize].cmp(&names[*b as usize]));
        LiveModel {
            rows: vec![Row::default(); names.len()],
            unseen: names.len(),
            names,
            by_name,
            counts: [0; JobState::ALL.len()],
            recent: VecDeque::new(),
        }
    }

    /// The position of the job with reference `reference`, if it is one of the targets.
    pub fn position(&self, reference: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|i| (*self.names[*i as usize]).cmp(reference))
            .ok()
            .map(|k| self.by_name[k] as usize)
    }

    /// Records the latest answer for the job at `i`; a changed state (or the first answer)
    /// makes it the most recent change.
    pub fn observe(&mut self, i: usize, job: &Job) {
        let Some(row) = self.rows.get_mut(i) else {
            return;
        };
        let state_changed =
            row.state != Some(job.state) || row.native.as_deref() != job.native_state.as_deref();
        match row.state {
            Some(old) => self.counts[slot(old)] -= 1,
            None => self.unseen -= 1,
        }
        self.counts[slot(job.state)] += 1;
        row.state = Some(job.state);
        if state_changed {
            row.native = job.native_state.as_deref().map(Box::from);
        }
        row.progress = job.progress.map(|p| p as f32);
        let title = job.extra.get("progress_title").and_then(Value::as_str);
        if row.title.as_deref() != title {
            row.title = title.map(Box::from);
        }
        row.since = job.started_at.or(job.created_at);
        row.ended = job.ended_at;
        if state_changed {
            touch(&mut self.recent, i);
        }
    }

    /// Records the answers of a whole polling round (`None`: no answer yet).
    pub fn observe_all(&mut self, jobs: &[Option<Job>]) {
        for (i, job) in jobs.iter().enumerate() {
            if let Some(j) = job {
                self.observe(i, j);
            }
        }
    }

    fn finished(&self) -> usize {
        JobState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| self.counts[slot(*s)])
            .sum()
    }

    /// The lines to draw in `frame`: one per job when they fit, otherwise the summary, the
    /// latest changes (most recent first) and "+N more". No line is wider than the frame.
    pub fn render(&self, frame: &Frame) -> Vec<String> {
        layout(
            Layout {
                n: self.names.len(),
                single: true,
                progress: progress(self.finished(), self.names.len(), frame.elapsed),
                counts: self.counts_text(false),
                recent: &self.recent,
            },
            |i| self.job_line(i, frame.now),
            frame,
        )
    }

    /// "N state" for every state with jobs, then the jobs without an answer: finished states
    /// first for the final line (`finished_first`), otherwise in the usual state order.
    fn counts_text(&self, finished_first: bool) -> Vec<String> {
        let mut order: Vec<JobState> = JobState::ALL.to_vec();
        if finished_first {
            order.sort_by_key(|s| !s.is_terminal());
        }
        let mut parts: Vec<String> = order
            .into_iter()
            .filter(|s| self.counts[slot(*s)] > 0)
            .map(|s| paint_state(s, &format!("{} {}", self.counts[slot(s)], s.as_str())))
            .collect();
        if self.unseen > 0 {
            let yet = if finished_first { "" } else { " yet" };
            parts.push(format!("{} without an answer{yet}", self.unseen));
        }
        parts
    }

    /// `✓ local:17  succeeded  12s`: a mark for finished jobs, the state (with the native one
    /// when it says more), the job's own elapsed time, progress and what it is doing.
    fn job_line(&self, i: usize, now: DateTime<Utc>) -> String {
        let row = &self.rows[i];
        let name = &self.names[i];
        let Some(state) = row.state else {
            return format!("  {name}  waiting for a first answer");
        };
        let mut line = format!(
            "{} {name}  {}",
            mark(state),
            paint_state(state, state.as_str())
        );
        if let Some(native) = row.native.as_deref().filter(|n| *n != state.as_str()) {
            line.push_str(&format!(" ({native})"));
        }
        if let Some(since) = row.since {
            let until = row.ended.unwrap_or(now);
            line.push_str(&format!(
                "  {}",
                compact((until - since).to_std().unwrap_or_default())
            ));
        }
        if let Some(p) = row.progress {
            line.push_str(&format!("  {:.0}%", p * 100.0));
        }
        if let Some(t) = &row.title {
            line.push_str(&format!("  {t}"));
        }
        line
    }

    /// The line that stays on screen when the wait ends: `298 succeeded, 2 failed in 3m12s`,
    /// or for one job `✓ local:17 succeeded in 12s`.
    pub fn final_line(&self, elapsed: Duration) -> String {
        let took = compact(elapsed);
        if self.names.len() == 1 {
            let name = &self.names[0];
            return match self.rows[0].state {
                Some(s) => format!(
                    "{} {name} {} in {took}",
                    mark(s),
                    paint_state(s, s.as_str())
                ),
                None => format!("  {name}: no answer in {took}"),
            };
        }
        let mut parts = self.counts_text(true);
        if parts.is_empty() {
            parts.push("no jobs".to_string());
        }
        format!("{} in {took}", parts.join(", "))
    }
}

/// Where a pipeline line is, for the board's counts and marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Waiting for prerequisites or its turn.
    Waiting,
    /// Being submitted.
    Submitting,
    /// Failed; another attempt is due.
    Retrying,
    /// Its job (the current attempt's) is in this state.
    Job(JobState),
    /// Its submission was refused.
    NotSubmitted,
    /// A prerequisite failed, so it will not run.
    Blocked,
}

impl Stage {
    fn finished(self) -> bool {
        match self {
            Stage::Job(s) => s.is_terminal(),
            Stage::NotSubmitted | Stage::Blocked => true,
            _ => false,
        }
    }

    fn mark(self) -> String {
        match self {
            Stage::Job(s) => mark(s),
            Stage::NotSubmitted | Stage::Blocked => mark(JobState::Failed),
            _ => " ".to_string(),
        }
    }

    fn count(self, n: usize) -> String {
        match self {
            Stage::Waiting => format!("{n} waiting"),
            Stage::Submitting => format!("{n} submitting"),
            Stage::Retrying => format!("{n} retrying"),
            Stage::Job(s) => paint_state(s, &format!("{n} {}", s.as_str())),
            Stage::NotSubmitted => paint_state(JobState::Failed, &format!("{n} not submitted")),
            Stage::Blocked => paint_state(JobState::Canceled, &format!("{n} blocked")),
        }
    }
}

/// The live display of a pipeline run (`batch --wait` with `after`/`retries`): the same
/// layout as [`LiveModel`], over lines whose text the pipeline driver composes.
#[derive(Debug)]
pub struct Board {
    names: Vec<Box<str>>,
    /// Per line: a fingerprint of what its text was made from, its stage, its text.
    rows: Vec<(u64, Stage, Box<str>)>,
    counts: std::collections::BTreeMap<Stage, usize>,
    recent: VecDeque<usize>,
}

impl Board {
    /// A board of lines named `names`, all waiting.
    pub fn new(names: Vec<String>) -> Self {
        let n = names.len();
        Board {
            names: names.into_iter().map(String::into_boxed_str).collect(),
            rows: vec![(0, Stage::Waiting, Box::from("")); n],
            counts: [(Stage::Waiting, n)]
                .into_iter()
                .filter(|c| c.1 > 0)
                .collect(),
            recent: VecDeque::new(),
        }
    }

    /// The fingerprint line `i` was last drawn from (0 before its first update), so the
    /// driver composes a line's text only when something it shows changed.
    pub fn fingerprint(&self, i: usize) -> Option<u64> {
        self.rows.get(i).map(|r| r.0)
    }

    /// Sets line `i`; a new stage makes it the most recent change.
    pub fn set(&mut self, i: usize, fingerprint: u64, stage: Stage, text: String) {
        let Some(row) = self.rows.get_mut(i) else {
            return;
        };
        let old = row.1;
        *row = (fingerprint, stage, text.into_boxed_str());
        if old != stage {
            if let Some(c) = self.counts.get_mut(&old) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&old);
                }
            }
            *self.counts.entry(stage).or_default() += 1;
            touch(&mut self.recent, i);
        }
    }

    fn counts_text(&self, finished_first: bool) -> Vec<String> {
        let mut stages: Vec<(&Stage, &usize)> = self.counts.iter().collect();
        if finished_first {
            stages.sort_by_key(|(s, _)| !s.finished());
        }
        stages.into_iter().map(|(s, n)| s.count(*n)).collect()
    }

    /// The lines to draw in `frame` (as [`LiveModel::render`]).
    pub fn render(&self, frame: &Frame) -> Vec<String> {
        let done = self
            .counts
            .iter()
            .filter(|(s, _)| s.finished())
            .map(|(_, n)| n)
            .sum();
        layout(
            Layout {
                n: self.names.len(),
                single: false,
                progress: progress(done, self.names.len(), frame.elapsed),
                counts: self.counts_text(false),
                recent: &self.recent,
            },
            |i| {
                let (_, stage, text) = &self.rows[i];
                format!("{} {}  {text}", stage.mark(), self.names[i])
            },
            frame,
        )
    }

    /// The line that stays on screen when the run ends: `3 succeeded, 1 blocked in 1m05s`.
    pub fn final_line(&self, elapsed: Duration) -> String {
        let mut parts = self.counts_text(true);
        if parts.is_empty() {
            parts.push("no lines".to_string());
        }
        format!("{} in {}", parts.join(", "), compact(elapsed))
    }
}

/// What [`layout`] arranges: `n` rows (a lone one shown without a summary when `single`), the
/// summary's bar and counts, and the rows changed last.
struct Layout<'a> {
    n: usize,
    single: bool,
    progress: String,
    counts: Vec<String>,
    recent: &'a VecDeque<usize>,
}

/// The frame's lines: every row under a summary line when they fit, otherwise the bar, the
/// counts, the latest changes and "+N more"; each cut (never wrapped) at the frame's width.
fn layout(l: Layout<'_>, row: impl Fn(usize) -> String, frame: &Frame) -> Vec<String> {
    let n = l.n;
    // The cursor's line stays free, so drawing never scrolls the terminal.
    let budget = frame.height.saturating_sub(1).max(1);
    let summary = || format!("{} · {}", l.progress, l.counts.join(", "));
    let mut lines = Vec::new();
    if n == 1 && l.single {
        lines.push(row(0));
    } else if n < budget {
        lines.push(summary());
        lines.extend((0..n).map(&row));
    } else if budget < 3 {
        lines.push(summary());
        if budget == 2 {
            lines.push(format!("+{n} more"));
        }
    } else {
        // Thousands of rows: the counts get a line of their own so they are not cut off.
        lines.push(l.progress.clone());
        lines.push(l.counts.join(", "));
        let shown: Vec<usize> = l.recent.iter().copied().take(budget - 3).collect();
        lines.extend(shown.iter().map(|i| row(*i)));
        lines.push(format!("+{} more", n - shown.len()));
    }
    lines
        .into_iter()
        .map(|l| console::truncate_str(&l, frame.width, "…").into_owned())
        .collect()
}

/// `[████░░░░] 40/100 finished · 1m05s`
fn progress(done: usize, n: usize, elapsed: Duration) -> String {
    let filled = (done * BAR).checked_div(n).unwrap_or(0).min(BAR);
    format!(
        "[{}{}] {done}/{n} finished · {}",
        "█".repeat(filled),
        "░".repeat(BAR - filled),
        compact(elapsed),
    )
}

/// Moves `i` to the front of `recent` (once), keeping at most [`RECENT`] entries.
fn touch(recent: &mut VecDeque<usize>, i: usize) {
    if let Some(k) = recent.iter().position(|r| *r == i) {
        recent.remove(k);
    }
    recent.push_front(i);
    recent.truncate(RECENT);
}

/// ✓ for a job that succeeded, ✗ for one that ended otherwise, a space while it runs.
fn mark(state: JobState) -> String {
    match state {
        JobState::Succeeded => console::style("✓").green().to_string(),
        s if s.is_terminal() => console::style("✗").red().to_string(),
        _ => " ".to_string(),
    }
}

/// `45s`, `3m12s`, `1h02m05s`: short enough for a status line.
pub fn compact(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn targets(n: usize) -> Vec<(String, String)> {
        (1..=n).map(|i| ("p".to_string(), i.to_string())).collect()
    }

    fn job(id: usize, state: JobState) -> Job {
        let mut j = Job::new(id.to_string(), state, None);
        j.reference = format!("p:{id}");
        j
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).single().unwrap()
    }

    fn frame(width: usize, height: usize) -> Frame {
        Frame {
            width,
            height,
            elapsed: Duration::from_secs(192),
            now: at(100),
        }
    }

    fn plain(lines: Vec<String>) -> Vec<String> {
        lines
            .iter()
            .map(|l| console::strip_ansi_codes(l).into_owned())
            .collect()
    }

    #[test]
    fn jobs_that_fit_get_one_line_each_in_their_order_with_marks() {
        let mut m = LiveModel::new(&targets(3));
        m.observe(2, &job(3, JobState::Failed));
        m.observe(0, &job(1, JobState::Succeeded));
        m.observe(1, &job(2, JobState::Running));
        let lines = plain(m.render(&frame(80, 24)));
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].contains("2/3 finished"), "{}", lines[0]);
        assert!(lines[0].contains("3m12s"), "{}", lines[0]);
        assert!(
            lines[0].contains("1 running, 1 succeeded, 1 failed"),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "✓ p:1  succeeded");
        assert_eq!(lines[2], "  p:2  running");
        assert_eq!(lines[3], "✗ p:3  failed");
    }

    #[test]
    fn the_bar_fills_with_finished_jobs_and_colour_follows_the_switch() {
        let mut m = LiveModel::new(&targets(4));
        m.observe(0, &job(1, JobState::Succeeded));
        m.observe(1, &job(2, JobState::Canceled));
        m.observe(2, &job(3, JobState::Running));
        // NO_COLOR / --color never turn colours off for the whole process.
        console::set_colors_enabled(false);
        let lines = m.render(&frame(120, 24));
        assert!(
            lines.iter().all(|l| !l.contains('\x1b')),
            "no escape codes: {lines:?}"
        );
        assert!(
            lines[0].starts_with("[██████████░░░░░░░░░░] 2/4 finished · 3m12s · "),
            "{}",
            lines[0]
        );
        assert_eq!(lines[2], "✗ p:2  canceled");
    }

    #[test]
    fn a_single_job_is_one_line_without_a_summary() {
        let mut m = LiveModel::new(&targets(1));
        let mut j = job(1, JobState::Running);
        j.native_state = Some("RUNNING_HOT".into());
        j.started_at = Some(at(-20));
        j.progress = Some(0.4);
        m.observe(0, &j);
        let lines = plain(m.render(&frame(80, 24)));
        assert_eq!(lines, vec!["  p:1  running (RUNNING_HOT)  2m00s  40%"]);
    }

    #[test]
    fn before_any_answer_jobs_are_waiting() {
        let m = LiveModel::new(&targets(2));
        let lines = plain(m.render(&frame(80, 24)));
        assert!(lines[0].contains("0/2 finished"), "{}", lines[0]);
        assert!(lines[0].contains("2 without an answer yet"), "{}", lines[0]);
        assert_eq!(lines[1], "  p:1  waiting for a first answer");
    }

    #[test]
    fn too_many_jobs_show_the_latest_changes_most_recent_first_and_how_many_more() {
        let mut m = LiveModel::new(&targets(10_000));
        for i in 0..10_000 {
            m.observe(i, &job(i + 1, JobState::Running));
        }
        m.observe(41, &job(42, JobState::Failed));
        m.observe(6, &job(7, JobState::Succeeded));
        // An answer that changes nothing does not reorder the list.
        m.observe(41, &job(42, JobState::Failed));
        let lines = plain(m.render(&frame(80, 7)));
        // 7 rows: 6 used (the cursor line stays free): bar, counts, 3 changes, "+N more".
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert_eq!(lines[0], "[░░░░░░░░░░░░░░░░░░░░] 2/10000 finished · 3m12s");
        assert_eq!(lines[1], "9998 running, 1 succeeded, 1 failed");
        assert_eq!(lines[2], "✓ p:7  succeeded");
        assert_eq!(lines[3], "✗ p:42  failed");
        assert_eq!(lines[4], "  p:10000  running");
        assert_eq!(lines[5], "+9997 more");
    }

    #[test]
    fn the_display_switches_to_the_summary_exactly_when_the_jobs_no_longer_fit() {
        // 10 rows: 9 usable; 8 jobs + the summary fit, 9 do not.
        assert_eq!(LiveModel::new(&targets(8)).render(&frame(80, 10)).len(), 9);
        let lines = plain(LiveModel::new(&targets(9)).render(&frame(80, 10)));
        assert_eq!(lines.len(), 3, "nothing changed yet: {lines:#?}");
        assert_eq!(lines[1], "9 without an answer yet");
        assert_eq!(lines[2], "+9 more");
    }

    #[test]
    fn a_tiny_terminal_gets_the_summary_alone() {
        let mut m = LiveModel::new(&targets(50));
        m.observe(0, &job(1, JobState::Succeeded));
        let lines = plain(m.render(&frame(80, 1)));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("1/50 finished"));
        let lines = plain(m.render(&frame(80, 3)));
        assert_eq!(lines, vec![lines[0].clone(), "+50 more".to_string()]);
    }

    #[test]
    fn narrow_terminals_truncate_lines_instead_of_wrapping() {
        let mut m = LiveModel::new(&targets(3));
        m.observe(0, &job(1, JobState::Succeeded));
        for width in [1, 8, 20, 33] {
            for l in m.render(&frame(width, 24)) {
                assert!(
                    console::measure_text_width(&l) <= width,
                    "{width}: {l:?} is {} wide",
                    console::measure_text_width(&l)
                );
            }
        }
        let lines = plain(m.render(&frame(12, 24)));
        assert!(lines[0].ends_with('…'), "{}", lines[0]);
        assert_eq!(lines[1], "✓ p:1  succ…");
    }

    #[test]
    fn the_recent_list_stays_bounded_and_each_job_appears_once() {
        let mut m = LiveModel::new(&targets(2_000));
        for round in [JobState::Queued, JobState::Running, JobState::Succeeded] {
            for i in 0..2_000 {
                m.observe(i, &job(i + 1, round));
            }
        }
        assert_eq!(m.recent.len(), RECENT);
        let mut seen = m.recent.iter().copied().collect::<Vec<_>>();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), RECENT);
        assert_eq!(m.recent[0], 1_999);
        assert_eq!(m.finished(), 2_000);
    }

    #[test]
    fn events_find_their_job_by_reference() {
        let m = LiveModel::new(&[
            ("b".into(), "2".into()),
            ("a".into(), "10".into()),
            ("a".into(), "9".into()),
        ]);
        assert_eq!(m.position("a:9"), Some(2));
        assert_eq!(m.position("b:2"), Some(0));
        assert_eq!(m.position("a:1"), None);
    }

    #[test]
    fn the_final_line_counts_outcomes_with_finished_ones_first() {
        let mut m = LiveModel::new(&targets(300));
        for i in 0..298 {
            m.observe(i, &job(i + 1, JobState::Succeeded));
        }
        m.observe(298, &job(299, JobState::Failed));
        m.observe(299, &job(300, JobState::Failed));
        assert_eq!(
            console::strip_ansi_codes(&m.final_line(Duration::from_secs(192))),
            "298 succeeded, 2 failed in 3m12s"
        );

        let mut m = LiveModel::new(&targets(4));
        m.observe(0, &job(1, JobState::Running));
        m.observe(1, &job(2, JobState::Canceled));
        m.observe(2, &job(3, JobState::Succeeded));
        assert_eq!(
            console::strip_ansi_codes(&m.final_line(Duration::from_secs(5))),
            "1 succeeded, 1 canceled, 1 running, 1 without an answer in 5s"
        );
    }

    #[test]
    fn the_final_line_of_one_job_names_it() {
        let mut m = LiveModel::new(&targets(1));
        m.observe(0, &job(1, JobState::Failed));
        assert_eq!(
            console::strip_ansi_codes(&m.final_line(Duration::from_secs(3725))),
            "✗ p:1 failed in 1h02m05s"
        );
    }

    #[test]
    fn a_pipeline_board_counts_stages_marks_final_lines_and_overflows() {
        let names: Vec<String> = (1..=40).map(|i| format!("{i:>4} k{i}")).collect();
        let mut b = Board::new(names);
        assert_eq!(b.fingerprint(0), Some(0));
        b.set(
            0,
            7,
            Stage::Job(JobState::Succeeded),
            "p:1  succeeded".into(),
        );
        b.set(1, 7, Stage::Blocked, "blocked: k1 failed".into());
        b.set(2, 7, Stage::Job(JobState::Running), "p:3  running".into());
        // The same stage again moves nothing.
        b.set(
            0,
            8,
            Stage::Job(JobState::Succeeded),
            "p:1  succeeded".into(),
        );
        assert_eq!(b.fingerprint(0), Some(8));
        let lines = plain(b.render(&frame(80, 8)));
        assert_eq!(lines[0], "[█░░░░░░░░░░░░░░░░░░░] 2/40 finished · 3m12s");
        assert_eq!(lines[1], "37 waiting, 1 running, 1 succeeded, 1 blocked");
        assert_eq!(lines[2], "     3 k3  p:3  running");
        assert_eq!(lines[3], "✗    2 k2  blocked: k1 failed");
        assert_eq!(lines[4], "✓    1 k1  p:1  succeeded");
        assert_eq!(lines[5], "+37 more");
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert_eq!(
            console::strip_ansi_codes(&b.final_line(Duration::from_secs(65))),
            "1 succeeded, 1 blocked, 37 waiting, 1 running in 1m05s"
        );
        // Few lines: every one, under the summary, in line order.
        let mut b = Board::new(vec!["   1 a".into(), "   2 b".into()]);
        b.set(1, 1, Stage::NotSubmitted, "not submitted: refused".into());
        let lines = plain(b.render(&frame(80, 24)));
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("1/2 finished"), "{}", lines[0]);
        assert_eq!(lines[1], "     1 a  ");
        assert_eq!(lines[2], "✗    2 b  not submitted: refused");
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(compact(Duration::from_millis(900)), "0s");
        assert_eq!(compact(Duration::from_secs(59)), "59s");
        assert_eq!(compact(Duration::from_secs(60)), "1m00s");
        assert_eq!(compact(Duration::from_secs(192)), "3m12s");
    }
}
