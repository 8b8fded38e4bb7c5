//! Seccomp policies as data: which system calls each thread class of a
//! process may make, with which arguments, and why.
//!
//! A [`ProcessPolicy`] names the process (`vmm`, `sysmgr`, `trustyd`,
//! `vmm adb-proxy`) and
//! its thread [`Class`]es; each class lists [`Rule`]s (a system call by
//! name, optional argument conditions, the reason). The tables are the
//! single source: [`compile`](crate::seccomp) turns them into BPF with
//! rust-vmm's `seccompiler`, and [`crate::docs`] renders them into
//! `docs/security.md` (a test keeps the two equal).
//!
//! Names are resolved per architecture through [`crate::syscalls`], so one
//! table serves x86_64 and aarch64; a rule that exists on one architecture
//! only says so ([`Only`]).

pub mod adb_proxy;
pub mod common;
pub mod sysmgr;
pub mod trustyd;
pub mod vmm;

/// A CPU architecture the filters are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64.
    X86_64,
    /// aarch64.
    Aarch64,
}

impl Arch {
    /// The architecture this binary runs on, if it is one of ours.
    pub const fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// Both architectures.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// Its name as `uname -m` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// On every architecture.
    Any,
    /// On this architecture only (the call does not exist elsewhere, or
    /// is needed only there).
    On(Arch),
}

impl Only {
    /// Whether the rule applies on `arch`.
    pub const fn applies(self, arch: Arch) -> bool {
        match self {
            Only::Any => true,
            Only::On(a) => a as u8 == arch as u8,
        }
    }
}

/// How an argument is compared (32-bit compares: every argument the
/// tables check is a C `int`/`unsigned int`, whose upper half the caller
/// may leave undefined).
#[derive(Debug, Clone, Copy)]
pub enum Cmp {
    /// `arg == value`.
    Eq(u64),
    /// `arg & mask == value`.
    Masked {
        /// Bits compared.
        mask: u64,
        /// Their required value.
        value: u64,
    },
    /// `arg == getpid()` of the process installing the filter.
    OwnPid,
    /// `arg ==` a value known only at run time (`SIGRTMIN` differs between
    /// glibc and musl), computed when the filter is compiled.
    Runtime(fn() -> u64),
}

impl PartialEq for Cmp {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cmp::Eq(a), Cmp::Eq(b)) => a == b,
            (Cmp::Masked { mask: m, value: v }, Cmp::Masked { mask: n, value: w }) => {
                m == n && v == w
            }
            (Cmp::OwnPid, Cmp::OwnPid) => true,
            // Compared by the value they compute.
            (Cmp::Runtime(a), Cmp::Runtime(b)) => a() == b(),
            _ => false,
        }
    }
}

impl Eq for Cmp {}

/// One condition on a system call argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0-5.
    pub arg: u8,
    /// The comparison.
    pub cmp: Cmp,
    /// What the value means (`KVM_RUN`, `AF_UNIX`), for the docs.
    pub label: &'static str,
}

/// `arg == value` (labelled `label`).
pub const fn eq(arg: u8, value: u64, label: &'static str) -> Cond {
    Cond {
        arg,
        cmp: Cmp::Eq(value),
        label,
    }
}

/// `arg & mask == value` (labelled `label`).
pub const fn masked(arg: u8, mask: u64, value: u64, label: &'static str) -> Cond {
    Cond {
        arg,
        cmp: Cmp::Masked { mask, value },
        label,
    }
}

/// `arg == value()`, computed when the filter is compiled.
pub const fn runtime(arg: u8, value: fn() -> u64, label: &'static str) -> Cond {
    Cond {
        arg,
        cmp: Cmp::Runtime(value),
        label,
    }
}

/// `arg == getpid()`.
pub const fn own_pid(arg: u8) -> Cond {
    Cond {
        arg,
        cmp: Cmp::OwnPid,
        label: "own pid",
    }
}

/// What a matching call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It runs.
    Allow,
    /// It fails with `ENOSYS` (`clone3`: libc then falls back to `clone`,
    /// whose flags a filter can check).
    Enosys,
}

/// One allowed system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The system call's name (resolved per architecture).
    pub name: &'static str,
    /// The architectures it applies on.
    pub only: Only,
    /// Argument conditions: any one of the alternatives, each a
    /// conjunction; empty: any arguments.
    pub when: &'static [&'static [Cond]],
    /// What the call gets.
    pub verdict: Verdict,
    /// Why the thread class needs it (the docs' justification column).
    pub why: &'static str,
}

/// `name` with any arguments.
pub const fn allow(name: &'static str, why: &'static str) -> Rule {
    Rule {
        name,
        only: Only::Any,
        when: &[],
        verdict: Verdict::Allow,
        why,
    }
}

/// `name` when one of the `when` alternatives holds.
pub const fn allow_if(
    name: &'static str,
    when: &'static [&'static [Cond]],
    why: &'static str,
) -> Rule {
    Rule {
        name,
        only: Only::Any,
        when,
        verdict: Verdict::Allow,
        why,
    }
}

