//! Parsing of `/proc/<pid>/smaps` and the split of a VMM's resident memory into
//! guest RAM and the VMM's own overhead.
//!
//! Guest RAM heuristic: both VMMs allocate guest memory as one anonymous,
//! private mapping of the guest size (QEMU: its RAM block; ours: vm-memory's
//! mmap; when ours maps the kernel and initrd copy-on-write into it, the
//! mapping is split and the guest RAM is the run of adjacent `rw-p` mappings
//! that adds up to exactly the guest size). A mapping is counted as guest RAM when it is anonymous (inode 0, no
//! path, or an `[anon:...]` name) and at least `guest size - 4 MiB` large
//! ([`GUEST_SLACK_KIB`]). Nothing else in either VMM comes near that size
//! (thread stacks are 8 MiB, glibc arenas reserve 64 MiB).

use thiserror::Error;

/// How much smaller than the guest size a mapping may be and still count as guest RAM.
pub const GUEST_SLACK_KIB: u64 = 4 * 1024;

/// Errors of smaps parsing.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SmapsError {
    /// A line could not be parsed.
    #[error("smaps line {line}: cannot parse {text:?}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The text held no mapping at all (e.g. the process had exited).
    #[error("smaps is empty (has the process exited?)")]
    Empty,
    /// No mapping looked like guest RAM.
    #[error("no anonymous mapping of at least {min_kib} KiB (guest RAM) found")]
    NoGuestMapping {
        /// The minimum size looked for.
        min_kib: u64,
    },
}

