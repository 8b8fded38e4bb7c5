//! Typed calls by AIDL method name: arguments are parsed and marshalled,
//! and replies decoded, from the interface's own AIDL model
//! (`vmstack_aidl::source_api`), so `vmbinder call sysmgr getSystemState`
//! needs no hand-written table and follows the interface as it grows.

use std::fmt::Write as _;

use rsbinder::Parcel;
use vmstack_aidl::api::{Api, ConstValue, DeclKind, Direction, Method, TypeRef};

use crate::args::parse_i64;

/// A value read from or written to a parcel.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `void`
    Void,
    /// `int`
    Int(i32),
    /// `long`
    Long(i64),
    /// `boolean`
    Bool(bool),
    /// `String`
    Str(String),
    /// A null string, array or parcelable.
    Null,
    /// `T[]`
    Array(Vec<Value>),
    /// A structured parcelable: its name and fields in order.
    Parcelable(String, Vec<(String, Value)>),
}

/// Why a typed call cannot be made or its reply not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedError {
    /// No such method on the interface.
    #[error("{iface} has no method {name:?}; methods: {known}")]
    UnknownMethod {
        /// The interface.
        iface: String,
        /// The name asked for.
        name: String,
        /// The methods it has.
        known: String,
    },
    /// The interface is not in the AIDL this tool knows.
    #[error("no AIDL for {0}: use a numeric code with service-call arguments (call NAME CODE i32 N ...)")]
    UnknownInterface(String),
    /// Wrong number of arguments.
    #[error("{method} takes {want} argument(s) ({sig}), {got} given")]
    ArgCount {
        /// The method.
        method: String,
        /// Its signature.
        sig: String,
        /// Expected count.
        want: usize,
        /// Given count.
        got: usize,
    },
    /// An argument that is not of its declared type.
    #[error("argument {index} of {method} ({ty} {name}): {value:?} is not a valid {ty}")]
    BadArg {
        /// The method.
        method: String,
        /// 1-based.
        index: usize,
        /// Declared type.
        ty: String,
        /// Declared name.
        name: String,
        /// The word given.
        value: String,
    },
    /// A type the command line cannot provide.
    #[error("{method}: {ty} arguments cannot be given on the command line{hint}")]
    Unsupported {
        /// The method.
        method: String,
        /// The type.
        ty: String,
        /// What to use instead.
        hint: String,
    },
    /// The reply does not decode as the declared type.
    #[error("reply of {method} does not decode as {ty}: {why}")]
    BadReply {
        /// The method.
        method: String,
        /// The declared return type.
        ty: String,
        /// The parcel error.
        why: String,
    },
}

/// The interface `descriptor`'s methods, or an error naming the fix.
pub fn methods<'a>(api: &'a Api, descriptor: &str) -> Result<&'a [Method], TypedError> {
    match api.get(descriptor).map(|d| &d.kind) {
        Some(DeclKind::Interface { methods, .. }) => Ok(methods),
        _ => Err(TypedError::UnknownInterface(descriptor.to_string())),
    }
}

