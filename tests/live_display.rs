//! The live display on a real pseudo terminal: `script` gives jobctl a terminal of a chosen
//! size, and the test reads what was drawn. Skipped (with the reason printed) where `script`
//! is not installed.

mod common;

use common::{DEADLINE, Sandbox, eventually_blocking};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// `script` from util-linux, if installed.
fn script() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("script"))
        .find(|p| p.is_file())
}

/// Runs `jobctl ARGS` under `script` on a `rows`×`cols` terminal, its screen going to `log`.
fn on_terminal(sb: &Sandbox, script: &Path, size: (u16, u16), args: &[&str], log: &Path) -> Child {
    on_terminal_with(sb, script, size, args, log, true)
}

/// [`on_terminal`], with `NO_COLOR` set (as in every sandbox) or not.
fn on_terminal_with(
    sb: &Sandbox,
    script: &Path,
    size: (u16, u16),
    args: &[&str],
    log: &Path,
    no_color: bool,
) -> Child {
    let bin = assert_cmd::cargo::cargo_bin("jobctl");
    let mut words = vec![bin.to_string_lossy().into_owned()];
    words.extend(args.iter().map(|a| a.to_string()));
    let line = format!(
        "stty rows {} cols {}; exec {}",
        size.0,
        size.1,
        shell_words::join(&words)
    );
    let mut cmd = sb.command(script);
    if !no_color {
        cmd.env_remove("NO_COLOR");
    }
    // indicatif draws nothing where `TERM` is unset or `dumb`.
    cmd.env("TERM", "xterm")
        .args(["-qfec", &line])
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("script runs")
}

/// What a `rows`×`cols` terminal shows after the output logged so far (the log's first line
/// is `script`'s own header, not output).
fn screen(log: &Path, (rows, cols): (u16, u16)) -> Vec<String> {
    let raw = std::fs::read(log).unwrap_or_default();
    let output = raw
        .iter()
        .position(|b| *b == b'\n')
        .map_or(&raw[..0], |i| &raw[i + 1..]);
    let (Some(r), Some(c)) = (NonZeroU16::new(rows), NonZeroU16::new(cols)) else {
        return Vec::new();
    };
    let mut term = vt100::Parser::new(r, c, 0);
    term.process(output);
    term.screen()
        .rows(0, cols)
        .map(|r| r.trim_end().to_string())
        .collect()
}

/// What the terminal received, without escape codes, one entry per line ended by a newline
/// or carriage return.
fn screen_lines(log: &Path) -> Vec<String> {
    let raw = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    console::strip_ansi_codes(&text)
        .split(['\n', '\r'])
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Opens the gate the test's jobs wait for when dropped, so a failed test leaves no job behind.
struct Gate(PathBuf);

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

#[test]
fn watching_more_jobs_than_the_terminal_has_rows_shows_a_summary_and_a_final_line() {
    let Some(script) = script() else {
        eprintln!("skipped: `script` (util-linux) is not installed, so no pseudo terminal");
        return;
    };
    let sb = Sandbox::new();
    let gate = sb.path().join("gate");
    // Whatever happens, the jobs end with the test.
    let _open = Gate(gate.clone());
    // At most a minute, so no job outlives a broken test.
    let hold = format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
        gate.display()
    );
    let mut refs = Vec::new();
    for i in 0..12 {
        let exit = if i < 2 { 1 } else { 0 };
        refs.push(sb.submit(&["--", "sh", "-c", &format!("{hold}; exit {exit}")]));
    }
    let log = sb.path().join("screen.log");
    let mut args = vec!["watch", "--interval", "100ms"];
    args.extend(refs.iter().map(String::as_str));
    let mut child = on_terminal(&sb, &script, (8, 70), &args, &log);

    // 8 rows: 7 drawn (the cursor's line stays free): the bar, the counts, the latest four
    // changes and what is not shown, each on its own row of the screen (nothing wraps).
    let frame = eventually_blocking("the summary of 12 running jobs is drawn", DEADLINE, || {
        let rows = screen(&log, (8, 70));
        let top = rows.iter().position(|r| r.contains("finished"))?;
        let frame = rows.get(top..top + 7)?.to_vec();
        (frame[1] == "  12 running").then_some(frame)
    });
    assert!(
        frame[0].contains("[░░░░░░░░░░░░░░░░░░░░] 0/12 finished · "),
        "{frame:#?}"
    );
    for row in &frame[2..6] {
        assert!(row.starts_with("    local:"), "{frame:#?}");
        assert!(row.contains("  running  "), "{frame:#?}");
    }
    assert_eq!(frame[6], "  +8 more", "{frame:#?}");

    std::fs::write(&gate, "").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "two jobs failed");
    let lines = screen_lines(&log);
    let last_summary = lines
        .iter()
        .rev()
        .find(|l| l.contains(" in "))
        .expect("a final summary line");
    assert!(
        last_summary.starts_with("10 succeeded, 2 failed in "),
        "{last_summary}"
    );
}

