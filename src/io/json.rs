//! JSON that refuses an object naming a key twice, at any depth. serde_json keeps the last of
//! duplicate keys, so `{"ch": 64, "ch": 128}` would configure a model that another reader of
//! the same file (one keeping the first) sees differently.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parses `text` as JSON; an error names the duplicated key and where it is
/// (`key `ch` appears twice in `config``).
pub fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Strict { at: String::new() }.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Deserializes one value (refusing duplicate keys in it) found at `at`, for a parser of its own
/// that reads the enclosing object.
pub(crate) fn value_at(at: &str) -> Strict {
    Strict { at: crate::error::escape(at).into_owned() }
}

/// A value at path `at` (empty: the document).
pub(crate) struct Strict {
    at: String,
}

impl Strict {
    fn child(&self, key: &str) -> Strict {
        let key = crate::error::escape(key);
        Strict { at: if self.at.is_empty() { key.into_owned() } else { format!("{}.{key}", self.at) } }
    }

    fn item(&self, i: usize) -> Strict {
        Strict { at: format!("{}[{i}]", self.at) }
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("a non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = a.next_element_seed(self.item(items.len()))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(k) = a.next_key::<String>()? {
            if map.contains_key(&k) {
                let key = crate::error::escape(&k);
                return Err(match self.at.is_empty() {
                    true => A::Error::custom(format!("key `{key}` appears twice")),
                    false => A::Error::custom(format!("key `{key}` appears twice in `{}`", self.at)),
                });
            }
            let v = a.next_value_seed(self.child(&k))?;
            map.insert(k, v);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_serde_json_without_duplicates() {
        let text =
            r#"{"a": [1, -2, 3.5, "x", null, true], "b": {"c": {"d": 1e300}}, "e": 18446744073709551615}"#;
        assert_eq!(parse_strict(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
        assert!(parse_strict("{} x").is_err(), "trailing characters");
        assert!(parse_strict("[1,").is_err());
    }

    #[test]
    fn duplicate_keys_are_errors_at_any_depth() {
        let e = parse_strict(r#"{"ch": 64, "ch": 128}"#).unwrap_err().to_string();
        assert!(e.contains("key `ch` appears twice"), "{e}");
        let e = parse_strict(r#"{"config": {"ch": 64, "x": [{"k": 1, "k": 2}]}}"#).unwrap_err().to_string();
        assert!(e.contains("key `k` appears twice in `config.x[0]`"), "{e}");
        // The same key in different objects is fine.
        assert!(parse_strict(r#"{"a": {"k": 1}, "b": {"k": 2}, "k": 3}"#).is_ok());
    }
}
