//! Printing: tables (tabled) or JSON (`--json`), to stdout.

use serde::Serialize;
use serde_json::Value;
use tabled::settings::Style;
use tabled::{Table, Tabled};

/// How results are printed.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    /// JSON instead of tables.
    pub json: bool,
}

impl Out {
    /// Prints a value as pretty JSON.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    /// Prints rows as a table (or `empty` when there are none).
    pub fn table<R: Tabled>(&self, rows: Vec<R>, empty: &str) {
        if rows.is_empty() {
            println!("{empty}");
        } else {
            let mut t = Table::new(rows);
            t.with(Style::sharp());
            println!("{t}");
        }
    }

    /// Prints key/value pairs as a two-column table.
    pub fn pairs(&self, pairs: Vec<(&str, String)>) {
        let rows: Vec<Pair> = pairs
            .into_iter()
            .map(|(k, v)| Pair {
                field: k.to_owned(),
                value: v,
            })
            .collect();
        let mut t = Table::new(rows);
        t.with(Style::sharp());
        println!("{t}");
    }
}

#[derive(Tabled)]
struct Pair {
    field: String,
    value: String,
}

/// A JSON object in one line, cut to `max` characters.
pub fn compact(v: &serde_json::Map<String, Value>, max: usize) -> String {
    let s = Value::Object(v.clone()).to_string();
    if s.chars().count() > max {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// An optional value as text (`-` when absent).
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}
