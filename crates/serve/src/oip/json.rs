//! The REST side's JSON inference request, read without building a tree of its values: every
//! list is bounded while it is read, `parameters` and `data` stay raw text (borrowed from the
//! body) until the request's own shape says what they must hold, and `data` is then read
//! element by element, stopping at the first one past the shape. A request's memory is the
//! body plus the images it carries, whatever it sends.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Most inputs or outputs a request may name (the model has one of each).
pub const MAX_TENSORS: usize = 16;
/// Most dimensions a shape may have.
pub const MAX_DIMS: usize = 8;

/// An inference request as its JSON says it.
#[derive(Deserialize)]
pub struct Request<'a> {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, borrow)]
    pub parameters: Option<&'a RawValue>,
    #[serde(deserialize_with = "bounded::<_, _, MAX_TENSORS>")]
    pub inputs: Vec<Input<'a>>,
    #[serde(default, deserialize_with = "bounded::<_, _, MAX_TENSORS>")]
    pub outputs: Vec<Output<'a>>,
}

/// One input as its JSON says it.
#[derive(Deserialize)]
pub struct Input<'a> {
    pub name: String,
    pub datatype: String,
    #[serde(deserialize_with = "bounded::<_, _, MAX_DIMS>")]
    pub shape: Vec<i64>,
    #[serde(default, borrow)]
    pub parameters: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

/// One requested output as its JSON says it.
#[derive(Deserialize)]
pub struct Output<'a> {
    pub name: String,
    #[serde(default, borrow)]
    pub parameters: Option<&'a RawValue>,
}

/// A list of at most `N` items; the error comes at item `N + 1`, before it is read.
fn bounded<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(d: D) -> Result<Vec<T>, D::Error> {
    struct Bounded<T, const N: usize>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {N} items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == N {
                    return Err(de::Error::custom(format!("more than {N} items in a list of at most {N}")));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded::<T, N>(std::marker::PhantomData))
}

/// The value of `key` in a raw `parameters` object, skipping the others without keeping them.
pub fn parameter<'a>(parameters: Option<&'a RawValue>, key: &str) -> Result<Option<&'a RawValue>, String> {
    struct Pick<'k>(&'k str);
    impl<'de, 'k> Visitor<'de> for Pick<'k> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a parameters object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                if k == self.0 && found.is_none() {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let Some(raw) = parameters else { return Ok(None) };
    let mut d = serde_json::Deserializer::from_str(raw.get());
    d.deserialize_map(Pick(key)).map_err(|e| format!("parameters: {e}"))
}

/// A parameter that must be `true` or `false`.
pub fn flag(raw: Option<&RawValue>) -> Result<Option<bool>, String> {
    match raw.map(RawValue::get) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(format!("{} is not true or false", crate::error::shown(other, 40))),
    }
}

/// A parameter that must be a count (`noun` names it in the error: "count", "byte count").
pub fn count(raw: Option<&RawValue>, noun: &str) -> Result<Option<u64>, String> {
    match raw.map(RawValue::get) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| format!("{} is not a {noun}", crate::error::shown(text, 40))),
    }
}

/// The elements of a BYTES input's `data`: base64 strings, flat or nested like its shape,
/// exactly `count` of them. They are counted first (reading stops at the first element past
/// `count`), then decoded, so a miscount is reported before any element's content.
pub fn bytes_elements(data: &RawValue, count: usize) -> Result<Vec<Vec<u8>>, String> {
    /// One pass over the elements: counting them, or decoding them into `out`.
    struct Elements<'o> {
        count: usize,
        seen: &'o mut usize,
        out: Option<&'o mut Vec<Vec<u8>>>,
    }
    impl<'de, 'o> de::DeserializeSeed<'de> for Elements<'o> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de, 'o> Visitor<'de> for Elements<'o> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("base64 strings, in nested lists like the shape")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Elements { count: self.count, seen: &mut *self.seen, out: self.out.as_deref_mut() })?.is_some() {}
            Ok(())
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
            use base64::Engine as _;
            let i = *self.seen;
            if i == self.count {
                return Err(E::custom(format!("data does not match its shape: more than {} elements", self.count)));
            }
            *self.seen += 1;
            if let Some(out) = self.out {
                out.push(
                    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| E::custom(format!("element {i}: not base64: {e}")))?,
                );
            }
            Ok(())
        }
    }
    let pass = |out: Option<&mut Vec<Vec<u8>>>| -> Result<usize, String> {
        let mut seen = 0;
        let mut d = serde_json::Deserializer::from_str(data.get());
        de::DeserializeSeed::deserialize(Elements { count, seen: &mut seen, out }, &mut d).map_err(|e| {
            // serde_json appends the position; the element errors are clearer without it.
            let text = e.to_string();
            text.split(" at line ").next().unwrap_or(&text).to_string()
        })?;
        Ok(seen)
    };
    let seen = pass(None)?;
    if seen != count {
        return Err(format!("data does not match its shape: {seen} elements, the shape says {count}"));
    }
    let mut out = Vec::with_capacity(count);
    pass(Some(&mut out))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn elements_are_read_up_to_the_shape_and_no_further() {
        assert_eq!(bytes_elements(&raw(r#"["YQ==", ["Yg=="]]"#), 2).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        let many = format!("[{}]", vec!["\"\""; 100_000].join(","));
        assert_eq!(bytes_elements(&raw(&many), 1).unwrap_err(), "data does not match its shape: more than 1 elements");
        assert!(bytes_elements(&raw(r#"["YQ=="]"#), 2).unwrap_err().contains("1 elements, the shape says 2"));
        assert!(bytes_elements(&raw("[3]"), 1).unwrap_err().contains("invalid type: integer"));
        assert!(bytes_elements(&raw(r#"["!!"]"#), 1).unwrap_err().contains("element 0: not base64"));
    }

    #[test]
    fn lists_are_bounded_while_read_and_parameters_picked_without_a_tree() {
        let inputs = format!(r#"{{"inputs": [{}]}}"#, vec![r#"{"name":"a","datatype":"BYTES","shape":[1]}"#; MAX_TENSORS + 1].join(","));
        assert!(serde_json::from_str::<Request>(&inputs).err().unwrap().to_string().contains("more than 16 items"));
        let shape = r#"{"inputs": [{"name":"a","datatype":"BYTES","shape":[1,1,1,1,1,1,1,1,1]}]}"#;
        assert!(serde_json::from_str::<Request>(shape).err().unwrap().to_string().contains("more than 8 items"));
        let p = raw(r#"{"junk": [1, [2, {"x": 3}]], "binary_data_output": true}"#);
        assert_eq!(flag(parameter(Some(&p), "binary_data_output").unwrap()), Ok(Some(true)));
        assert!(parameter(Some(&p), "absent").unwrap().is_none());
        assert!(flag(Some(&raw("3"))).unwrap_err().contains("3 is not true or false"));
        assert_eq!(count(Some(&raw("12")), "count"), Ok(Some(12)));
        assert!(count(Some(&raw("-1")), "byte count").unwrap_err().contains("is not a byte count"));
    }
}
