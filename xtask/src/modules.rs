//! Kernel modules from an unpacked Debian kernel package.
//!
//! Debian kernel packages do not ship `modules.dep` (their postinst runs `depmod`),
//! so dependencies are read from each module's `.modinfo` section (`depends=`),
//! which is what `depmod` uses too. Modules are decompressed (`.ko.xz` with `xz`)
//! for the initramfs, since busybox `insmod` cannot be counted on to read xz.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// A module in load order, with its decompressed contents.
#[derive(Debug, Clone)]
pub struct Module {
    /// Module name as `lsmod` shows it (`kvm_amd`).
    pub name: String,
    /// Path relative to `lib/modules/<release>/`, without a compression suffix.
    pub rel_path: String,
    /// Names of the modules it depends on.
    pub depends: Vec<String>,
    /// Decompressed ELF object.
    pub data: Vec<u8>,
}

/// Index of the modules of one kernel release.
pub struct ModuleTree {
    dir: PathBuf,
    index: HashMap<String, PathBuf>,
}

/// `kvm-amd` and `kvm_amd` are the same module.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn strip_suffix(file: &str) -> Option<&str> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
}

impl ModuleTree {
    /// Indexes `dir` (`<root>/lib/modules/<release>`).
    pub fn open(dir: &Path) -> Result<Self> {
        let mut index = HashMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in
                std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
            {
                let e = e?;
                let path = e.path();
                if e.file_type()?.is_dir() {
                    stack.push(path);
                } else if let Some(stem) = strip_suffix(&e.file_name().to_string_lossy()) {
                    let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                    index.insert(normalize(stem), rel);
                }
            }
        }
        if index.is_empty() {
            bail!("no kernel modules found under {}", dir.display());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
        })
    }

    fn load(&self, name: &str) -> Result<(String, Vec<u8>)> {
        let rel = self.index.get(&normalize(name)).ok_or_else(|| {
            anyhow!(
                "kernel module {name} not found under {}",
                self.dir.display()
            )
        })?;
        let path = self.dir.join(rel);
        let rel_s = rel.to_string_lossy().into_owned();
        let data = if rel_s.ends_with(".xz") {
            let out = Command::new("xz")
                .arg("-dc")
                .arg(&path)
                .output()
                .with_context(|| {
                    format!("cannot run xz -dc {} (install xz-utils)", path.display())
                })?;
            if !out.status.success() {
                bail!("xz -dc {} failed ({})", path.display(), out.status);
            }
            out.stdout
        } else if rel_s.ends_with(".gz") {
            use std::io::Read;
            let f = std::fs::File::open(&path)?;
            let mut v = Vec::new();
            flate2::read::GzDecoder::new(f)
                .read_to_end(&mut v)
                .with_context(|| format!("cannot decompress {}", path.display()))?;
            v
        } else if rel_s.ends_with(".ko") {
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
        } else {
            bail!("unsupported module compression: {}", path.display());
        };
        let plain = rel_s
            .strip_suffix(".xz")
            .or_else(|| rel_s.strip_suffix(".gz"))
            .unwrap_or(&rel_s)
            .to_string();
        Ok((plain, data))
    }

    /// Resolves `names` and all their dependencies, in load order (dependencies first).
    pub fn resolve(&self, names: &[String]) -> Result<Vec<Module>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut visiting = BTreeSet::new();
        for n in names {
            self.visit(&normalize(n), &mut order, &mut done, &mut visiting)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        order: &mut Vec<Module>,
        done: &mut BTreeSet<String>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if !visiting.insert(name.to_string()) {
            bail!("module dependency cycle at {name}");
        }
        let (rel_path, data) = self.load(name)?;
        let depends = modinfo_depends(&data).with_context(|| format!("module {name}"))?;
        for d in &depends {
            self.visit(&normalize(d), order, done, visiting)?;
        }
        visiting.remove(name);
        done.insert(name.to_string());
        order.push(Module {
            name: name.to_string(),
            rel_path,
            depends,
            data,
        });
        Ok(())
    }
}

