//! Strict config files: every key is known, every value has the expected JSON type. Upstream
//! swallows unknown constructor arguments (`**ignorekwargs`, spec 12.7), so a typo such as
//! `pad-mode` would silently decode with the default; here it is an error naming the key and
//! the closest known one.

use crate::error::{Error, Result};
use serde_json::Value;

/// The JSON type a config value must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A non-negative integer.
    UInt,
    /// Any number (an integer counts).
    Number,
    Bool,
    Str,
    UIntList,
    StrList,
    /// A non-negative integer or null.
    UIntOrNull,
    /// A number or null.
    NumberOrNull,
    /// A list of numbers, or null.
    NumberListOrNull,
    /// A non-negative integer or a list of them (upstream's `cast_tuple` arguments).
    UIntOrUIntList,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::UInt => "a non-negative integer",
            Kind::Number => "a number",
            Kind::Bool => "true or false",
            Kind::Str => "a string",
            Kind::UIntList => "a list of non-negative integers",
            Kind::StrList => "a list of strings",
            Kind::UIntOrNull => "a non-negative integer or null",
            Kind::NumberOrNull => "a number or null",
            Kind::NumberListOrNull => "a list of numbers or null",
            Kind::UIntOrUIntList => "a non-negative integer or a list of them",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        let list = |f: fn(&Value) -> bool| v.as_array().is_some_and(|a| a.iter().all(f));
        match self {
            Kind::UInt => v.is_u64(),
            Kind::Number => v.is_number(),
            Kind::Bool => v.is_boolean(),
            Kind::Str => v.is_string(),
            Kind::UIntList => list(Value::is_u64),
            Kind::StrList => list(Value::is_string),
            Kind::UIntOrNull => v.is_null() || v.is_u64(),
            Kind::NumberOrNull => v.is_null() || v.is_number(),
            Kind::NumberListOrNull => v.is_null() || list(Value::is_number),
            Kind::UIntOrUIntList => v.is_u64() || list(Value::is_u64),
        }
    }
}

/// What a value is, for messages: `the string "0.5"`, `null`, `the number -3`.
fn found(v: &Value) -> String {
    let text = v.to_string();
    let text = if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    };
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => format!("the boolean {text}"),
        Value::Number(_) => format!("the number {text}"),
        Value::String(_) => format!("the string {text}"),
        Value::Array(_) => format!("the list {text}"),
        Value::Object(_) => "an object".into(),
    }
}

/// Levenshtein distance, for the "did you mean" hint (key names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The known key closest to `key` (ties: the first in `known`).
pub fn closest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| s.to_lowercase().replace('-', "_");
    known.into_iter().min_by_key(|k| edit_distance(&norm(key), &norm(k)))
}

/// Checks that `v` is an object whose keys are all in `keys` (or start with `_` when
/// `underscore_ok`: diffusers' bookkeeping keys) and whose values have the listed kinds.
/// `what` names the config in messages (e.g. `diffusers config`).
pub fn check_keys(v: &Value, keys: &[(&str, Kind)], underscore_ok: bool, what: &str) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidConfig(format!("{what}: {m}")));
    let Some(obj) = v.as_object() else {
        return bad(format!("expected a JSON object, found {}", found(v)));
    };
    for (key, value) in obj {
        if underscore_ok && key.starts_with('_') {
            continue;
        }
        match keys.iter().find(|(k, _)| k == key) {
            Some((_, kind)) if kind.accepts(value) => {}
            Some((_, kind)) => {
                return bad(format!("key `{key}`: expected {}, found {}", kind.describe(), found(value)));
            }
            None => {
                let hint = closest(key, keys.iter().map(|(k, _)| *k))
                    .filter(|k| edit_distance(&key.to_lowercase().replace('-', "_"), k) <= 2 + key.len() / 4)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                return bad(format!("unknown key `{key}`{hint}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[(&str, Kind)] =
        &[("pad_mode", Kind::Str), ("scaling_factor", Kind::Number), ("ch", Kind::UInt)];

    fn check(json: &str) -> String {
        let v: Value = serde_json::from_str(json).unwrap();
        match check_keys(&v, KEYS, true, "cfg") {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_key_names_the_closest() {
        assert!(
            check(r#"{"pad-mode": "first"}"#).contains("unknown key `pad-mode` (did you mean `pad_mode`?)")
        );
        assert!(check(r#"{"scalingfactor": 1}"#).contains("did you mean `scaling_factor`"));
        assert_eq!(check(r#"{"_class_name": "x", "ch": 3}"#), "ok");
        // No hint when nothing is close.
        assert!(
            check(r#"{"dropout": 0}"#).ends_with("unknown key `dropout`"),
            "{}",
            check(r#"{"dropout": 0}"#)
        );
    }

    #[test]
    fn wrong_type_names_key_expected_and_found() {
        let m = check(r#"{"scaling_factor": "0.5"}"#);
        assert!(m.contains("key `scaling_factor`: expected a number, found the string \"0.5\""), "{m}");
        assert!(check(r#"{"scaling_factor": null}"#).contains("found null"));
        assert!(check(r#"{"scaling_factor": true}"#).contains("found the boolean true"));
        assert!(check(r#"{"ch": -3}"#).contains("expected a non-negative integer, found the number -3"));
        assert!(check(r#"[1]"#).contains("expected a JSON object"));
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