/// Looks a method up by name.
pub fn find_method<'a>(
    api: &'a Api,
    descriptor: &str,
    name: &str,
) -> Result<&'a Method, TypedError> {
    let ms = methods(api, descriptor)?;
    ms.iter()
        .find(|m| m.name == name)
        .ok_or_else(|| TypedError::UnknownMethod {
            iface: descriptor.to_string(),
            name: name.to_string(),
            known: ms
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn constant(api: &Api, descriptor: &str, word: &str) -> Option<i64> {
    match api.get(descriptor).map(|d| &d.kind) {
        Some(DeclKind::Interface { constants, .. }) => {
            constants.iter().find_map(|c| match &c.value {
                ConstValue::Int(v) if c.name == word => Some(*v),
                _ => None,
            })
        }
        _ => None,
    }
}

/// Parses the words for `m`'s arguments. An `int`/`long` may also be the
/// name of one of the interface's constants (`SHUTDOWN_PARAM_SHUTDOWN_ONLY`).
pub fn parse_args(
    api: &Api,
    descriptor: &str,
    m: &Method,
    words: &[String],
) -> Result<Vec<Value>, TypedError> {
    if words.len() != m.args.len() {
        return Err(TypedError::ArgCount {
            method: m.name.clone(),
            sig: m.signature(),
            want: m.args.len(),
            got: words.len(),
        });
    }
    let mut out = Vec::new();
    for (i, (a, w)) in m.args.iter().zip(words).enumerate() {
        let bad = || TypedError::BadArg {
            method: m.name.clone(),
            index: i + 1,
            ty: a.ty.to_string(),
            name: a.name.clone(),
            value: w.clone(),
        };
        if matches!(a.direction, Some(Direction::Out | Direction::InOut)) {
            return Err(TypedError::Unsupported {
                method: m.name.clone(),
                ty: format!("out {}", a.ty),
                hint: String::new(),
            });
        }
        let int = |w: &str| parse_i64(w).or_else(|| constant(api, descriptor, w));
        let v = match (a.ty.name.as_str(), a.ty.array) {
            ("int", 0) => Value::Int(int(w).and_then(|v| i32::try_from(v).ok()).ok_or_else(bad)?),
            ("long", 0) => Value::Long(int(w).ok_or_else(bad)?),
            ("boolean", 0) => Value::Bool(match w.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(bad()),
            }),
            ("String", 0) => Value::Str(w.clone()),
            ("int", 1) => Value::Array(
                w.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        int(s)
                            .and_then(|v| i32::try_from(v).ok())
                            .map(Value::Int)
                            .ok_or_else(bad)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                let iface = matches!(
                    api.get(&a.ty.name).map(|d| &d.kind),
                    Some(DeclKind::Interface { .. })
                );
                return Err(TypedError::Unsupported {
                    method: m.name.clone(),
                    ty: a.ty.to_string(),
                    hint: if iface {
                        " (to receive callbacks use `vmbinder watch`)".into()
                    } else {
                        String::new()
                    },
                });
            }
        };
        out.push(v);
    }
    Ok(out)
}

/// Writes argument values into a request parcel.
pub fn write_args(p: &mut Parcel, values: &[Value]) -> rsbinder::Result<()> {
    for v in values {
        write_value(p, v)?;
    }
    Ok(())
}

fn write_value(p: &mut Parcel, v: &Value) -> rsbinder::Result<()> {
    match v {
        Value::Void => Ok(()),
        Value::Int(i) => p.write(i),
        Value::Long(l) => p.write(l),
        Value::Bool(b) => p.write(b),
        Value::Str(s) => p.write(s),
        Value::Null => p.write(&-1i32),
        Value::Array(items) => {
            p.write(&i32::try_from(items.len()).map_err(|_| rsbinder::StatusCode::BadValue)?)?;
            items.iter().try_for_each(|i| write_value(p, i))
        }
        Value::Parcelable(..) => Err(rsbinder::StatusCode::BadType),
    }
}

/// Most nesting a reply may have (parcelables in arrays in parcelables).
const MAX_DEPTH: usize = 8;
/// Largest array a reply may announce.
const MAX_ARRAY: i32 = 1 << 16;

/// Reads a value of type `ty` (after the reply's status).
pub fn read_value(api: &Api, ty: &TypeRef, p: &mut Parcel) -> rsbinder::Result<Value> {
    read_depth(api, ty, p, 0)
}

fn read_depth(api: &Api, ty: &TypeRef, p: &mut Parcel, depth: usize) -> rsbinder::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(rsbinder::StatusCode::BadValue);
    }
    if ty.array > 0 {
        let n: i32 = p.read()?;
        if n < 0 {
            return Ok(Value::Null);
        }
        if n > MAX_ARRAY {
            return Err(rsbinder::StatusCode::BadValue);
        }
        let elem = TypeRef {
            array: ty.array - 1,
            ..ty.clone()
        };
        return (0..n)
            .map(|_| read_depth(api, &elem, p, depth + 1))
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    Ok(match ty.name.as_str() {
        "void" => Value::Void,
        "int" => Value::Int(p.read()?),
        "long" => Value::Long(p.read()?),
        "boolean" => Value::Bool(p.read()?),
        "String" => match p.read::<Option<String>>()? {
            Some(s) => Value::Str(s),
            None => Value::Null,
        },
        name => match api.get(name).map(|d| &d.kind) {
            Some(DeclKind::Parcelable { fields }) => {
                let present: i32 = p.read()?;
                if present == 0 {
                    return Ok(Value::Null);
                }
                let start = p.data_position();
                let size: i32 = p.read()?;
                let end = start
                    .checked_add(usize::try_from(size).map_err(|_| rsbinder::StatusCode::BadValue)?)
                    .filter(|e| *e <= p.data_size() && size >= 4)
                    .ok_or(rsbinder::StatusCode::BadValue)?;
                let mut out = Vec::new();
                for f in fields {
                    if p.data_position() >= end {
                        break;
                    }
                    out.push((f.name.clone(), read_depth(api, &f.ty, p, depth + 1)?));
                }
                p.set_data_position(end);
                Value::Parcelable(name.rsplit('.').next().unwrap_or(name).to_string(), out)
            }
            _ => return Err(rsbinder::StatusCode::BadType),
        },
    })
}

/// Decodes a typed reply: the status, then the return value.
pub fn read_reply(
    api: &Api,
    m: &Method,
    p: &mut Parcel,
) -> Result<Result<Value, rsbinder::Status>, TypedError> {
    let bad = |e: rsbinder::StatusCode| TypedError::BadReply {
        method: m.name.clone(),
        ty: m.ret.to_string(),
        why: format!("{e:?}"),
    };
    let status: rsbinder::Status = p.read().map_err(bad)?;
    if !status.is_ok() {
        return Ok(Err(status));
    }
    read_value(api, &m.ret, p).map(Ok).map_err(bad)
}

/// A value as the CLI prints it (parcelables one field per line).
pub fn display(v: &Value) -> String {
    let mut s = String::new();
    fmt_value(&mut s, v, 0);
    s
}

