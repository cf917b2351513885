//! A job's results as files (`fetch`) and its messages as lines (`logs`).
//!
//! `fetch` writes into the destination directory:
//! - `messages.ndjson`: every message of the output stream, one JSON object per line;
//! - one CSV per plot (messages of type `plot`, by `key`): a column per trace axis, headed
//!   `<trace> x`, `<trace> y`; later messages with the same key append their points trace by
//!   trace (verb `replace` starts over), as the official SDK merges them;
//! - one CSV per table (type `table`, by `key`): its columns; verbs `append`/`prepend` add
//!   rows, anything else replaces the table;
//! - `index.json`: what was written (files, titles, traces, columns, row counts) and the
//!   job's `terminate` status.

use crate::error::{Error, Result};
use crate::model::Artifact;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// How a log line is printed in table mode.
pub fn log_line(msg: &Value, color: bool) -> Option<String> {
    if msg.get("type").and_then(Value::as_str) != Some("log") {
        return None;
    }
    let data = msg.get("data")?;
    let level = data.get("level").and_then(Value::as_str).unwrap_or("info");
    let content = match data.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => data
            .get("html")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        Some(other) => other.to_string(),
    };
    let tag = format!("{level:<8}");
    let tag = if color {
        match level {
            "critical" | "error" => console::style(tag).red().bold().force_styling(true),
            "warning" => console::style(tag).yellow().force_styling(true),
            "verbose" | "debug" => console::style(tag).dim().force_styling(true),
            _ => console::style(tag).force_styling(true),
        }
        .to_string()
    } else {
        tag
    };
    Some(format!("{tag} {content}"))
}

