//! System call numbers and names per architecture: the policies name
//! calls, the filters need numbers, and the SIGSYS report turns a number
//! back into a name.

mod aarch64;
mod unified;
mod x86_64;

use crate::policy::Arch;

/// The first number of the calls every architecture numbers alike.
const FIRST_UNIFIED: i64 = 424;

/// The calls numbered below [`FIRST_UNIFIED`] on `arch`.
fn arch_table(arch: Arch) -> &'static [(i64, &'static str)] {
    match arch {
        Arch::X86_64 => x86_64::SYSCALLS,
        Arch::Aarch64 => aarch64::SYSCALLS,
    }
}

/// Both tables of `arch`, in order of number.
fn tables(arch: Arch) -> [&'static [(i64, &'static str)]; 2] {
    [arch_table(arch), unified::SYSCALLS]
}

/// The number of system call `name` on `arch`.
pub fn number(arch: Arch, name: &str) -> Option<i64> {
    tables(arch)
        .into_iter()
        .flatten()
        .find(|(_, n)| *n == name)
        .map(|(nr, _)| *nr)
}

/// The name of system call `nr` on `arch` (no allocation, no lock: the
/// SIGSYS handler calls it).
pub fn name(arch: Arch, nr: i64) -> Option<&'static str> {
    let t = if nr < FIRST_UNIFIED {
        arch_table(arch)
    } else {
        unified::SYSCALLS
    };
    t.binary_search_by_key(&nr, |(n, _)| *n)
        .ok()
        .map(|i| t[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_agree_with_libc() {
        #[cfg(target_arch = "x86_64")]
        let arch = Arch::X86_64;
        #[cfg(target_arch = "aarch64")]
        let arch = Arch::Aarch64;
        for (nr, n) in [
            (libc::SYS_read, "read"),
            (libc::SYS_execve, "execve"),
            (libc::SYS_ioctl, "ioctl"),
            (libc::SYS_clone3, "clone3"),
            (libc::SYS_epoll_pwait, "epoll_pwait"),
        ] {
            assert_eq!(number(arch, n), Some(nr));
            assert_eq!(name(arch, nr), Some(n));
        }
        assert_eq!(name(Arch::X86_64, 59), Some("execve"));
        assert_eq!(name(Arch::Aarch64, 221), Some("execve"));
        assert_eq!(number(Arch::Aarch64, "open"), None);
        assert_eq!(name(Arch::X86_64, 100_000), None);
        assert_eq!(name(Arch::Aarch64, 435), Some("clone3"));
        assert_eq!(number(Arch::X86_64, "mseal"), Some(462));
    }

    #[test]
    fn tables_are_sorted_without_duplicates() {
        for arch in Arch::ALL {
            let all: Vec<i64> = tables(arch)
                .into_iter()
                .flatten()
                .map(|(nr, _)| *nr)
                .collect();
            assert!(all.windows(2).all(|w| w[0] < w[1]), "{}", arch.name());
            assert!(arch_table(arch).iter().all(|(nr, _)| *nr < FIRST_UNIFIED));
            assert!(unified::SYSCALLS.iter().all(|(nr, _)| *nr >= FIRST_UNIFIED));
        }
    }
}