/// `name` fails with `ENOSYS` instead of killing the process.
pub const fn enosys(name: &'static str, why: &'static str) -> Rule {
    Rule {
        name,
        only: Only::Any,
        when: &[],
        verdict: Verdict::Enosys,
        why,
    }
}

impl Rule {
    /// The same rule, on `arch` only.
    pub const fn on(self, arch: Arch) -> Rule {
        Rule {
            only: Only::On(arch),
            ..self
        }
    }
}

/// Which threads a class covers, by thread name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Exactly this name.
    Named(&'static str),
    /// Names starting with this (`vcpu` for `vcpu0`, `vcpu1`, ...).
    Prefix(&'static str),
}

impl Threads {
    /// Whether a thread called `name` belongs here.
    pub fn matches(self, name: &str) -> bool {
        match self {
            Threads::Named(n) => name == n,
            Threads::Prefix(p) => name.starts_with(p),
        }
    }

    /// How the docs show it.
    pub fn display(self) -> String {
        match self {
            Threads::Named(n) => format!("`{n}`"),
            Threads::Prefix(p) => format!("`{p}*`"),
        }
    }
}

/// A thread class: the threads that share one filter.
#[derive(Debug, Clone, Copy)]
pub struct Class {
    /// The class name (`vcpu`, `device-block`), used in log lines.
    pub name: &'static str,
    /// The threads it covers.
    pub threads: &'static [Threads],
    /// What these threads do.
    pub about: &'static str,
    /// Rule groups (shared groups such as [`common::RUNTIME`] first).
    pub rules: &'static [&'static [Rule]],
}

impl Class {
    /// Every rule of the class (groups flattened).
    pub fn all_rules(&self) -> impl Iterator<Item = &'static Rule> + '_ {
        self.rules.iter().flat_map(|group| group.iter())
    }
}

/// How the threads of a process are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// One filter per thread class; threads are started through the
    /// launcher thread ([`crate::thread`]), whose filter is the union of
    /// every class plus thread creation, so that no other thread needs
    /// `clone`.
    PerThread,
    /// One filter for the whole process, installed on the main thread
    /// before any other thread exists and inherited by all (a tokio
    /// runtime creates its threads itself).
    ProcessWide,
}

/// The seccomp policy of one program.
#[derive(Debug, Clone, Copy)]
pub struct ProcessPolicy {
    /// The program (`vmm`), for log lines.
    pub process: &'static str,
    /// How threads are confined.
    pub confinement: Confinement,
    /// Its thread classes; with [`Confinement::PerThread`] one of them is
    /// [`LAUNCHER`], whose rules are computed.
    pub classes: &'static [Class],
    /// The class of the thread that calls [`crate::enter`] (the main
    /// thread).
    pub main: &'static str,
}

/// `clone` flags that create a thread, never a process: `CLONE_THREAD`
/// must be set.
pub const CLONE_THREAD_ONLY: &[&[Cond]] = &[&[masked(
    0,
    libc::CLONE_THREAD as u64,
    libc::CLONE_THREAD as u64,
    "CLONE_THREAD",
)]];

/// `clone3` fails with `ENOSYS`: its flags are in memory a filter cannot
/// read, and glibc, which tries it first, falls back to `clone`.
pub const CLONE3_ENOSYS: Rule = enosys(
    "clone3",
    "glibc tries clone3 first; its flags are in memory a filter cannot read, so it fails with ENOSYS and glibc falls back to clone",
);

/// The name of the launcher thread and its class.
pub const LAUNCHER: &str = "launcher";

/// The name of the main thread's class in a
/// [`PerThread`](Confinement::PerThread) program: the thread that calls
/// [`crate::enter`].
pub const MAIN_CLASS: &str = "main";

