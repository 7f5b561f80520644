//! What Postgres cannot store, refused before it is sent, with the field named.
//!
//! `text` and `jsonb` cannot hold a NUL character, and `jsonb` keeps numbers as
//! `numeric`, which holds at most 131,072 digits before the decimal point and 16,383
//! after. Postgres refuses such a value while it binds the parameters, before any
//! function of the extension runs, with SQLSTATE 22P05, 22021 or 22003 and a message
//! that names no field. Checked here, every client call (and so every HTTP route)
//! answers with the field at fault instead.

use serde_json::Value;

use crate::error::Error;

/// Digits `numeric` holds before the decimal point (weight ≤ 32767 groups of 4).
const MAX_INTEGER_DIGITS: i64 = 131_072;
/// Digits `numeric` holds after the decimal point (`NUMERIC_DSCALE_MAX`).
const MAX_FRACTION_DIGITS: i64 = 16_383;
/// `numeric_in` refuses an exponent at or beyond ±(INT_MAX / 2) outright.
const MAX_EXPONENT: i64 = (i32::MAX / 2) as i64;

/// Why `field` cannot be stored.
pub(crate) fn nul_message(field: &str) -> String {
    format!("{field} contains a NUL character (\\u0000), which Postgres cannot store")
}

/// Refuses text arguments Postgres cannot store (a NUL character), naming the argument:
/// [`Error::InvalidParameter`] "`field` contains a NUL character (\u0000), which Postgres
/// cannot store". Every call checks its own arguments; a caller that passes text on
/// (the server's query parameters) checks it the same way.
pub fn check_texts(fields: &[(&str, &str)]) -> Result<(), Error> {
    texts(
        "",
        fields.iter().map(|&(field, value)| (field, Some(value))),
    )
    .map_err(Error::InvalidParameter)
}

/// `Err(message)` naming the first of `fields` (absent ones pass) that holds a NUL
/// character, with `prefix` before its name ("events[3].").
pub(crate) fn texts<'a>(
    prefix: &str,
    fields: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<(), String> {
    match fields
        .into_iter()
        .find(|(_, value)| value.is_some_and(|v| v.contains('\0')))
    {
        Some((field, _)) => Err(nul_message(&format!("{prefix}{field}"))),
        None => Ok(()),
    }
}

/// `Err(message)` naming the first place in `value` that `jsonb` cannot hold: a NUL in
/// a string or a key, or a number out of `numeric`'s range. `field` names `value`.
/// The walk allocates nothing unless it finds a fault.
pub(crate) fn json(field: &str, value: &Value) -> Result<(), String> {
    match fault(value) {
        None => Ok(()),
        Some((path, Fault::Nul)) => Err(nul_message(&format!("{field}{path}"))),
        Some((path, Fault::NulKey)) => Err(format!(
            "{field}{path} has a key with a NUL character (\\u0000), which Postgres cannot store"
        )),
        Some((path, Fault::Number(n))) => {
            let shown: String = n.chars().take(40).collect();
            Err(format!(
                "{field}{path} is a number Postgres cannot store ({shown}): numeric holds at \
                 most {MAX_INTEGER_DIGITS} digits before the decimal point and \
                 {MAX_FRACTION_DIGITS} after"
            ))
        }
    }
}

enum Fault {
    Nul,
    NulKey,
    Number(String),
}

/// The first fault in `value` and its path below it (".a.b[1]"), built as it unwinds.
fn fault(value: &Value) -> Option<(String, Fault)> {
    match value {
        Value::Null | Value::Bool(_) => None,
        Value::String(s) => s.contains('\0').then(|| (String::new(), Fault::Nul)),
        Value::Number(n) => {
            (!numeric_fits(n.as_str())).then(|| (String::new(), Fault::Number(n.to_string())))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| fault(item).map(|(path, f)| (format!("[{i}]{path}"), f))),
        Value::Object(object) => object.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some((String::new(), Fault::NulKey));
            }
            fault(item).map(|(path, f)| (format!(".{key}{path}"), f))
        }),
    }
}

/// Whether the JSON number `text` (already known to be valid JSON) fits `numeric`.
pub(crate) fn numeric_fits(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], &unsigned[i + 1..]),
        None => (unsigned, "0"),
    };
    let exponent = parse_saturating(exponent);
    if exponent.abs() >= MAX_EXPONENT {
        return false;
    }
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let scale = (fraction.len() as i64 - exponent).max(0);
    if scale > MAX_FRACTION_DIGITS {
        return false;
    }
    // The position of the most significant non-zero digit (0 = units); zero has none.
    let significant = integer.trim_start_matches('0');
    let top = if !significant.is_empty() {
        significant.len() as i64 - 1 + exponent
    } else if let Some(i) = fraction.find(|c| c != '0') {
        -(i as i64) - 1 + exponent
    } else {
        return true;
    };
    top < MAX_INTEGER_DIGITS
}

/// A signed decimal exponent, clamped to ±i64::MAX / 2 instead of overflowing.
fn parse_saturating(digits: &str) -> i64 {
    let (negative, digits) = match digits.as_bytes().first() {
        Some(b'-') => (true, &digits[1..]),
        Some(b'+') => (false, &digits[1..]),
        _ => (false, digits),
    };
    let mut value: i64 = 0;
    for b in digits.bytes() {
        value = (value * 10 + i64::from(b - b'0')).min(i64::MAX / 20);
    }
    if negative {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_anywhere_is_named() {
        let payload: Value = serde_json::from_str(r#"{"a":{"b":["x","y\u0000"]}}"#).unwrap();
        assert_eq!(
            json("payload", &payload).unwrap_err(),
            "payload.a.b[1] contains a NUL character (\\u0000), which Postgres cannot store"
        );
        let key: Value = serde_json::from_str(r#"{"a":{"k\u0000":1}}"#).unwrap();
        assert!(json("metadata", &key)
            .unwrap_err()
            .starts_with("metadata.a has a key with a NUL"));
        assert_eq!(
            texts(
                "events[2].",
                [("tenant", Some("t")), ("stream", Some("a\0b"))]
            )
            .unwrap_err(),
            "events[2].stream contains a NUL character (\\u0000), which Postgres cannot store"
        );
        assert!(texts("", [("stream", None), ("tenant", Some("t"))]).is_ok());
        assert!(json("payload", &json!({"ok": "text", "n": [1, 2.5, null, true]})).is_ok());
    }

    #[test]
    fn numeric_limits_are_postgres_limits() {
        for fits in [
            "0",
            "-0",
            "1e400",
            "1e-400",
            "12345678901234567890123",
            "0.1000000000000000055511151231257827",
            "1e131071",
            "9.99e131071",
            "1e-16383",
            "0.0e5",
            "0e-16383",
            "123.456e-16380",
            "0.00001e131076",
        ] {
            assert!(numeric_fits(fits), "{fits} fits numeric");
        }
        for overflows in [
            "1e131072",
            "10e131071",
            "1e-16384",
            "0e-16384",
            "0e1073741823",
            "1e99999999999999999999999",
            "1.5e-16383",
        ] {
            assert!(!numeric_fits(overflows), "{overflows} overflows numeric");
        }
    }
}