fn fmt_value(s: &mut String, v: &Value, indent: usize) {
    let pad = "  ".repeat(indent + 1);
    match v {
        Value::Void => s.push_str("(void)"),
        Value::Int(i) => {
            let _ = write!(s, "{i}");
        }
        Value::Long(l) => {
            let _ = write!(s, "{l}");
        }
        Value::Bool(b) => {
            let _ = write!(s, "{b}");
        }
        Value::Str(t) => {
            let _ = write!(s, "{t:?}");
        }
        Value::Null => s.push_str("null"),
        Value::Array(items) if items.iter().all(|i| !matches!(i, Value::Parcelable(..))) => {
            s.push('[');
            for (n, i) in items.iter().enumerate() {
                if n > 0 {
                    s.push_str(", ");
                }
                fmt_value(s, i, indent);
            }
            s.push(']');
        }
        Value::Array(items) => {
            s.push('[');
            for i in items {
                let _ = write!(s, "\n{pad}");
                fmt_value(s, i, indent + 1);
            }
            let _ = write!(s, "\n{}]", "  ".repeat(indent));
        }
        Value::Parcelable(name, fields) => {
            let _ = write!(s, "{name} {{");
            for (f, v) in fields {
                let _ = write!(s, "\n{pad}{f}: ");
                fmt_value(s, v, indent + 1);
            }
            let _ = write!(s, "\n{}}}", "  ".repeat(indent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmstack_aidl::vmstack::sysmgr::GuestState::GuestState;
    use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

    const SM: &str = "vmstack.sysmgr.ISystemManager";

    fn api() -> Api {
        vmstack_aidl::source_api().expect("the crate's AIDL parses")
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn decodes_what_the_generated_code_writes() {
        let api = api();
        let s = SystemState {
            state: 2,
            description: "shutdown-prepare".into(),
            ignitionOn: false,
            vehicleInUse: true,
            nowMs: 1234,
            inputCount: 7,
            guests: vec![
                GuestState {
                    name: "android".into(),
                    role: "android".into(),
                    apPowerStateReq: 1,
                    apPowerStateReqParam: 3,
                    hasApPowerStateReq: true,
                    ..Default::default()
                },
                GuestState {
                    name: "cluster".into(),
                    ..Default::default()
                },
            ],
        };
        let mut p = Parcel::new();
        p.write(&rsbinder::Status::from(rsbinder::StatusCode::Ok))
            .expect("status");
        p.write(&s).expect("write");
        p.set_data_position(0);
        let m = find_method(&api, SM, "getSystemState").expect("method");
        let v = read_reply(&api, m, &mut p).expect("decodes").expect("ok");
        let text = display(&v);
        assert!(
            text.starts_with("SystemState {\n  state: 2\n  description: \"shutdown-prepare\""),
            "{text}"
        );
        assert!(text.contains("name: \"cluster\""), "{text}");
        assert!(text.contains("apPowerStateReqParam: 3"), "{text}");
        assert_eq!(p.data_avail(), 0);
    }

    #[test]
    fn arguments_follow_the_aidl() {
        let api = api();
        let m = find_method(&api, SM, "reportApPowerState").expect("method");
        assert_eq!(
            parse_args(&api, SM, m, &words("4 5000")),
            Ok(vec![Value::Int(4), Value::Int(5000)])
        );
        let m = find_method(&api, SM, "requestShutdown").expect("method");
        assert_eq!(
            parse_args(&api, SM, m, &words("SHUTDOWN_PARAM_SHUTDOWN_ONLY")),
            Ok(vec![Value::Int(3)])
        );
        let e = parse_args(&api, SM, m, &words("soon")).expect_err("not an int");
        assert!(
            e.to_string()
                .contains("argument 1 of requestShutdown (int param): \"soon\""),
            "{e}"
        );
        let e = parse_args(&api, SM, m, &words("1 2")).expect_err("count");
        assert!(e.to_string().contains("takes 1 argument"), "{e}");
        let m = find_method(&api, SM, "registerListener").expect("method");
        let e = parse_args(&api, SM, m, &words("x")).expect_err("interface");
        assert!(e.to_string().contains("vmbinder watch"), "{e}");
        let e = find_method(&api, SM, "getSystemStat").expect_err("unknown");
        assert!(e.to_string().contains("getSystemState"), "{e}");
    }

    #[test]
    fn hostile_replies_are_errors_not_panics() {
        let api = api();
        let m = find_method(&api, SM, "getSystemState").expect("method");
        for words in [
            vec![0i32, 1, 1 << 30], // size beyond the parcel
            vec![0, 1, 12, 0],      // size beyond the data
            vec![0, 1, -5],         // negative size
        ] {
            let mut p = Parcel::new();
            for w in &words {
                p.write(w).expect("write");
            }
            p.set_data_position(0);
            assert!(
                !matches!(read_reply(&api, m, &mut p), Ok(Ok(_))),
                "{words:?}"
            );
        }
    }
}