#[test]
fn batch_wait_on_a_terminal_ends_with_the_outcome_summary_and_rows_in_line_order() {
    let Some(script) = script() else {
        eprintln!("skipped: `script` (util-linux) is not installed, so no pseudo terminal");
        return;
    };
    let sb = Sandbox::new();
    let lines: Vec<String> = (0..6)
        .map(|i| {
            let code = if i == 3 { 1 } else { 0 };
            format!("{{\"command\":[\"sh\",\"-c\",\"exit {code}\"]}}")
        })
        .collect();
    let file = sb.path().join("jobs.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let log = sb.path().join("screen.log");
    let file = file.to_string_lossy().into_owned();
    let mut child = on_terminal(&sb, &script, (24, 100), &["batch", "--wait", &file], &log);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "line 4 failed");
    let screen = screen_lines(&log);
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("5 succeeded, 1 failed in ")),
        "{screen:#?}"
    );
    let rows: Vec<&str> = screen
        .iter()
        .filter(|l| l.contains("submitted  local:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rows, ["1", "2", "3", "4", "5", "6"], "{screen:#?}");
}

#[test]
fn a_pipeline_on_a_terminal_ends_with_the_summary_of_its_lines() {
    let Some(script) = script() else {
        eprintln!("skipped: `script` (util-linux) is not installed, so no pseudo terminal");
        return;
    };
    let sb = Sandbox::new();
    let file = sb.path().join("pipeline.jsonl");
    std::fs::write(
        &file,
        "{\"key\":\"prep\",\"command\":[\"true\"]}\n\
         {\"key\":\"break\",\"command\":[\"false\"]}\n\
         {\"key\":\"use\",\"after\":[\"prep\"],\"command\":[\"true\"]}\n\
         {\"key\":\"never\",\"after\":[\"break\"],\"command\":[\"true\"]}\n",
    )
    .unwrap();
    let log = sb.path().join("screen.log");
    let file = file.to_string_lossy().into_owned();
    let mut child = on_terminal(&sb, &script, (24, 100), &["batch", "--wait", &file], &log);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a line failed");
    let screen = screen_lines(&log);
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("2 succeeded, 1 failed, 1 blocked in ")),
        "{screen:#?}"
    );
}

#[test]
fn no_color_keeps_the_live_display_and_its_final_line_plain() {
    let Some(script) = script() else {
        eprintln!("skipped: `script` (util-linux) is not installed, so no pseudo terminal");
        return;
    };
    let sb = Sandbox::new();
    let file = sb.path().join("jobs.jsonl");
    std::fs::write(
        &file,
        "{\"command\":[\"true\"]}\n{\"command\":[\"false\"]}\n",
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    // Select Graphic Rendition: the escape sequences that colour text.
    let sgr = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
    for no_color in [true, false] {
        let log = sb.path().join(format!("screen-{no_color}.log"));
        // Each run submits the file again (fresh keys), so each waits for new jobs.
        let args = ["batch", "--wait", "--new-run", &file];
        let mut child = on_terminal_with(&sb, &script, (24, 100), &args, &log, no_color);
        assert_eq!(child.wait().unwrap().code(), Some(1));
        let raw = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
        assert!(
            screen_lines(&log)
                .iter()
                .any(|l| l.starts_with("1 succeeded, 1 failed in ")),
            "{raw}"
        );
        assert_eq!(
            sgr.is_match(&raw),
            !no_color,
            "NO_COLOR={no_color}: {raw:?}"
        );
    }
}
