//! The syscall tables of `docs/security.md`, rendered from the policies:
//! a test compares the document with [`render`], so the two cannot drift
//! (`VMSTACK_UPDATE_DOCS=1 cargo test -p sandbox docs` rewrites it).

use std::fmt::Write as _;

use crate::policy::{Arch, Class, Cmp, Confinement, Only, ProcessPolicy, Rule, Verdict, LAUNCHER};
use crate::policy::{ALL, LAUNCHER_OWN};

/// Marks the start of the generated part of `docs/security.md`.
pub const BEGIN: &str =
    "<!-- BEGIN GENERATED: sandbox syscall tables (cargo test -p sandbox docs) -->";
/// Marks its end.
pub const END: &str = "<!-- END GENERATED: sandbox syscall tables -->";

fn conditions(rule: &Rule) -> String {
    if rule.verdict == Verdict::Enosys {
        return "fails with ENOSYS".into();
    }
    if rule.when.is_empty() {
        return "any".into();
    }
    rule.when
        .iter()
        .map(|alt| {
            alt.iter()
                .map(|c| match c.cmp {
                    Cmp::Eq(_) | Cmp::OwnPid | Cmp::Runtime(_) => {
                        format!("arg{} = {}", c.arg, c.label)
                    }
                    Cmp::Masked { .. } => format!("arg{}: {}", c.arg, c.label),
                })
                .collect::<Vec<_>>()
                .join(" and ")
        })
        .collect::<Vec<_>>()
        .join("; or ")
}

fn arch(rule: &Rule) -> &'static str {
    match rule.only {
        Only::Any => "both",
        Only::On(a) => a.name(),
    }
}

fn rules_table(out: &mut String, rules: &[&Rule]) {
    out.push_str("| call | arguments | arch | why |\n|---|---|---|---|\n");
    let mut sorted: Vec<&Rule> = rules.to_vec();
    sorted.sort_by_key(|r| r.name);
    for r in sorted {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            r.name,
            conditions(r),
            arch(r),
            r.why
        );
    }
}

fn count(policy: &ProcessPolicy, class: &Class, arch: Arch) -> usize {
    policy.syscalls_of(class, arch).len()
}

fn render_policy(out: &mut String, policy: &ProcessPolicy) {
    let _ = writeln!(out, "### `{}`\n", policy.process);
    let _ = writeln!(
        out,
        "{}\n",
        match policy.confinement {
            Confinement::PerThread =>
                "One filter per thread class, installed by each thread as it starts (threads are created by the launcher).",
            Confinement::ProcessWide =>
                "One filter for the whole process, installed before its first thread and inherited by every thread.",
        }
    );
    out.push_str(
        "| class | threads | what | calls x86_64 | calls aarch64 |\n|---|---|---|---|---|\n",
    );
    for class in policy.classes {
        let threads = class
            .threads
            .iter()
            .map(|t| t.display())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            class.name,
            threads,
            class.about,
            count(policy, class, Arch::X86_64),
            count(policy, class, Arch::Aarch64)
        );
    }
    out.push('\n');
    for class in policy.classes {
        let is_launcher = class.name == LAUNCHER && policy.confinement == Confinement::PerThread;
        let _ = writeln!(out, "#### `{}` / {}\n", policy.process, class.name);
        let mut own: Vec<&Rule> = Vec::new();
        let mut groups: Vec<&str> = Vec::new();
        for group in class.rules {
            match crate::policy::common::group_name(group) {
                Some(name) => groups.push(name),
                None => own.extend(group.iter()),
            }
        }
        if is_launcher {
            out.push_str("Every call of every other class of this program, plus:\n\n");
            own.extend(LAUNCHER_OWN.iter());
        } else if !groups.is_empty() {
            let _ = writeln!(
                out,
                "Groups: {}; plus:\n",
                groups
                    .iter()
                    .map(|g| format!("[{g}](#group-{})", g.to_lowercase().replace('_', "-")))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if own.is_empty() {
            out.push_str("(nothing else)\n\n");
        } else {
            rules_table(out, &own);
            out.push('\n');
        }
    }
}

/// The generated part of `docs/security.md` (between [`BEGIN`] and
/// [`END`], exclusive).
pub fn render() -> String {
    let mut out = String::new();
    out.push_str("\n## Syscall tables\n\n");
    out.push_str(
        "Generated from `sandbox/src/policy/`; the counts are distinct calls per thread class \
         and architecture, groups included.\n\n",
    );
    out.push_str("### Groups\n\n");
    for (name, group) in crate::policy::common::GROUPS {
        let _ = writeln!(
            out,
            "#### Group {name}\n\n<a id=\"group-{}\"></a>\n",
            name.to_lowercase().replace('_', "-")
        );
        rules_table(&mut out, &group.iter().collect::<Vec<_>>());
        out.push('\n');
    }
    for policy in ALL {
        render_policy(&mut out, policy);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_security_md_has_the_current_tables() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md");
        let text = std::fs::read_to_string(&path).expect("docs/security.md");
        let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
            panic!("docs/security.md lacks the markers {BEGIN:?} and {END:?}");
        };
        let current = &text[b + BEGIN.len()..e];
        let wanted = render();
        if current != wanted {
            if std::env::var_os("VMSTACK_UPDATE_DOCS").is_some() {
                let new = format!("{}{BEGIN}{wanted}{}", &text[..b], &text[e..]);
                std::fs::write(&path, new).unwrap();
                return;
            }
            panic!(
                "docs/security.md's syscall tables are out of date: run \
                 `VMSTACK_UPDATE_DOCS=1 cargo test -p sandbox docs` and commit the result"
            );
        }
    }
}