/// The main thread's class ([`MAIN_CLASS`]), doing `about` with `rules`.
pub const fn main_class(about: &'static str, rules: &'static [&'static [Rule]]) -> Class {
    Class {
        name: MAIN_CLASS,
        threads: &[Threads::Named(MAIN_CLASS)],
        about,
        rules,
    }
}

/// The launcher's class, the same in every
/// [`PerThread`](Confinement::PerThread) program: what it adds to the
/// union of the other classes is [`LAUNCHER_OWN`] ([`ProcessPolicy::rules_of`]).
pub const LAUNCHER_CLASS: Class = Class {
    name: LAUNCHER,
    threads: &[Threads::Named(LAUNCHER)],
    about: "starts every other thread (the union of all classes, plus clone)",
    rules: &[common::RUNTIME],
};

/// What the launcher itself needs besides the union of every class.
pub const LAUNCHER_OWN: &[Rule] = &[
    allow_if(
        "clone",
        CLONE_THREAD_ONLY,
        "start a thread (never a process: CLONE_THREAD must be set)",
    ),
    CLONE3_ENOSYS,
    allow(
        "set_robust_list",
        "the new thread's start-up in libc (robust futex list)",
    ),
    allow(
        "rseq",
        "the new thread's start-up in glibc (restartable sequences)",
    ),
    allow_if(
        "prctl",
        &[
            &[eq(0, libc::PR_SET_NAME as u64, "PR_SET_NAME")],
            &[eq(
                0,
                libc::PR_SET_NO_NEW_PRIVS as u64,
                "PR_SET_NO_NEW_PRIVS",
            )],
        ],
        "the new thread names itself, then sets no_new_privs before installing its filter",
    ),
    allow_if(
        "seccomp",
        &[&[eq(
            0,
            libc::SECCOMP_SET_MODE_FILTER as u64,
            "SECCOMP_SET_MODE_FILTER",
        )]],
        "the new thread installs its own class's filter",
    ),
    allow(
        "sched_getaffinity",
        "libc thread start-up may read the CPU mask",
    ),
];

impl ProcessPolicy {
    /// The class called `name`.
    pub fn class(&self, name: &str) -> Option<&'static Class> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// The class of the thread called `thread`.
    pub fn class_for_thread(&self, thread: &str) -> Option<&'static Class> {
        self.classes
            .iter()
            .find(|c| c.threads.iter().any(|t| t.matches(thread)))
    }

    /// Every rule of class `class`: its own, or for [`LAUNCHER`] the union
    /// of every class's rules plus [`LAUNCHER_OWN`] (a thread's filter is
    /// its launcher's and its own, so the launcher must allow everything
    /// any thread it starts needs).
    pub fn rules_of(&self, class: &Class) -> Vec<&'static Rule> {
        if class.name == LAUNCHER && self.confinement == Confinement::PerThread {
            self.classes
                .iter()
                .filter(|c| c.name != LAUNCHER)
                .flat_map(|c| c.all_rules())
                .chain(LAUNCHER_OWN.iter())
                .chain(class.all_rules())
                .collect()
        } else {
            class.all_rules().collect()
        }
    }

    /// The distinct system calls class `class` may make on `arch`, sorted
    /// by name (the docs' and tests' view).
    pub fn syscalls_of(&self, class: &Class, arch: Arch) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .rules_of(class)
            .into_iter()
            .filter(|r| r.only.applies(arch))
            .map(|r| r.name)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Every policy of the stack.
pub const ALL: [&ProcessPolicy; 4] = [
    &vmm::POLICY,
    &sysmgr::POLICY,
    &trustyd::POLICY,
    &adb_proxy::POLICY,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls;

    #[test]
    fn every_name_resolves_on_the_architectures_it_is_for() {
        for policy in ALL {
            for class in policy.classes {
                for rule in policy.rules_of(class) {
                    for arch in Arch::ALL {
                        let found = syscalls::number(arch, rule.name).is_some();
                        if rule.only.applies(arch) {
                            assert!(
                                found,
                                "{}/{}: {} does not exist on {}",
                                policy.process,
                                class.name,
                                rule.name,
                                arch.name()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_rule_says_why_and_classes_do_not_overlap() {
        for policy in ALL {
            assert!(policy.class(policy.main).is_some(), "{}", policy.process);
            for class in policy.classes {
                assert!(!class.about.is_empty());
                for rule in class.all_rules() {
                    assert!(!rule.why.is_empty(), "{}: {}", class.name, rule.name);
                    for alt in rule.when {
                        assert!(!alt.is_empty(), "{}: empty alternative", rule.name);
                    }
                }
                for t in class.threads {
                    let probe = match t {
                        Threads::Named(n) => n.to_string(),
                        Threads::Prefix(p) => format!("{p}0"),
                    };
                    assert_eq!(
                        policy.class_for_thread(&probe).map(|c| c.name),
                        Some(class.name),
                        "thread {probe} of {} matches another class first",
                        class.name
                    );
                }
            }
        }
    }

    #[test]
    fn the_launcher_allows_everything_its_threads_need_and_only_it_clones() {
        let policy = &vmm::POLICY;
        let launcher = policy.class(LAUNCHER).unwrap();
        for arch in Arch::ALL {
            let all = policy.syscalls_of(launcher, arch);
            for class in policy.classes {
                for name in policy.syscalls_of(class, arch) {
                    assert!(all.contains(&name), "{name} of {}", class.name);
                }
                if class.name != LAUNCHER {
                    assert!(!policy.syscalls_of(class, arch).contains(&"clone"));
                }
            }
            assert!(all.contains(&"clone"));
        }
    }

    #[test]
    fn no_class_may_exec_or_open_paths_after_start_up_in_the_vmm() {
        for class in vmm::POLICY.classes {
            for arch in Arch::ALL {
                let names = vmm::POLICY.syscalls_of(class, arch);
                for forbidden in [
                    "execve", "execveat", "open", "openat", "openat2", "ptrace", "fork", "vfork",
                    "mount", "bpf", "kill",
                ] {
                    assert!(
                        !names.contains(&forbidden),
                        "vmm/{} allows {forbidden}",
                        class.name
                    );
                }
            }
        }
    }
}
