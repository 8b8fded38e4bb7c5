//! Stable-AIDL habits for `aidl/`: an API model of the AIDL subset this
//! project uses, the AOSP `aidl --dumpapi` text of it, the frozen dumps'
//! hash, and the compatibility check between two versions (what AOSP's
//! `aidl --checkapi` enforces for a frozen interface).
//!
//! Layout (like AOSP's `aidl_api/<module>/`):
//!
//! ```text
//! aidl/api/vmstack.sysmgr/1/...        frozen version 1 (dump + .hash)
//! aidl/api/vmstack.sysmgr/current/...  the dump of today's sources
//! ```
//!
//! The sources' dump must equal `current` and must be a compatible
//! extension of the newest frozen version. `cargo run -p vmstack-aidl
//! --bin aidl-api -- update` rewrites `current`; `freeze` adds version
//! N+1.

pub mod check;
pub mod dump;
pub mod module;
pub mod parse;

use std::collections::BTreeMap;
use std::fmt;

/// An error in an AIDL file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct AidlParseError {
    /// The file (as given to the parser).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A parameter or field direction as written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `in`
    In,
    /// `out`
    Out,
    /// `inout`
    InOut,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::InOut => "inout",
        })
    }
}

/// A type as the dump writes it: annotations, the (qualified) name,
/// generic arguments and array dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRef {
    /// Annotations such as `@nullable`, without the `@`.
    pub annotations: Vec<String>,
    /// `int`, `String`, `vmstack.sysmgr.GuestState`, ...
    pub name: String,
    /// `List<T>` arguments.
    pub generics: Vec<TypeRef>,
    /// `[]` count.
    pub array: usize,
}

impl TypeRef {
    /// A plain type of that name.
    pub fn named(name: &str) -> Self {
        TypeRef {
            annotations: Vec::new(),
            name: name.to_string(),
            generics: Vec::new(),
            array: 0,
        }
    }
}

impl fmt::Display for TypeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.annotations {
            write!(f, "@{a} ")?;
        }
        f.write_str(&self.name)?;
        if !self.generics.is_empty() {
            f.write_str("<")?;
            for (i, g) in self.generics.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{g}")?;
            }
            f.write_str(">")?;
        }
        for _ in 0..self.array {
            f.write_str("[]")?;
        }
        Ok(())
    }
}

/// A constant's value, evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstValue {
    /// Any integral type (as the 64-bit value the declared type holds).
    Int(i64),
    /// `true` / `false`.
    Bool(bool),
    /// A string literal (without quotes).
    Str(String),
}

impl fmt::Display for ConstValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstValue::Int(v) => write!(f, "{v}"),
            ConstValue::Bool(b) => write!(f, "{b}"),
            ConstValue::Str(s) => write!(f, "\"{s}\""),
        }
    }
}

/// `const TYPE NAME = VALUE;` in an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constant {
    /// Declared type.
    pub ty: TypeRef,
    /// Name.
    pub name: String,
    /// Evaluated value.
    pub value: ConstValue,
}

/// One method argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// The direction, only if the source wrote one (the dump keeps that).
    pub direction: Option<Direction>,
    /// Its type.
    pub ty: TypeRef,
    /// Its name.
    pub name: String,
}

/// One interface method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// Declared `oneway` (itself or through its interface).
    pub oneway: bool,
    /// Return type.
    pub ret: TypeRef,
    /// Name.
    pub name: String,
    /// Arguments.
    pub args: Vec<Arg>,
    /// Transaction code: `FIRST_CALL_TRANSACTION` (1) + its index.
    pub code: u32,
}

impl Method {
    /// `name(type, type)` as AOSP's messages print a signature.
    pub fn signature(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|a| a.ty.to_string()).collect();
        format!("{}({})", self.name, args.join(", "))
    }
}

/// A structured parcelable's field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its type.
    pub ty: TypeRef,
    /// Its name.
    pub name: String,
    /// Its default value, if the source gave one.
    pub default: Option<ConstValue>,
}

/// What a declared type is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclKind {
    /// `interface` with its methods (in code order) and constants.
    Interface {
        /// Methods in declaration (= transaction code) order.
        methods: Vec<Method>,
        /// Constants in declaration order.
        constants: Vec<Constant>,
    },
    /// A structured `parcelable` with its fields in wire order.
    Parcelable {
        /// Fields in declaration (= wire) order.
        fields: Vec<Field>,
    },
}

/// One declared type (one per `.aidl` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decl {
    /// `vmstack.sysmgr`
    pub package: String,
    /// `ISystemManager`
    pub name: String,
    /// Interface or parcelable.
    pub kind: DeclKind,
}

impl Decl {
    /// `package.Name`
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.package, self.name)
    }
}

/// A set of declarations keyed by qualified name (one API version).
pub type Api = BTreeMap<String, Decl>;

/// Builds an [`Api`] from `(file name, text)` pairs.
pub fn api_from_sources<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Api, AidlParseError> {
    let mut api = Api::new();
    for (file, text) in files {
        let decl = parse::parse_file(file, text)?;
        api.insert(decl.qualified_name(), decl);
    }
    Ok(api)
}
