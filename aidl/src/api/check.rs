//! The compatibility check between an older API version and a newer one,
//! following AOSP's `aidl --checkapi` rules for frozen interfaces:
//!
//! - no type, method, constant or field may disappear or change: a method
//!   keeps its name, return type, argument types and directions, `oneway`
//!   and transaction code (its position); a constant keeps its type and
//!   value; a field keeps its position, name and type;
//! - new methods and fields go at the end, new constants and new types
//!   anywhere.

use std::collections::HashMap;

use super::{Api, DeclKind};

/// Every incompatibility between `old` and `new`, one message each; empty
/// when `new` is a compatible extension of `old`.
pub fn incompatibilities(old: &Api, new: &Api) -> Vec<String> {
    let mut out = Vec::new();
    for (name, o) in old {
        let Some(n) = new.get(name) else {
            out.push(format!("{name}: removed"));
            continue;
        };
        match (&o.kind, &n.kind) {
            (
                DeclKind::Interface {
                    methods: om,
                    constants: oc,
                },
                DeclKind::Interface {
                    methods: nm,
                    constants: nc,
                },
            ) => {
                for m in om {
                    match nm.iter().find(|x| x.name == m.name) {
                        None => out.push(format!("{name}.{}: removed", m.signature())),
                        Some(x) => {
                            if x.signature() != m.signature() || x.ret != m.ret {
                                out.push(format!(
                                    "{name}.{}: changed to {} {}",
                                    m.signature(),
                                    x.ret,
                                    x.signature()
                                ));
                            }
                            let dirs = |mm: &super::Method| -> Vec<_> {
                                mm.args.iter().map(|a| a.direction).collect()
                            };
                            if dirs(x) != dirs(m) {
                                out.push(format!(
                                    "{name}.{}: argument directions changed",
                                    m.signature()
                                ));
                            }
                            if x.oneway != m.oneway {
                                out.push(format!(
                                    "{name}.{}: oneway changed from {} to {}",
                                    m.signature(),
                                    m.oneway,
                                    x.oneway
                                ));
                            }
                            if x.code != m.code {
                                out.push(format!(
                                    "{name}.{}: transaction code changed from {} to {}",
                                    m.signature(),
                                    m.code,
                                    x.code
                                ));
                            }
                        }
                    }
                }
                let new_consts: HashMap<&str, &super::Constant> =
                    nc.iter().map(|c| (c.name.as_str(), c)).collect();
                for c in oc {
                    match new_consts.get(c.name.as_str()) {
                        None => out.push(format!("{name}.{}: constant removed", c.name)),
                        Some(x) if x.ty != c.ty || x.value != c.value => out.push(format!(
                            "{name}.{}: constant changed from {} {} to {} {}",
                            c.name, c.ty, c.value, x.ty, x.value
                        )),
                        Some(_) => {}
                    }
                }
            }
            (DeclKind::Parcelable { fields: of }, DeclKind::Parcelable { fields: nf }) => {
                for (i, f) in of.iter().enumerate() {
                    match nf.get(i) {
                        None => out.push(format!("{name}.{}: field removed", f.name)),
                        Some(x) if x.name != f.name || x.ty != f.ty => out.push(format!(
                            "{name}: field {i} changed from {} {} to {} {} (fields keep their place; add new ones at the end)",
                            f.ty, f.name, x.ty, x.name
                        )),
                        Some(x) if x.default != f.default => out.push(format!(
                            "{name}.{}: default value changed",
                            f.name
                        )),
                        Some(_) => {}
                    }
                }
            }
            _ => out.push(format!("{name}: changed between interface and parcelable")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::api_from_sources;

    fn api(src: &str) -> Api {
        api_from_sources([("t.aidl", src)]).expect("parses")
    }

    const BASE: &str =
        "package p; interface I { const int A = 1; int f(int x); void g(in String s); }";

    #[test]
    fn additions_at_the_end_are_compatible() {
        let new = api("package p; interface I { const int A = 1; const int B = 2; int f(int x); void g(in String s); void h(); }");
        assert!(incompatibilities(&api(BASE), &new).is_empty());
        assert!(incompatibilities(&api(BASE), &api(BASE)).is_empty());
    }

    #[test]
    fn removals_reorders_and_changes_are_caught() {
        for (new, needle) in [
            ("package p; interface I { const int A = 1; void g(in String s); }", "f(int): removed"),
            ("package p; interface I { const int A = 1; void g(in String s); int f(int x); }", "transaction code changed"),
            ("package p; interface I { const int A = 1; long f(int x); void g(in String s); }", "changed to long"),
            ("package p; interface I { const int A = 1; int f(long x); void g(in String s); }", "f(int): changed to int f(long)"),
            ("package p; interface I { const int A = 2; int f(int x); void g(in String s); }", "constant changed"),
            ("package p; interface I { int f(int x); void g(in String s); }", "constant removed"),
            ("package p; interface I { const int A = 1; int f(int x); oneway void g(in String s); }", "oneway changed"),
            ("package p; interface I { const int A = 1; int f(int x); void g(inout String s); }", "directions changed"),
        ] {
            let errs = incompatibilities(&api(BASE), &api(new));
            assert!(errs.iter().any(|e| e.contains(needle)), "{new}: {errs:?}");
        }
    }

    #[test]
    fn parcelable_fields_keep_their_place() {
        let old = api("package p; parcelable P { int a; String b; }");
        assert!(incompatibilities(
            &old,
            &api("package p; parcelable P { int a; String b; long c; }")
        )
        .is_empty());
        for new in [
            "package p; parcelable P { String b; int a; }",
            "package p; parcelable P { int a; }",
            "package p; parcelable P { int a; String[] b; }",
            "package p; interface P { }",
        ] {
            assert!(!incompatibilities(&old, &api(new)).is_empty(), "{new}");
        }
    }
}
