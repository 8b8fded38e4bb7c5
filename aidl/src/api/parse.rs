//! A parser for the AIDL subset `aidl/` uses (Android 10's syntax):
//! `package`, `import`, one structured `parcelable` or `[oneway]
//! interface` per file, `const` integral/boolean/string constants with
//! literal values, methods with `in`/`out`/`inout` arguments, annotations
//! such as `@nullable`, arrays and `List<T>`. Anything else is an error
//! naming the line, so the API check never silently skips a construct.

use std::collections::HashMap;

use super::{
    AidlParseError, Arg, ConstValue, Constant, Decl, DeclKind, Direction, Field, Method, TypeRef,
};

/// Types that are never package-qualified.
const BUILTIN: &[&str] = &[
    "void",
    "boolean",
    "byte",
    "char",
    "int",
    "long",
    "float",
    "double",
    "String",
    "CharSequence",
    "List",
    "Map",
    "IBinder",
    "FileDescriptor",
    "ParcelFileDescriptor",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Int(i64),
    Str(String),
    Punct(char),
}

struct Lexer<'a> {
    file: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

fn lex(file: &str, text: &str) -> Result<Vec<(Tok, usize)>, AidlParseError> {
    let err = |line: usize, message: String| AidlParseError {
        file: file.to_string(),
        line,
        message,
    };
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let start = line;
            i += 2;
            loop {
                if i + 1 >= b.len() {
                    return Err(err(start, "unterminated comment".into()));
                }
                if b[i] == b'*' && b[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push((Tok::Ident(text[s..i].to_string()), line));
        } else if c.is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let lit = &text[s..i];
            let v = parse_int(lit).ok_or_else(|| err(line, format!("bad number {lit:?}")))?;
            out.push((Tok::Int(v), line));
        } else if c == b'"' {
            let s = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' || b[i] == b'\n' {
                    return Err(err(
                        line,
                        "escapes and newlines in strings are not supported".into(),
                    ));
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(err(line, "unterminated string".into()));
            }
            out.push((Tok::Str(text[s..i].to_string()), line));
            i += 1;
        } else if b"{}();,=<>[]@-+*/%&|^~!?:".contains(&c) {
            out.push((Tok::Punct(c as char), line));
            i += 1;
        } else {
            return Err(err(line, format!("unexpected character {:?}", c as char)));
        }
    }
    Ok(out)
}

/// Decimal or `0x` hex; an `l`/`L` suffix is allowed. Hex literals wrap
/// like AIDL's (a 32-bit `0xFFFFFFFF` is -1 for an `int`, see the caller).
fn parse_int(lit: &str) -> Option<i64> {
    let lit = lit.trim_end_matches(['l', 'L']);
    if let Some(hex) = lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok().map(|v| v as i64)
    } else {
        lit.parse::<i64>().ok()
    }
}

