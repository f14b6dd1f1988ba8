//! An ordered document tree and its YAML and JSON text. Kubernetes manifests, Helm values and
//! Grafana dashboards read best with their keys in the order people write them (`apiVersion`,
//! `kind`, `metadata`, `spec`), which a sorted map would lose; the output must also be the same
//! byte for byte on every render, because it is checked in and compared.

use std::fmt::Write as _;

/// A YAML/JSON value whose maps keep insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Doc>),
    Map(Vec<(String, Doc)>),
}

impl Doc {
    /// A map from `(key, value)` pairs, in order.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Doc)>) -> Doc {
        Doc::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn list(items: impl IntoIterator<Item = Doc>) -> Doc {
        Doc::List(items.into_iter().collect())
    }

    pub fn str(text: impl Into<String>) -> Doc {
        Doc::Str(text.into())
    }

    pub fn strs<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Doc {
        Doc::List(items.into_iter().map(|s| Doc::Str(s.into())).collect())
    }

    pub fn int(value: impl Into<i64>) -> Doc {
        Doc::Int(value.into())
    }

    /// The value at `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Doc> {
        match self {
            Doc::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of map keys.
    pub fn at(&self, path: &[&str]) -> Option<&Doc> {
        path.iter().try_fold(self, |doc, key| doc.get(key))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Doc::Str(text) => Some(text),
            _ => None,
        }
    }

    /// YAML block style, ending with a newline.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        match self {
            Doc::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0),
            Doc::List(items) if !items.is_empty() => write_list(&mut out, items, 0),
            scalar => {
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
        out
    }

    /// JSON, indented by two spaces, ending with a newline.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_json(&mut out, self, 0);
        out.push('\n');
        out
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_map(out: &mut String, entries: &[(String, Doc)], indent: usize) {
    for (key, value) in entries {
        pad(out, indent);
        out.push_str(&yaml_string(key));
        out.push(':');
        write_value(out, value, indent);
    }
}

fn write_list(out: &mut String, items: &[Doc], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            Doc::Map(entries) if !entries.is_empty() => {
                // The first entry shares the dash's line; the others line up under it.
                let (first_key, first_value) = &entries[0];
                out.push(' ');
                out.push_str(&yaml_string(first_key));
                out.push(':');
                write_value(out, first_value, indent + 2);
                write_map(out, &entries[1..], indent + 2);
            }
            Doc::List(inner) if !inner.is_empty() => {
                out.push('\n');
                write_list(out, inner, indent + 2);
            }
            other => write_value(out, other, indent),
        }
    }
}

/// Writes what follows `key:` or `-`: a nested block on the next lines, or ` scalar`.
fn write_value(out: &mut String, value: &Doc, indent: usize) {
    match value {
        Doc::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            write_map(out, entries, indent + 2);
        }
        Doc::List(items) if !items.is_empty() => {
            out.push('\n');
            write_list(out, items, indent + 2);
        }
        Doc::Str(text) if is_block_text(text) => {
            // Literal block: `|` keeps one final newline, `|-` none.
            out.push_str(if text.ends_with('\n') {
                " |\n"
            } else {
                " |-\n"
            });
            for line in text.trim_end_matches('\n').split('\n') {
                if !line.is_empty() {
                    pad(out, indent + 2);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// Multi-line text that a literal block keeps exactly: no leading space on the first line
/// (it would be read as indentation), no trailing spaces, no carriage return or tab, at most
/// one final newline.
fn is_block_text(text: &str) -> bool {
    text.contains('\n')
        && !text.starts_with(' ')
        && !text.ends_with("\n\n")
        && !text.contains(['\r', '\t'])
        && !text.lines().any(|line| line.ends_with(' '))
}

fn inline(value: &Doc) -> String {
    match value {
        Doc::Null => "null".to_owned(),
        Doc::Bool(b) => b.to_string(),
        Doc::Int(i) => i.to_string(),
        Doc::Float(f) => float_text(*f),
        Doc::Str(text) => yaml_string(text),
        Doc::List(_) => "[]".to_owned(),
        Doc::Map(_) => "{}".to_owned(),
    }
}

fn float_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

/// Plain when YAML 1.1 and 1.2 both read it back as this same string, double-quoted (JSON
/// escapes, which YAML accepts) otherwise.
fn yaml_string(text: &str) -> String {
    const WORDS: [&str; 13] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "<<", "=", "-",
    ];
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        && text.as_bytes()[0].is_ascii_alphabetic()
        && !WORDS.contains(&text.to_ascii_lowercase().as_str());
    if plain {
        text.to_owned()
    } else {
        json_string(text)
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn write_json(out: &mut String, value: &Doc, indent: usize) {
    match value {
        Doc::Map(entries) if !entries.is_empty() => {
            out.push_str("{\n");
            for (index, (key, item)) in entries.iter().enumerate() {
                pad(out, indent + 2);
                let _ = write!(out, "{}: ", json_string(key));
                write_json(out, item, indent + 2);
                out.push_str(if index + 1 < entries.len() {
                    ",\n"
                } else {
                    "\n"
                });
            }
            pad(out, indent);
            out.push('}');
        }
        Doc::List(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (index, item) in items.iter().enumerate() {
                pad(out, indent + 2);
                write_json(out, item, indent + 2);
                out.push_str(if index + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push(']');
        }
        Doc::Str(text) => out.push_str(&json_string(text)),
        scalar => out.push_str(&inline(scalar)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_their_order_and_lists_of_maps_start_on_the_dash() {
        let doc = Doc::map([
            ("apiVersion", Doc::str("v1")),
            ("kind", Doc::str("Service")),
            (
                "ports",
                Doc::list([Doc::map([
                    ("name", Doc::str("http")),
                    ("port", Doc::int(80)),
                ])]),
            ),
            ("empty", Doc::map(Vec::<(String, Doc)>::new())),
        ]);
        assert_eq!(
            doc.to_yaml(),
            "apiVersion: v1\nkind: Service\nports:\n  - name: http\n    port: 80\nempty: {}\n"
        );
    }

    #[test]
    fn strings_that_would_change_meaning_are_quoted() {
        for text in [
            "true", "no", "8080", "1.0", "a: b", "x #y", "", "$VAR", "<< $X >>", "*",
        ] {
            let yaml = yaml_string(text);
            assert!(yaml.starts_with('"'), "{text:?} -> {yaml}");
        }
        for text in ["fanfare", "dc1-fe1", "apps/v1", "nats.conf"] {
            assert_eq!(yaml_string(text), text);
        }
    }

    #[test]
    fn multi_line_text_becomes_a_literal_block() {
        let doc = Doc::map([("conf", Doc::str("a = 1\n\n[b]\nc = 2\n"))]);
        assert_eq!(doc.to_yaml(), "conf: |\n  a = 1\n\n  [b]\n  c = 2\n");
        let doc = Doc::map([("conf", Doc::str(" leading\nspace"))]);
        assert_eq!(doc.to_yaml(), "conf: \" leading\\nspace\"\n");
    }

    #[test]
    fn json_output_parses_back_to_the_same_values() {
        let doc = Doc::map([
            ("title", Doc::str("fanfare \"live\"")),
            (
                "panels",
                Doc::list([Doc::int(1), Doc::Float(0.5), Doc::Bool(true)]),
            ),
            ("none", Doc::Null),
        ]);
        let value: serde_json::Value = serde_json::from_str(&doc.to_json()).expect("json");
        assert_eq!(value["title"], "fanfare \"live\"");
        assert_eq!(value["panels"][1], 0.5);
        assert!(value["none"].is_null());
    }
}
