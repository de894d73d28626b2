//! How client commands print. Every command that prints takes
//! `-o/--output table|json|yaml` (`--json` is short for `-o json`) and
//! builds one JSON document; JSON and YAML print that document, the table
//! is drawn from it. Values are written one way everywhere: times as
//! RFC 3339 UTC with milliseconds (`2026-03-01T12:00:00.000Z`), enum values
//! in lower case (`failed`, `full`), durations as people write them (`5m`).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::Value;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with a header, for people.
    #[default]
    Table,
    /// Pretty JSON (one object per line for streams), for scripts.
    Json,
    /// YAML, for scripts and people.
    Yaml,
}

/// The output flags every printing command shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArg {
    /// Output format: table for people, json or yaml for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Same as `--output json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

impl OutputArg {
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.format
        }
    }

    /// Prints `document` as JSON or YAML, or hands it to `table` for people.
    pub fn print(&self, document: &Value, table: impl FnOnce(&Value)) -> anyhow::Result<()> {
        match self.format() {
            Format::Json => println!("{}", serde_json::to_string_pretty(document)?),
            Format::Yaml => print!("{}", to_yaml(document)),
            Format::Table => table(document),
        }
        Ok(())
    }

    /// Prints one item of a stream: a JSON line, a YAML document, or a
    /// table row through `row`.
    pub fn print_item(&self, item: &Value, row: impl FnOnce(&Value)) {
        match self.format() {
            Format::Json => println!("{item}"),
            Format::Yaml => print!("---\n{}", to_yaml(item)),
            Format::Table => row(item),
        }
    }
}

/// Columns aligned to their widest cell, under an upper-case header; the
/// last column is not padded.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", table_text(headers, rows));
}

pub fn table_text(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The items of a list document (none when it is not a list).
pub fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().into_iter().flatten()
}

/// A table cell from a document field: strings as they are, null as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Prints a document's fields as `key  value` lines, for one item.
pub fn print_fields(document: &Value) {
    let Value::Object(fields) = document else {
        return;
    };
    let rows: Vec<Vec<String>> = fields
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::Array(items) if items.iter().all(|i| !i.is_object()) => {
                    items.iter().map(cell).collect::<Vec<_>>().join(", ")
                }
                Value::Array(_) | Value::Object(_) => value.to_string(),
                other => cell(other),
            };
            vec![key.clone(), text]
        })
        .collect();
    let text = table_text(&["FIELD", "VALUE"], &rows);
    // The header says nothing a key-value list needs.
    print!("{}", text.split_once('\n').map_or("", |(_, rest)| rest));
}

/// A protobuf time as RFC 3339 UTC with milliseconds, e.g.
/// `2026-03-01T12:00:00.000Z`.
pub fn time_text(t: &Option<prost_types::Timestamp>) -> Option<String> {
    time_of(t).map(instant_text)
}

pub fn instant_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn time_of(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| Utc.timestamp_opt(t.seconds, t.nanos.max(0) as u32).single())
}

/// A proto enum value's name without its type prefix, in lower case:
/// `BATCH_STATE_FAILED` → `failed`.
pub fn enum_text(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_ascii_lowercase())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A duration as people write it: `250ms`, `4.2s`, `5m`, `5m 3s`, `2h`,
/// `2h 5m`, `3d 4h` (the two largest units).
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let tenths = (ms % 1000) / 100;
        return if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths}s")
        };
    }
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let (i, (size, unit)) = units
        .iter()
        .enumerate()
        .find(|(_, (size, _))| secs >= *size)
        .map(|(i, u)| (i, *u))
        .unwrap_or((3, (1, "s")));
    let (next_size, next_unit) = units[(i + 1).min(3)];
    let rest = (secs % size) / next_size;
    if rest == 0 || next_size == size {
        format!("{}{unit}", secs / size)
    } else {
        format!("{}{unit} {rest}{next_unit}", secs / size)
    }
}

/// YAML for a JSON document. Strings are written double-quoted (a JSON
/// string is a valid YAML scalar), so no value is ever read back as
/// another type (`"no"`, `"1.0"`, `"null"` stay strings).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(&mut out, value, 0);
    out
}

fn write_yaml(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                out.push_str(&format!("{pad}{}:", yaml_key(key)));
                write_nested(out, item, indent + 2);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_block(item) {
                    let mut nested = String::new();
                    write_yaml(&mut nested, item, indent + 2);
                    out.push_str(&format!("{pad}- {}", &nested[indent + 2..]));
                } else {
                    out.push_str(&format!("{pad}- {}\n", yaml_scalar(item)));
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{}\n", yaml_scalar(scalar))),
    }
}

/// After `key:`, a scalar on the same line or a block below.
fn write_nested(out: &mut String, value: &Value, indent: usize) {
    if is_block(value) {
        out.push('\n');
        write_yaml(out, value, indent);
    } else {
        out.push_str(&format!(" {}\n", yaml_scalar(value)));
    }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

fn yaml_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if plain {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_keeps_types_and_nests_maps_and_lists() {
        let doc = json!({
            "name": "no", "count": 3, "none": null, "empty": [], "tags": ["a", "b"],
            "batch": {"state": "failed", "failed": [{"id": "x", "error": "boom"}]},
            "odd key": {}
        });
        assert_eq!(
            to_yaml(&doc),
            "batch:\n  failed:\n    - error: \"boom\"\n      id: \"x\"\n  state: \"failed\"\n\
             count: 3\nempty: []\nname: \"no\"\nnone: null\n\"odd key\": {}\n\
             tags:\n  - \"a\"\n  - \"b\"\n"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let cases = [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(4200), "4.2s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(303), "5m 3s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(7500), "2h 5m"),
            (Duration::from_secs(86_400 * 3 + 3600 * 4 + 7), "3d 4h"),
        ];
        for (d, text) in cases {
            assert_eq!(duration_text(d), text);
        }
    }

    #[test]
    fn times_are_utc_with_milliseconds_and_enums_lower_case() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        assert_eq!(instant_text(t), "2026-03-01T12:00:00.000Z");
        assert_eq!(
            enum_text(Some("BATCH_STATE_FAILED"), "BATCH_STATE_"),
            "failed"
        );
    }

    #[test]
    fn tables_align_under_their_header() {
        let rows = vec![vec!["b-1".into(), "running".into()]];
        assert_eq!(
            table_text(&["BATCH", "STATE"], &rows),
            "BATCH  STATE\nb-1    running\n"
        );
    }
}
