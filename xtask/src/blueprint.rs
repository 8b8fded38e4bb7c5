//! A parser for Soong's Blueprint language (`Android.bp`), after
//! google/blueprint's `parser` package: comments (`//`, `/* */`),
//! variable assignments (`x = ...`, `x += ...`), modules (`type { name:
//! value, ... }`, and the old `type(name = value)` form), values (strings
//! with Go escapes and backquoted raw strings, integers, `true`/`false`,
//! lists, maps, variable references, `+` concatenation). Variables are
//! resolved, so a module's properties come out as values. `select()` is
//! not supported (an error naming it).

use std::collections::BTreeMap;

/// A Blueprint value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `"text"`
    String(String),
    /// `42`, `-1`
    Int(i64),
    /// `true` / `false`
    Bool(bool),
    /// `[a, b]`
    List(Vec<Value>),
    /// `{ key: value }`
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The strings of a list value (`None` when it is not a list of strings).
    pub fn strings(&self) -> Option<Vec<&str>> {
        match self {
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// The property `key` of a map value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A module definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    /// The module type (`rust_binary`).
    pub kind: String,
    /// Its properties (a [`Value::Map`]).
    pub props: Value,
    /// 1-based line of the type name.
    pub line: usize,
}

impl Module {
    /// The `name` property.
    pub fn name(&self) -> Option<&str> {
        match self.props.get("name") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// A parse error with its line.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(char),
    PlusEq,
    Eof,
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
}

impl Lexer<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn skip_space(&mut self) -> Result<(), ParseError> {
        loop {
            match (self.s.get(self.i), self.s.get(self.i + 1)) {
                (Some(b'\n'), _) => {
                    self.line += 1;
                    self.i += 1;
                }
                (Some(c), _) if c.is_ascii_whitespace() => self.i += 1,
                (Some(b'/'), Some(b'/')) => {
                    while self.s.get(self.i).is_some_and(|&c| c != b'\n') {
                        self.i += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    self.i += 2;
                    loop {
                        match (self.s.get(self.i), self.s.get(self.i + 1)) {
                            (Some(b'*'), Some(b'/')) => {
                                self.i += 2;
                                break;
                            }
                            (Some(c), _) => {
                                if *c == b'\n' {
                                    self.line += 1;
                                }
                                self.i += 1;
                            }
                            (None, _) => return self.err("unterminated /* comment"),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn next(&mut self) -> Result<(Tok, usize), ParseError> {
        self.skip_space()?;
        let line = self.line;
        let Some(&c) = self.s.get(self.i) else {
            return Ok((Tok::Eof, line));
        };
        let tok = match c {
            b'"' => Tok::Str(self.string()?),
            b'`' => {
                let start = self.i + 1;
                let Some(len) = self.s[start..].iter().position(|&c| c == b'`') else {
                    return self.err("unterminated raw string");
                };
                let text = &self.s[start..start + len];
                self.line += text.iter().filter(|&&c| c == b'\n').count();
                self.i = start + len + 1;
                Tok::Str(String::from_utf8_lossy(text).into_owned())
            }
            b'+' if self.s.get(self.i + 1) == Some(&b'=') => {
                self.i += 2;
                Tok::PlusEq
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                self.i += 1;
                while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                    self.i += 1;
                }
                let text = String::from_utf8_lossy(&self.s[start..self.i]);
                match text.parse() {
                    Ok(n) => Tok::Int(n),
                    Err(_) => return self.err(format!("bad integer {text:?}")),
                }
            }
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|&c| c == b'_' || c.is_ascii_alphanumeric())
                {
                    self.i += 1;
                }
                Tok::Ident(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            }
            b'{' | b'}' | b'[' | b']' | b'(' | b')' | b':' | b',' | b'=' | b'+' => {
                self.i += 1;
                Tok::Punct(c as char)
            }
            other => return self.err(format!("unexpected character {:?}", other as char)),
        };
        Ok((tok, line))
    }

    /// A double-quoted string with Go's escapes.
    fn string(&mut self) -> Result<String, ParseError> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\n' => return self.err("newline in string"),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unterminated string");
                    };
                    self.i += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'\\' => b'\\',
                        b'"' => b'"',
                        b'\'' => b'\'',
                        other => {
                            return self.err(format!("unsupported escape \\{}", other as char))
                        }
                    });
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).or_else(|_| self.err("string is not UTF-8"))
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    line: usize,
    vars: BTreeMap<String, Value>,
}

impl Parser<'_> {
    fn bump(&mut self) -> Result<Tok, ParseError> {
        let (next, line) = self.lex.next()?;
        self.line = line;
        Ok(std::mem::replace(&mut self.tok, next))
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.tok == Tok::Punct(c) {
            self.bump()?;
            Ok(())
        } else {
            self.err(format!("expected {c:?}, found {:?}", self.tok))
        }
    }

    fn file(&mut self) -> Result<Vec<Module>, ParseError> {
        let mut modules = Vec::new();
        loop {
            let line = self.line;
            let name = match self.bump()? {
                Tok::Eof => return Ok(modules),
                Tok::Ident(name) => name,
                other => {
                    return self.err(format!("expected a module or assignment, found {other:?}"))
                }
            };
            match self.tok.clone() {
                Tok::Punct('=') => {
                    self.bump()?;
                    if self.vars.contains_key(&name) {
                        return self.err(format!("variable {name} already set (use +=)"));
                    }
                    let v = self.expr()?;
                    self.vars.insert(name, v);
                }
                Tok::PlusEq => {
                    self.bump()?;
                    let rhs = self.expr()?;
                    let Some(lhs) = self.vars.remove(&name) else {
                        return self.err(format!("+= to undefined variable {name}"));
                    };
                    let sum = self.add(lhs, rhs)?;
                    self.vars.insert(name, sum);
                }
                // `type { name: value, ... }`, or the old `type(name = value, ...)` form.
                Tok::Punct(open @ ('{' | '(')) => {
                    self.bump()?;
                    let props = if open == '{' {
                        self.props('}', ':')?
                    } else {
                        self.props(')', '=')?
                    };
                    modules.push(Module {
                        kind: name,
                        props,
                        line,
                    });
                }
                other => {
                    return self.err(format!(
                        "expected =, += or {{ after {name}, found {other:?}"
                    ))
                }
            }
        }
    }

    /// `name: value, ...` up to `close` (the opening token consumed).
    fn props(&mut self, close: char, sep: char) -> Result<Value, ParseError> {
        let mut props: Vec<(String, Value)> = Vec::new();
        while self.tok != Tok::Punct(close) {
            let Tok::Ident(key) = self.bump()? else {
                return self.err("expected a property name");
            };
            self.expect(sep)?;
            let v = self.expr()?;
            if props.iter().any(|(k, _)| *k == key) {
                return self.err(format!("property {key} set twice"));
            }
            props.push((key, v));
            if self.tok == Tok::Punct(',') {
                self.bump()?;
            } else if self.tok != Tok::Punct(close) {
                return self.err(format!("expected , or {close:?}, found {:?}", self.tok));
            }
        }
        self.bump()?;
        Ok(Value::Map(props))
    }

    fn expr(&mut self) -> Result<Value, ParseError> {
        let mut v = self.operand()?;
        while self.tok == Tok::Punct('+') {
            self.bump()?;
            let rhs = self.operand()?;
            v = self.add(v, rhs)?;
        }
        Ok(v)
    }

    fn add(&self, a: Value, b: Value) -> Result<Value, ParseError> {
        match (a, b) {
            (Value::String(a), Value::String(b)) => Ok(Value::String(a + &b)),
            (Value::Int(a), Value::Int(b)) => Ok(Value::Int(a.wrapping_add(b))),
            (Value::List(mut a), Value::List(b)) => {
                a.extend(b);
                Ok(Value::List(a))
            }
            (a, b) => self.err(format!("cannot add {a:?} and {b:?}")),
        }
    }

    fn operand(&mut self) -> Result<Value, ParseError> {
        match self.bump()? {
            Tok::Str(s) => Ok(Value::String(s)),
            Tok::Int(n) => Ok(Value::Int(n)),
            Tok::Ident(id) if id == "true" => Ok(Value::Bool(true)),
            Tok::Ident(id) if id == "false" => Ok(Value::Bool(false)),
            Tok::Ident(id) if id == "select" => self.err("select() is not supported"),
            Tok::Ident(id) => match self.vars.get(&id) {
                Some(v) => Ok(v.clone()),
                None => self.err(format!("undefined variable {id}")),
            },
            Tok::Punct('[') => {
                let mut items = Vec::new();
                while self.tok != Tok::Punct(']') {
                    items.push(self.expr()?);
                    if self.tok == Tok::Punct(',') {
                        self.bump()?;
                    } else if self.tok != Tok::Punct(']') {
                        return self.err(format!("expected , or ], found {:?}", self.tok));
                    }
                }
                self.bump()?;
                Ok(Value::List(items))
            }
            Tok::Punct('{') => self.props('}', ':'),
            other => self.err(format!("expected a value, found {other:?}")),
        }
    }
}

/// Parses one `Android.bp`; returns its modules in order.
pub fn parse(text: &str) -> Result<Vec<Module>, ParseError> {
    let mut p = Parser {
        lex: Lexer {
            s: text.as_bytes(),
            i: 0,
            line: 1,
        },
        tok: Tok::Eof,
        line: 1,
        vars: BTreeMap::new(),
    };
    p.bump()?;
    p.file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_variables_and_values() {
        let text = r#"
// comment
common = ["a.rs"] /* inline */
common += ["b.rs"]
rust_library {
    name: "lib" + "x",
    srcs: common,
    edition: "2021",
    n: -3,
    enabled: true,
    target: { android: { cfgs: [`raw"s`] } },
}
cc_old(name = "old\t\"q\"")
"#;
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].kind, "rust_library");
        assert_eq!(m[0].line, 5);
        assert_eq!(m[0].name(), Some("libx"));
        assert_eq!(
            m[0].props.get("srcs").unwrap().strings().unwrap(),
            ["a.rs", "b.rs"]
        );
        assert_eq!(m[0].props.get("n"), Some(&Value::Int(-3)));
        assert_eq!(m[0].props.get("enabled"), Some(&Value::Bool(true)));
        let cfgs = m[0]
            .props
            .get("target")
            .unwrap()
            .get("android")
            .unwrap()
            .get("cfgs");
        assert_eq!(
            cfgs,
            Some(&Value::List(vec![Value::String("raw\"s".into())]))
        );
        assert_eq!(m[1].name(), Some("old\t\"q\""));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, needle) in [
            ("m {\n name: \"x\"\n srcs: [] }", 3, "expected , or"),
            ("m { name: y }", 1, "undefined variable y"),
            ("x = 1\nx = 2", 2, "already set"),
            ("m { a: 1, a: 2 }", 1, "set twice"),
            ("m { a: \"x\" + 1 }", 1, "cannot add"),
            ("m { a: \"open }", 1, "unterminated string"),
            ("/* never closed", 1, "unterminated /*"),
            ("m { a: select(x) }", 1, "select()"),
            ("m { a: 1 } }", 1, "expected a module"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }
}
