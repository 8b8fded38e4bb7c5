//! Arguments of `vmbinder call`, in the syntax of Android's `service call`
//! (`i32 N`, `i64 N`, `f N`, `d N`, `s16 STR`, `null`), and the hex dump it
//! prints a reply as.

use std::fmt::Write as _;

/// One typed argument of a raw call.
#[derive(Debug, Clone, PartialEq)]
pub enum RawArg {
    /// `i32 N`
    I32(i32),
    /// `i64 N`
    I64(i64),
    /// `f N`
    F32(f32),
    /// `d N`
    F64(f64),
    /// `s16 STR` (a UTF-16 string, as AIDL's `String`)
    S16(String),
    /// `null` (a null string / object: `i32 -1`)
    Null,
}

/// A bad `service call` argument list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// The type word is not one `service call` knows.
    #[error("unknown argument type {0:?}: use i32 N, i64 N, f N, d N, s16 STR or null")]
    UnknownType(String),
    /// A type word without its value.
    #[error("{0} needs a value (e.g. `{0} 1`)")]
    MissingValue(String),
    /// A value that does not parse as its type.
    #[error("{kind} {value:?}: not a valid {kind}")]
    BadValue {
        /// `i32`, ...
        kind: String,
        /// The word given.
        value: String,
    },
}

/// Parses `service call` arguments.
pub fn parse_raw_args(words: &[String]) -> Result<Vec<RawArg>, ArgError> {
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(kind) = it.next() {
        if kind == "null" {
            out.push(RawArg::Null);
            continue;
        }
        if !matches!(kind.as_str(), "i32" | "i64" | "f" | "d" | "s16") {
            return Err(ArgError::UnknownType(kind.clone()));
        }
        let value = it
            .next()
            .ok_or_else(|| ArgError::MissingValue(kind.clone()))?;
        let bad = || ArgError::BadValue {
            kind: kind.clone(),
            value: value.clone(),
        };
        out.push(match kind.as_str() {
            "i32" => RawArg::I32(
                parse_i64(value)
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(bad)?,
            ),
            "i64" => RawArg::I64(parse_i64(value).ok_or_else(bad)?),
            "f" => RawArg::F32(value.parse().map_err(|_| bad())?),
            "d" => RawArg::F64(value.parse().map_err(|_| bad())?),
            _ => RawArg::S16(value.clone()),
        });
    }
    Ok(out)
}

/// Decimal (with sign) or `0x` hex.
pub fn parse_i64(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(h) => i64::from_str_radix(h, 16).ok()?,
        None => body.parse::<i64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// A reply's words as Android's `service call` prints them:
///
/// ```text
/// Result: Parcel(
///   0x00000000: 00000000 00000002 '........')
/// ```
pub fn format_reply(words: &[u32]) -> String {
    let mut s = String::from("Result: Parcel(");
    if words.is_empty() {
        s.push_str("NULL)");
        return s;
    }
    for (row, chunk) in words.chunks(4).enumerate() {
        let _ = write!(s, "\n  0x{:08x}: ", row * 16);
        let hex: Vec<String> = chunk.iter().map(|w| format!("{w:08x}")).collect();
        let _ = write!(s, "{:<35} '", hex.join(" "));
        for w in chunk {
            for b in w.to_le_bytes() {
                s.push(if b.is_ascii_graphic() { b as char } else { '.' });
            }
        }
        s.push('\'');
    }
    s.push(')');
    s
}

/// `s` split at white space: a command line's words (for the tests).
#[cfg(test)]
pub(crate) fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::words as w;
    use super::*;

    #[test]
    fn parses_service_call_syntax() {
        assert_eq!(
            parse_raw_args(&w("i32 5 i64 -0x10 s16 hello null f 1.5 d 2")),
            Ok(vec![
                RawArg::I32(5),
                RawArg::I64(-16),
                RawArg::S16("hello".into()),
                RawArg::Null,
                RawArg::F32(1.5),
                RawArg::F64(2.0)
            ])
        );
    }

    #[test]
    fn bad_arguments_say_what_to_do() {
        assert_eq!(
            parse_raw_args(&w("int 5")),
            Err(ArgError::UnknownType("int".into()))
        );
        assert_eq!(
            parse_raw_args(&w("i32")),
            Err(ArgError::MissingValue("i32".into()))
        );
        assert!(matches!(
            parse_raw_args(&w("i32 x")),
            Err(ArgError::BadValue { .. })
        ));
        assert!(matches!(
            parse_raw_args(&w("i32 4294967296")),
            Err(ArgError::BadValue { .. })
        ));
        assert!(ArgError::UnknownType("x".into())
            .to_string()
            .contains("i32 N"));
    }

    #[test]
    fn formats_like_service_call() {
        assert_eq!(format_reply(&[]), "Result: Parcel(NULL)");
        let s = format_reply(&[0, 0x0061_0064]);
        assert_eq!(
            s,
            "Result: Parcel(\n  0x00000000: 00000000 00610064                   '....d.a.')"
        );
    }
}
