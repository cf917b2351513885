//! CloudPSS message templates: how a stream compresses repeated messages.
//!
//! A decoded stream entry that is a list is not a message:
//! - `[tid, 1, defaults{}, m1, …, mn]` (more than three items) defines template `tid` with
//!   `n` message skeletons;
//! - `[tid, 1, args{}]` expands template `tid` into its `n` messages, replacing every string
//!   that starts with `=` (in values and in object keys) by the variable named after the `=`,
//!   looked up in `defaults` merged with `args` (args win). A name with no value gives `null`.
//!
//! The official SDK evaluates the text after `=` as an expression; the platform writes plain
//! variable names there, which is what jobctl supports. An unknown `tid` expands to nothing,
//! as in the SDK.

use serde_json::{Map, Value};
use std::collections::HashMap;

/// What one decoded stream entry turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A plain message.
    Message(Value),
    /// A template invocation, expanded (possibly to nothing).
    Expanded(Vec<Value>),
    /// A template definition: no message.
    Defined,
}

#[derive(Debug, Clone)]
struct Template {
    defaults: Map<String, Value>,
    skeletons: Vec<Value>,
}

/// The templates defined so far on one stream.
#[derive(Debug, Default, Clone)]
pub struct Templates {
    known: HashMap<i64, Template>,
}

impl Templates {
    /// Interprets one decoded entry.
    pub fn accept(&mut self, value: Value) -> Entry {
        let Value::Array(items) = value else {
            return Entry::Message(value);
        };
        let id = items.first().and_then(Value::as_i64);
        let version_ok = items.get(1).and_then(Value::as_i64) == Some(1);
        let (Some(id), true) = (id, version_ok) else {
            // Not a template at all: keep it as a message rather than lose it.
            return Entry::Message(Value::Array(items));
        };
        let vars = match items.get(2) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if items.len() == 3 {
            return Entry::Expanded(self.expand(id, vars));
        }
        if items.len() > 3 {
            let skeletons = items.into_iter().skip(3).collect();
            self.known.insert(
                id,
                Template {
                    defaults: vars,
                    skeletons,
                },
            );
            return Entry::Defined;
        }
        Entry::Message(Value::Array(items))
    }

    fn expand(&self, id: i64, args: Map<String, Value>) -> Vec<Value> {
        let Some(t) = self.known.get(&id) else {
            return Vec::new();
        };
        let mut vars = t.defaults.clone();
        vars.extend(args);
        t.skeletons.iter().map(|s| fill(s, &vars)).collect()
    }
}

/// The variable a `=name` string refers to, if the string is a reference.
fn reference(s: &str) -> Option<&str> {
    // One character alone ("=") is literal text, as in the SDK.
    s.strip_prefix('=').filter(|_| s.len() > 1).map(str::trim)
}

fn fill(v: &Value, vars: &Map<String, Value>) -> Value {
    match v {
        Value::String(s) => match reference(s) {
            Some(name) => vars.get(name).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|i| fill(i, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, val)| {
                    let key = match reference(k) {
                        Some(name) => match vars.get(name) {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        },
                        None => k.clone(),
                    };
                    (key, fill(val, vars))
                })
                .collect(),
        ),
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn definitions_then_invocations_expand_with_defaults_and_args() {
        let mut t = Templates::default();
        let def = json!([7, 1, {"v": "append", "level": "info"},
            {"type": "plot", "key": "plot-1", "verb": "=v", "data": {"traces": [{"x": "=t", "y": "=y"}]}},
            {"type": "log", "data": {"level": "=level", "content": "=", "=k": "=missing"}}]);
        assert_eq!(t.accept(def), Entry::Defined);
        let out = t.accept(json!([7, 1, {"t": [1, 2], "y": [3, 4], "k": "extra"}]));
        assert_eq!(
            out,
            Entry::Expanded(vec![
                json!({"type": "plot", "key": "plot-1", "verb": "append", "data": {"traces": [{"x": [1, 2], "y": [3, 4]}]}}),
                json!({"type": "log", "data": {"level": "info", "content": "=", "extra": null}}),
            ])
        );
        assert_eq!(t.accept(json!([8, 1, {}])), Entry::Expanded(vec![]));
        assert_eq!(
            t.accept(json!({"type": "log"})),
            Entry::Message(json!({"type": "log"}))
        );
    }
}