/// One mapping of an smaps file (the fields this crate needs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Permissions, e.g. `rw-p`.
    pub perms: String,
    /// Inode of the backing file (0 for anonymous memory).
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`), empty for anonymous memory.
    pub path: String,
    /// `Size:` in KiB.
    pub size_kib: u64,
    /// `Rss:` in KiB.
    pub rss_kib: u64,
    /// `AnonHugePages:` in KiB (resident memory backed by transparent huge pages).
    pub anon_huge_kib: u64,
}

impl Mapping {
    /// Whether this is anonymous memory (not a file, not heap/stack/vdso).
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0 && (self.path.is_empty() || self.path.starts_with("[anon"))
    }
}

/// Parses the header line of a mapping, e.g.
/// `7f0c00000000-7f0c08000000 rw-p 00000000 00:00 0   [path]`.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut word = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (w, r) = t.split_at(end);
        rest = r;
        (!w.is_empty()).then_some(w)
    };
    let range = word()?;
    let perms = word()?;
    let _offset = word()?;
    let _dev = word()?;
    let inode = word()?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if perms.len() != 4 || end < start {
        return None;
    }
    Some(Mapping {
        start,
        end,
        perms: perms.to_string(),
        inode: inode.parse().ok()?,
        path: rest.trim().to_string(),
        size_kib: 0,
        rss_kib: 0,
        anon_huge_kib: 0,
    })
}

/// Parses smaps text into its mappings.
pub fn parse(text: &str) -> Result<Vec<Mapping>, SmapsError> {
    let mut maps: Vec<Mapping> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || SmapsError::BadLine {
            line: i + 1,
            text: line.to_string(),
        };
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some(key) = first.strip_suffix(':') {
            // A field of the current mapping: "Rss:   123 kB", "VmFlags: rd wr".
            let current = maps.last_mut().ok_or_else(bad)?;
            let kib = || -> Result<u64, SmapsError> {
                let mut w = line.split_whitespace().skip(1);
                let v = w.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                match w.next() {
                    Some("kB") => Ok(v),
                    _ => Err(bad()),
                }
            };
            match key {
                "Size" => current.size_kib = kib()?,
                "Rss" => current.rss_kib = kib()?,
                "AnonHugePages" => current.anon_huge_kib = kib()?,
                _ => {}
            }
        } else {
            maps.push(parse_header(line).ok_or_else(bad)?);
        }
    }
    Ok(maps)
}

/// A VMM's resident memory, split into guest RAM and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// Sum of `Rss:` over all mappings, in KiB.
    pub total_rss_kib: u64,
    /// Sum of `Rss:` over the guest-RAM mappings, in KiB.
    pub guest_rss_kib: u64,
    /// Sum of `Size:` over the guest-RAM mappings, in KiB.
    pub guest_size_kib: u64,
    /// How many mappings were counted as guest RAM.
    pub guest_mappings: usize,
    /// Part of the overhead in file-backed mappings (binary, shared libraries), in KiB.
    pub overhead_file_kib: u64,
    /// Part of the overhead backed by transparent huge pages, in KiB (with THP
    /// `always`, one touched byte of an aligned 2 MiB anonymous range makes it all resident).
    pub overhead_thp_kib: u64,
}

impl MemoryUse {
    /// `total - guest`: the VMM's own resident memory, in KiB.
    pub fn overhead_kib(&self) -> u64 {
        self.total_rss_kib.saturating_sub(self.guest_rss_kib)
    }
}

/// Splits `maps` for a guest of `guest_mib` MiB (see the module doc for the heuristic).
pub fn memory_use(maps: &[Mapping], guest_mib: u64) -> Result<MemoryUse, SmapsError> {
    if maps.is_empty() {
        return Err(SmapsError::Empty);
    }
    let min_kib = (guest_mib * 1024).saturating_sub(GUEST_SLACK_KIB);
    let is_guest = |m: &Mapping| m.is_anonymous() && m.size_kib >= min_kib;
    let mut guest_range: Vec<bool> = maps.iter().map(is_guest).collect();
    if !guest_range.contains(&true) {
        // A VMM that maps boot files copy-on-write into guest RAM splits it
        // into several adjacent private mappings: look for a run of
        // adjacent `rw-p` mappings adding up to exactly the guest size.
        let want = guest_mib * 1024;
        'outer: for i in 0..maps.len() {
            let mut total = 0;
            for j in i..maps.len() {
                let m = &maps[j];
                let adjacent = j == i || maps[j - 1].end == m.start;
                if !adjacent || m.perms != "rw-p" {
                    break;
                }
                total += m.size_kib;
                if total == want && j > i {
                    guest_range[i..=j].iter_mut().for_each(|g| *g = true);
                    break 'outer;
                }
                if total > want {
                    break;
                }
            }
        }
    }
    let pick = |want: bool| -> Vec<&Mapping> {
        maps.iter()
            .zip(&guest_range)
            .filter(|(_, g)| **g == want)
            .map(|(m, _)| m)
            .collect()
    };
    let (guest, other) = (pick(true), pick(false));
    if guest.is_empty() {
        return Err(SmapsError::NoGuestMapping { min_kib });
    }
    Ok(MemoryUse {
        total_rss_kib: maps.iter().map(|m| m.rss_kib).sum(),
        guest_rss_kib: guest.iter().map(|m| m.rss_kib).sum(),
        guest_size_kib: guest.iter().map(|m| m.size_kib).sum(),
        guest_mappings: guest.len(),
        overhead_file_kib: other
            .iter()
            .filter(|m| m.inode != 0)
            .map(|m| m.rss_kib)
            .sum(),
        overhead_thp_kib: other.iter().map(|m| m.anon_huge_kib).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d4a5a00000-55d4a5c00000 r-xp 00000000 00:02 1234                       /usr/bin/qemu system
Size:               2048 kB
KernelPageSize:        4 kB
Rss:                1500 kB
Pss:                1500 kB
VmFlags: rd ex mr mw me
55d4a7000000-55d4a7100000 rw-p 00000000 00:00 0                          [heap]
Size:               1024 kB
Rss:                 800 kB
7f0c00000000-7f0c08000000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:               20480 kB
AnonHugePages:      8192 kB
VmFlags: rd wr mr mw me ac sd hg
7f0c08000000-7f0c08800000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                2048 kB
AnonHugePages:      2048 kB
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                                  [stack]
Size:                132 kB
Rss:                  16 kB
";

    #[test]
    fn parses_mappings() {
        let maps = parse(SMAPS).unwrap();
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[0].path, "/usr/bin/qemu system");
        assert_eq!(maps[0].inode, 1234);
        assert!(!maps[0].is_anonymous());
        assert!(!maps[1].is_anonymous(), "[heap] is not guest memory");
        assert_eq!(maps[2].start, 0x7f0c_0000_0000);
        assert_eq!(maps[2].size_kib, 131_072);
        assert_eq!(maps[2].rss_kib, 20_480);
        assert!(maps[2].is_anonymous());
    }

    #[test]
    fn splits_guest_and_overhead() {
        let m = memory_use(&parse(SMAPS).unwrap(), 128).unwrap();
        assert_eq!(m.total_rss_kib, 1500 + 800 + 20_480 + 2048 + 16);
        assert_eq!(m.guest_rss_kib, 20_480);
        assert_eq!(m.guest_mappings, 1);
        assert_eq!(m.overhead_kib(), 1500 + 800 + 2048 + 16);
        assert_eq!(m.overhead_file_kib, 1500);
        assert_eq!(
            m.overhead_thp_kib, 2048,
            "the guest's huge pages are not overhead"
        );
        // A 256 MiB guest has no mapping that large.
        assert_eq!(
            memory_use(&parse(SMAPS).unwrap(), 256),
            Err(SmapsError::NoGuestMapping {
                min_kib: 256 * 1024 - GUEST_SLACK_KIB
            })
        );
        assert_eq!(memory_use(&[], 128), Err(SmapsError::Empty));
    }

    #[test]
    fn guest_ram_split_by_file_mappings_is_found_by_exact_size() {
        // 16 MiB guest: anon 1 MiB, kernel file 12 MiB, anon 3 MiB, then an
        // unrelated adjacent anon 8 MiB mapping that must not be counted.
        let text = "\
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
Size:               1024 kB
Rss:                 100 kB
7f0000100000-7f0000d00000 rw-p 00005000 00:12 77                         /guest/vmlinuz
Size:              12288 kB
Rss:                5000 kB
7f0000d00000-7f0001000000 rw-p 00000000 00:00 0 
Size:               3072 kB
Rss:                 300 kB
7f0001000000-7f0001800000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                  40 kB
";
        let m = memory_use(&parse(text).unwrap(), 16).unwrap();
        assert_eq!(m.guest_mappings, 3);
        assert_eq!(m.guest_size_kib, 16 * 1024);
        assert_eq!(m.guest_rss_kib, 5400);
        assert_eq!(m.overhead_kib(), 40);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse("Rss: 1 kB\n"),
            Err(SmapsError::BadLine { line: 1, .. })
        ));
        assert!(matches!(
            parse("zz-1 rw-p 0 00:00 0\n"),
            Err(SmapsError::BadLine { .. })
        ));
        let bad_unit = "1000-2000 rw-p 00000000 00:00 0\nRss: 4 MB\n";
        assert!(matches!(
            parse(bad_unit),
            Err(SmapsError::BadLine { line: 2, .. })
        ));
        assert_eq!(parse("").unwrap(), vec![]);
    }
}