impl Lexer<'_> {
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| t.1)
            .unwrap_or(1)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, AidlParseError> {
        Err(AidlParseError {
            file: self.file.to_string(),
            line: self.line(),
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn next(&mut self) -> Result<Tok, AidlParseError> {
        match self.toks.get(self.pos) {
            Some((t, _)) => {
                self.pos += 1;
                Ok(t.clone())
            }
            None => self.err("unexpected end of file"),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == w)
    }

    fn punct(&mut self, c: char) -> Result<(), AidlParseError> {
        match self.next()? {
            Tok::Punct(p) if p == c => Ok(()),
            t => self.err(format!("expected '{c}', found {t:?}")),
        }
    }

    fn ident(&mut self) -> Result<String, AidlParseError> {
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            t => self.err(format!("expected a name, found {t:?}")),
        }
    }

    fn word(&mut self, w: &str) -> Result<(), AidlParseError> {
        let s = self.ident()?;
        if s == w {
            Ok(())
        } else {
            self.err(format!("expected '{w}', found '{s}'"))
        }
    }
}

struct Resolver {
    package: String,
    imports: HashMap<String, String>,
}

impl Resolver {
    fn qualify(&self, name: &str) -> String {
        if name.contains('.') || BUILTIN.contains(&name) {
            return name.to_string();
        }
        match self.imports.get(name) {
            Some(q) => q.clone(),
            None => format!("{}.{}", self.package, name),
        }
    }
}

fn annotations(lx: &mut Lexer<'_>) -> Result<Vec<String>, AidlParseError> {
    let mut out = Vec::new();
    while lx.is_punct('@') {
        lx.next()?;
        let name = lx.ident()?;
        if lx.is_punct('(') {
            return lx.err(format!(
                "annotation parameters (@{name}(...)) are not supported"
            ));
        }
        if matches!(name.as_str(), "VintfStability" | "Backing" | "FixedSize") {
            return lx.err(format!("@{name} is not Android 10 AIDL"));
        }
        out.push(name);
    }
    Ok(out)
}

fn type_ref(lx: &mut Lexer<'_>, r: &Resolver) -> Result<TypeRef, AidlParseError> {
    let annotations = annotations(lx)?;
    let name = r.qualify(&lx.ident()?);
    let mut generics = Vec::new();
    if lx.is_punct('<') {
        lx.next()?;
        loop {
            generics.push(type_ref(lx, r)?);
            if lx.is_punct(',') {
                lx.next()?;
                continue;
            }
            lx.punct('>')?;
            break;
        }
    }
    let mut array = 0;
    while lx.is_punct('[') {
        lx.next()?;
        lx.punct(']')?;
        array += 1;
    }
    Ok(TypeRef {
        annotations,
        name,
        generics,
        array,
    })
}

fn const_value(lx: &mut Lexer<'_>, ty: &TypeRef) -> Result<ConstValue, AidlParseError> {
    let negative = if lx.is_punct('-') {
        lx.next()?;
        true
    } else {
        false
    };
    let v = match (lx.next()?, ty.name.as_str(), ty.array) {
        (Tok::Int(v), "int", 0) => {
            let v = if v > i64::from(i32::MAX) && v <= i64::from(u32::MAX) && !negative {
                i64::from(v as u32 as i32)
            } else {
                v
            };
            let v = if negative { -v } else { v };
            if i32::try_from(v).is_err() {
                return lx.err(format!("{v} does not fit an int"));
            }
            ConstValue::Int(v)
        }
        (Tok::Int(v), "long" | "byte", 0) => ConstValue::Int(if negative { -v } else { v }),
        (Tok::Ident(b), "boolean", 0) if !negative && (b == "true" || b == "false") => {
            ConstValue::Bool(b == "true")
        }
        (Tok::Str(s), "String", 0) if !negative => ConstValue::Str(s),
        (t, ty, _) => {
            return lx.err(format!(
                "constant value {t:?} for type {ty} is not supported (literals only)"
            ))
        }
    };
    if !lx.is_punct(';') {
        return lx.err("constant expressions are not supported: use a literal");
    }
    Ok(v)
}

fn method(
    lx: &mut Lexer<'_>,
    r: &Resolver,
    oneway_iface: bool,
    code: u32,
) -> Result<Method, AidlParseError> {
    let mut oneway = oneway_iface;
    if lx.is_word("oneway") {
        lx.next()?;
        oneway = true;
    }
    let ret = type_ref(lx, r)?;
    let name = lx.ident()?;
    lx.punct('(')?;
    let mut args = Vec::new();
    while !lx.is_punct(')') {
        let direction = match lx.peek() {
            Some(Tok::Ident(w)) if w == "in" => Some(Direction::In),
            Some(Tok::Ident(w)) if w == "out" => Some(Direction::Out),
            Some(Tok::Ident(w)) if w == "inout" => Some(Direction::InOut),
            _ => None,
        };
        if direction.is_some() {
            lx.next()?;
        }
        let ty = type_ref(lx, r)?;
        let arg = lx.ident()?;
        args.push(Arg {
            direction,
            ty,
            name: arg,
        });
        if lx.is_punct(',') {
            lx.next()?;
        } else if !lx.is_punct(')') {
            return lx.err("expected ',' or ')' in the argument list");
        }
    }
    lx.punct(')')?;
    if lx.is_punct('=') {
        return lx
            .err("explicit transaction ids are not used here: codes follow declaration order");
    }
    lx.punct(';')?;
    if oneway && ret.name != "void" {
        return lx.err(format!("oneway method {name} must return void"));
    }
    Ok(Method {
        oneway,
        ret,
        name,
        args,
        code,
    })
}

/// Parses one `.aidl` file holding one declaration.
pub fn parse_file(file: &str, text: &str) -> Result<Decl, AidlParseError> {
    let toks = lex(file, text)?;
    let mut lx = Lexer { file, toks, pos: 0 };
    lx.word("package")?;
    let package = lx.ident()?;
    lx.punct(';')?;
    let mut imports = HashMap::new();
    while lx.is_word("import") {
        lx.next()?;
        let q = lx.ident()?;
        lx.punct(';')?;
        let simple = q.rsplit('.').next().unwrap_or(&q).to_string();
        imports.insert(simple, q);
    }
    let r = Resolver { package, imports };
    let _ = annotations(&mut lx)?;
    let oneway = if lx.is_word("oneway") {
        lx.next()?;
        true
    } else {
        false
    };
    let what = lx.ident()?;
    let name = lx.ident()?;
    lx.punct('{')?;
    let kind = match what.as_str() {
        "interface" => {
            let mut methods = Vec::new();
            let mut constants = Vec::new();
            while !lx.is_punct('}') {
                if lx.is_word("const") {
                    lx.next()?;
                    let ty = type_ref(&mut lx, &r)?;
                    let cname = lx.ident()?;
                    lx.punct('=')?;
                    let value = const_value(&mut lx, &ty)?;
                    lx.punct(';')?;
                    constants.push(Constant {
                        ty,
                        name: cname,
                        value,
                    });
                } else {
                    let code = 1 + methods.len() as u32;
                    methods.push(method(&mut lx, &r, oneway, code)?);
                }
            }
            DeclKind::Interface { methods, constants }
        }
        "parcelable" if !oneway => {
            let mut fields = Vec::new();
            while !lx.is_punct('}') {
                if lx.is_word("const") {
                    return lx.err("constants in parcelables are not Android 10 AIDL");
                }
                let ty = type_ref(&mut lx, &r)?;
                let fname = lx.ident()?;
                let default = if lx.is_punct('=') {
                    lx.next()?;
                    Some(const_value(&mut lx, &ty)?)
                } else {
                    None
                };
                lx.punct(';')?;
                fields.push(Field {
                    ty,
                    name: fname,
                    default,
                });
            }
            DeclKind::Parcelable { fields }
        }
        other => {
            return lx.err(format!(
                "'{other}' declarations are not supported (interface or parcelable)"
            ))
        }
    };
    lx.punct('}')?;
    if lx.peek().is_some() {
        return lx.err("one declaration per file");
    }
    Ok(Decl {
        package: r.package,
        name,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_interface_with_constants_and_directions() {
        let d = parse_file(
            "I.aidl",
            "package a.b; import c.P;\n/* doc */ interface I {\n const int X = 0x11410A00; // c\n \
             const int N = -2; const String S = \"s\";\n P get(in P p, out int[] o);\n oneway void f(); }",
        )
        .expect("parses");
        let DeclKind::Interface { methods, constants } = d.kind else {
            panic!("not an interface")
        };
        assert_eq!(constants[0].value, ConstValue::Int(289_475_072));
        assert_eq!(constants[1].value, ConstValue::Int(-2));
        assert_eq!(methods[0].ret.name, "c.P");
        assert_eq!(methods[0].args[0].direction, Some(Direction::In));
        assert_eq!(methods[0].args[1].ty.to_string(), "int[]");
        assert_eq!((methods[1].code, methods[1].oneway), (2, true));
    }

    #[test]
    fn hex_ints_wrap_like_aidl() {
        let d = parse_file(
            "I.aidl",
            "package p; interface I { const int M = 0xFFFFFFFF; }",
        )
        .expect("parses");
        let DeclKind::Interface { constants, .. } = d.kind else {
            panic!()
        };
        assert_eq!(constants[0].value, ConstValue::Int(-1));
    }

    #[test]
    fn unsupported_constructs_name_the_line() {
        for (src, needle) in [
            ("package p;\nunion U { int a; }", "'union'"),
            ("package p;\n@VintfStability interface I {}", "Android 10"),
            (
                "package p; interface I {\n const int A = 1 + 2; }",
                "literal",
            ),
            (
                "package p; interface I {\n void f() = 5; }",
                "explicit transaction",
            ),
            (
                "package p; interface I {\n oneway int f(); }",
                "must return void",
            ),
            ("package p; interface I {\n void f(;", "expected a name"),
        ] {
            let e = parse_file("x.aidl", src).expect_err(src);
            assert!(e.to_string().contains(needle), "{src}: {e}");
            assert!(e.to_string().starts_with("x.aidl:2:"), "{e}");
        }
    }
}