/// The plot or table a keyed message builds, merged over the stream.
#[derive(Debug, Default)]
struct Collected {
    /// Keys in order of first appearance, with their kind.
    order: Vec<(String, &'static str)>,
    plots: BTreeMap<String, Value>,
    tables: BTreeMap<String, Value>,
    terminate: Option<String>,
    progress: Option<Value>,
    count: usize,
}

fn verb(msg: &Value) -> &str {
    msg.get("verb").and_then(Value::as_str).unwrap_or("")
}

fn traces(v: &Value) -> Vec<Value> {
    v.pointer("/data/traces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn columns(v: &Value) -> Vec<Value> {
    v.pointer("/data/columns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn extend(target: &mut Value, field: &str, more: Option<&Value>, front: bool) {
    let Some(Value::Array(more)) = more else {
        return;
    };
    match target.get_mut(field) {
        Some(Value::Array(have)) => {
            if front {
                let mut all = more.clone();
                all.append(have);
                *have = all;
            } else {
                have.extend(more.iter().cloned());
            }
        }
        _ => {
            if let Some(obj) = target.as_object_mut() {
                obj.insert(field.into(), Value::Array(more.clone()));
            }
        }
    }
}

impl Collected {
    fn key_of(&mut self, msg: &Value, kind: &'static str) -> String {
        let key = msg
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{kind}-{}", self.order.len() + 1));
        if !self.order.iter().any(|(k, t)| *k == key && *t == kind) {
            self.order.push((key.clone(), kind));
        }
        key
    }

    fn add(&mut self, msg: &Value) {
        self.count += 1;
        match msg.get("type").and_then(Value::as_str) {
            Some("plot") => {
                let key = self.key_of(msg, "plot");
                match self.plots.get_mut(&key) {
                    Some(have) if verb(msg) != "replace" => {
                        let mut have_traces = traces(have);
                        for (i, t) in traces(msg).iter().enumerate() {
                            match have_traces.get_mut(i) {
                                Some(h) => {
                                    extend(h, "x", t.get("x"), false);
                                    extend(h, "y", t.get("y"), false);
                                }
                                None => have_traces.push(t.clone()),
                            }
                        }
                        if let Some(d) = have.get_mut("data").and_then(Value::as_object_mut) {
                            d.insert("traces".into(), Value::Array(have_traces));
                        }
                    }
                    _ => {
                        self.plots.insert(key, msg.clone());
                    }
                }
            }
            Some("table") => {
                let key = self.key_of(msg, "table");
                let v = verb(msg);
                match self.tables.get_mut(&key) {
                    Some(have) if v == "append" || v == "prepend" => {
                        let mut cols = columns(have);
                        for c in columns(msg) {
                            let name = c.get("name").cloned();
                            match cols.iter_mut().find(|h| h.get("name").cloned() == name) {
                                Some(h) => extend(h, "data", c.get("data"), v == "prepend"),
                                None => cols.push(c),
                            }
                        }
                        if let Some(d) = have.get_mut("data").and_then(Value::as_object_mut) {
                            d.insert("columns".into(), Value::Array(cols));
                        }
                    }
                    _ => {
                        self.tables.insert(key, msg.clone());
                    }
                }
            }
            Some("terminate") => {
                self.terminate = msg
                    .pointer("/data/status")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            Some("progress") => self.progress = msg.get("data").cloned(),
            _ => {}
        }
    }
}

/// One CSV field.
fn field(v: Option<&Value>) -> String {
    let text = match v {
        None | Some(Value::Null) => return String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Columns (header, values) → CSV text, rows as long as the longest column.
fn csv(cols: &[(String, Vec<Value>)]) -> String {
    let mut out = cols
        .iter()
        .map(|(h, _)| field(Some(&Value::String(h.clone()))))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    let rows = cols.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for r in 0..rows {
        let line: Vec<String> = cols.iter().map(|(_, v)| field(v.get(r))).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn array(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

fn plot_csv(plot: &Value) -> (String, Vec<String>) {
    let mut cols = Vec::new();
    let mut names = Vec::new();
    for (i, t) in traces(plot).iter().enumerate() {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("trace {}", i + 1));
        cols.push((format!("{name} x"), array(t.get("x"))));
        cols.push((format!("{name} y"), array(t.get("y"))));
        names.push(name);
    }
    (csv(&cols), names)
}

fn table_csv(table: &Value) -> (String, Vec<String>, usize) {
    let cols: Vec<(String, Vec<Value>)> = columns(table)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("column {}", i + 1));
            (name, array(c.get("data")))
        })
        .collect();
    let rows = cols.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let names = cols.iter().map(|(n, _)| n.clone()).collect();
    (csv(&cols), names, rows)
}

/// A file name from a message key: letters, digits, `-`, `_`, `.` only.
fn file_stem(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('.').to_string()
}

fn write(dest: &Path, name: &str, data: &[u8], out: &mut Vec<Artifact>) -> Result<()> {
    let path = dest.join(name);
    std::fs::write(&path, data)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    out.push(Artifact {
        name: name.to_string(),
        path,
        bytes: data.len() as u64,
        entries: Vec::new(),
    });
    Ok(())
}

/// Writes `messages` as the documented file layout into `dest` (an existing directory).
pub fn write_results(job_id: &str, messages: &[Value], dest: &Path) -> Result<Vec<Artifact>> {
    let mut c = Collected::default();
    let mut ndjson = String::new();
    for m in messages {
        c.add(m);
        ndjson.push_str(&serde_json::to_string(m).unwrap_or_else(|_| "null".into()));
        ndjson.push('\n');
    }
    let mut out = Vec::new();
    write(dest, "messages.ndjson", ndjson.as_bytes(), &mut out)?;
    let mut used: Vec<String> = vec!["messages.ndjson".into(), "index.json".into()];
    let mut plots = Vec::new();
    let mut tables = Vec::new();
    for (key, kind) in &c.order {
        let mut stem = file_stem(key);
        if stem.is_empty() || used.contains(&format!("{stem}.csv")) {
            stem = format!("{kind}-{}", plots.len() + tables.len() + 1);
        }
        let name = format!("{stem}.csv");
        used.push(name.clone());
        let msg = if *kind == "plot" {
            &c.plots[key]
        } else {
            &c.tables[key]
        };
        let title = msg.pointer("/data/title").cloned().unwrap_or(Value::Null);
        if *kind == "plot" {
            let (text, names) = plot_csv(msg);
            write(dest, &name, text.as_bytes(), &mut out)?;
            plots.push(json!({"key": key, "title": title, "file": name, "traces": names}));
        } else {
            let (text, names, rows) = table_csv(msg);
            write(dest, &name, text.as_bytes(), &mut out)?;
            tables.push(
                json!({"key": key, "title": title, "file": name, "columns": names, "rows": rows}),
            );
        }
    }
    let mut index = Map::new();
    index.insert("job".into(), Value::from(job_id));
    index.insert(
        "messages".into(),
        json!({"file": "messages.ndjson", "count": c.count}),
    );
    index.insert("plots".into(), Value::Array(plots));
    index.insert("tables".into(), Value::Array(tables));
    index.insert("progress".into(), c.progress.unwrap_or(Value::Null));
    index.insert(
        "terminate".into(),
        c.terminate.map(Value::from).unwrap_or(Value::Null),
    );
    let text = serde_json::to_string_pretty(&Value::Object(index)).unwrap_or_default();
    write(dest, "index.json", text.as_bytes(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_merge_appends_and_tables_follow_their_verbs() {
        let msgs = vec![
            json!({"type": "plot", "key": "plot-1", "verb": "append", "data": {"title": "V", "traces": [{"name": "Va", "x": [0], "y": [1]}, {"name": "Vb", "x": [0], "y": [2]}]}}),
            json!({"type": "plot", "key": "plot-1", "verb": "append", "data": {"traces": [{"name": "Va", "x": [1], "y": [3]}]}}),
            json!({"type": "table", "key": "t/1", "verb": "replace", "data": {"columns": [{"name": "a", "data": [1]}, {"name": "b, c", "data": ["x\"y"]}]}}),
            json!({"type": "table", "key": "t/1", "verb": "append", "data": {"columns": [{"name": "a", "data": [2]}]}}),
            json!({"type": "terminate", "data": {"status": "resolved"}}),
        ];
        let dir = tempfile::tempdir().unwrap();
        let arts = write_results("j1", &msgs, dir.path()).unwrap();
        let names: Vec<&str> = arts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["messages.ndjson", "plot-1.csv", "t_1.csv", "index.json"]
        );
        let plot = std::fs::read_to_string(dir.path().join("plot-1.csv")).unwrap();
        assert_eq!(plot, "Va x,Va y,Vb x,Vb y\n0,1,0,2\n1,3,,\n");
        let table = std::fs::read_to_string(dir.path().join("t_1.csv")).unwrap();
        assert_eq!(table, "a,\"b, c\"\n1,\"x\"\"y\"\n2,\n");
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["messages"]["count"], 5);
        assert_eq!(index["terminate"], "resolved");
        assert_eq!(index["plots"][0]["traces"], json!(["Va", "Vb"]));
        assert_eq!(index["tables"][0]["rows"], 2);
    }

    #[test]
    fn log_lines_show_level_then_content() {
        let m = json!({"type": "log", "data": {"level": "error", "content": "boom"}});
        assert_eq!(log_line(&m, false).as_deref(), Some("error    boom"));
        assert!(log_line(&m, true).unwrap().contains("\u{1b}["));
        assert_eq!(log_line(&json!({"type": "plot"}), false), None);
    }
}
