//! Kernel modules from an unpacked Debian kernel package.
//!
//! Debian kernel packages do not ship `modules.dep` (their postinst runs `depmod`),
//! so dependencies are read from each module's `.modinfo` section (`depends=`,
//! read with the `object` crate), which is what `depmod` uses too. Modules are decompressed (`.ko.xz` with `xz`)
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

/// Parses `data` as an ELF file (32 or 64 bit, either byte order).
fn elf(data: &[u8]) -> Result<object::File<'_>> {
    let file = object::File::parse(data).context("not an ELF file")?;
    if file.format() != object::BinaryFormat::Elf {
        bail!("not an ELF file ({:?})", file.format());
    }
    Ok(file)
}

/// The value of `key` in a module's `.modinfo` section (`vermagic`, ...).
pub fn modinfo(module: &[u8], key: &str) -> Result<Option<String>> {
    use object::{Object as _, ObjectSection as _};
    let file = elf(module)?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| anyhow!("no .modinfo section"))?;
    let info = section.data().context("cannot read the .modinfo section")?;
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
pub fn elf_is_dynamic(data: &[u8]) -> Result<bool> {
    use object::read::elf::{ElfFile, FileHeader, ProgramHeader};
    use object::{elf::PT_INTERP, Endianness};
    fn has_interp<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<bool> {
        let file = ElfFile::<H>::parse(data).context("bad ELF file")?;
        let endian = file.endian();
        Ok(file
            .elf_program_headers()
            .iter()
            .any(|ph| ph.p_type(endian) == PT_INTERP))
    }
    match elf(data)? {
        object::File::Elf32(_) => has_interp::<object::elf::FileHeader32<Endianness>>(data),
        object::File::Elf64(_) => has_interp::<object::elf::FileHeader64<Endianness>>(data),
        _ => bail!("not an ELF file"),
    }
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

    /// A relocatable object with a `.modinfo` section, as a kernel
    /// module has, written with `object` itself.
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        use object::write::Object;
        use object::{Architecture, BinaryFormat, Endianness, SectionKind};
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let id = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        obj.append_section_data(id, modinfo, 1);
        obj.write().unwrap()
    }

    #[test]
    fn reads_modinfo_depends() {
        let m = fake_module(b"license=GPL\0depends=kvm,ccp\0vermagic=6.12\0");
        assert_eq!(modinfo_depends(&m).unwrap(), vec!["kvm", "ccp"]);
        let m = fake_module(b"license=GPL\0depends=\0");
        assert!(modinfo_depends(&m).unwrap().is_empty());
        let m = fake_module(b"license=GPL\0");
        assert!(modinfo_depends(&m).unwrap().is_empty());
        assert!(modinfo_depends(b"nope").is_err());
    }

    #[test]
    fn parses_own_binary() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(exe).unwrap();
        assert!(
            modinfo_depends(&data).is_err(),
            "no .modinfo in an executable"
        );
        // The test binary is linked dynamically (glibc target).
        assert!(elf_is_dynamic(&data).unwrap());
        assert!(elf_is_dynamic(b"nope").is_err());
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