/// `modules.dep` lines for `modules` (paths relative to `lib/modules/<release>`).
pub fn modules_dep(modules: &[Module]) -> String {
    let by_name: HashMap<&str, &Module> = modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut out = String::new();
    for m in modules {
        // modules.dep lists the full transitive closure, most dependent first.
        let mut deps = Vec::new();
        let mut stack: Vec<&str> = m.depends.iter().map(String::as_str).collect();
        while let Some(d) = stack.pop() {
            let d = normalize(d);
            if let Some(dm) = by_name.get(d.as_str()) {
                if !deps.contains(&dm.rel_path) {
                    deps.push(dm.rel_path.clone());
                    stack.extend(dm.depends.iter().map(String::as_str));
                }
            }
        }
        out.push_str(&format!("{}:", m.rel_path));
        for d in deps {
            out.push(' ');
            out.push_str(&d);
        }
        out.push('\n');
    }
    out
}

fn u16_at(d: &[u8], off: usize) -> Result<u16> {
    let b = d
        .get(off..off + 2)
        .ok_or_else(|| anyhow!("truncated ELF"))?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    let b = d
        .get(off..off + 4)
        .ok_or_else(|| anyhow!("truncated ELF"))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(d: &[u8], off: usize) -> Result<usize> {
    let b = d
        .get(off..off + 8)
        .ok_or_else(|| anyhow!("truncated ELF"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    usize::try_from(u64::from_le_bytes(a)).context("ELF offset too large")
}

fn check_elf64le(d: &[u8]) -> Result<()> {
    if d.len() < 64 || &d[..4] != b"\x7fELF" || d[4] != 2 || d[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    Ok(())
}

/// Contents of the ELF section `name`.
fn section<'a>(d: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    check_elf64le(d)?;
    let shoff = u64_at(d, 0x28)?;
    let shentsize = usize::from(u16_at(d, 0x3a)?);
    let shnum = usize::from(u16_at(d, 0x3c)?);
    let shstrndx = usize::from(u16_at(d, 0x3e)?);
    let sh = |i: usize| shoff + i * shentsize;
    let strtab_off = u64_at(d, sh(shstrndx) + 24)?;
    for i in 0..shnum {
        let name_off = u32_at(d, sh(i))? as usize;
        let start = strtab_off + name_off;
        let end = d
            .get(start..)
            .and_then(|s| s.iter().position(|&b| b == 0))
            .ok_or_else(|| anyhow!("bad section name"))?;
        if &d[start..start + end] == name.as_bytes() {
            let off = u64_at(d, sh(i) + 24)?;
            let size = u64_at(d, sh(i) + 32)?;
            return Ok(Some(
                d.get(off..off + size)
                    .ok_or_else(|| anyhow!("section {name} out of bounds"))?,
            ));
        }
    }
    Ok(None)
}

/// The value of `key` in a module's `.modinfo` section (`vermagic`, ...).
pub fn modinfo(module: &[u8], key: &str) -> Result<Option<String>> {
    let info = section(module, ".modinfo")?.ok_or_else(|| anyhow!("no .modinfo section"))?;
    let prefix = format!("{key}=");
    Ok(info
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// `depends=` of a module's `.modinfo` section.
pub fn modinfo_depends(module: &[u8]) -> Result<Vec<String>> {
    Ok(modinfo(module, "depends")?
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// Whether an ELF executable needs a dynamic loader (has `PT_INTERP`).
pub fn elf_is_dynamic(d: &[u8]) -> Result<bool> {
    check_elf64le(d)?;
    let phoff = u64_at(d, 0x20)?;
    let phentsize = usize::from(u16_at(d, 0x36)?);
    let phnum = usize::from(u16_at(d, 0x38)?);
    for i in 0..phnum {
        if u32_at(d, phoff + i * phentsize)? == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads the module list file `path` (one name per line, `#` comments); empty if absent.
pub fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_own_binary() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(exe).unwrap();
        assert!(section(&data, ".text").unwrap().is_some());
        assert!(section(&data, ".modinfo").unwrap().is_none());
        let _ = elf_is_dynamic(&data).unwrap();
        assert!(check_elf64le(b"nope").is_err());
    }

    #[test]
    fn dep_lines() {
        let m = |n: &str, deps: &[&str]| Module {
            name: n.into(),
            rel_path: format!("kernel/{n}.ko"),
            depends: deps.iter().map(|s| s.to_string()).collect(),
            data: vec![],
        };
        let mods = vec![
            m("irqbypass", &[]),
            m("kvm", &["irqbypass"]),
            m("ccp", &[]),
            m("kvm_amd", &["kvm", "ccp"]),
        ];
        let dep = modules_dep(&mods);
        assert!(
            dep.contains("kernel/kvm_amd.ko: kernel/ccp.ko kernel/kvm.ko kernel/irqbypass.ko\n")
        );
        assert!(dep.contains("kernel/irqbypass.ko:\n"));
    }
}
