//! The uncompressed ELF `vmlinux` inside a bzImage (what `extract-vmlinux`
//! does, from the boot protocol's own fields): the setup header's
//! `payload_offset`/`payload_length` locate the compressed kernel, its magic
//! says how it is compressed. Debian's amd64 kernels use zstd (`zstd -d`, the
//! `zstd` package); gzip is decoded in process, xz with `xz -d`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// How a bzImage payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd frame.
    Zstd,
    /// xz stream.
    Xz,
    /// gzip member.
    Gzip,
}

/// The compressed payload of a bzImage and how it is compressed.
pub fn payload(bzimage: &[u8]) -> Result<(&[u8], Compression)> {
    let u32_at = |at: usize| -> Result<u32> {
        let b = bzimage
            .get(at..at + 4)
            .context("bzImage shorter than its setup header")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no \"HdrS\" setup header)");
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)? as usize;
    let len = u32_at(0x24c)? as usize;
    let data = bzimage
        .get(start..start.saturating_add(len))
        .context("bzImage payload_offset/payload_length point past the file")?;
    let compression = if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if data.starts_with(b"\xfd7zXZ\0") {
        Compression::Xz
    } else if data.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else {
        bail!("bzImage payload has an unsupported compression (not zstd, xz or gzip)");
    };
    Ok((data, compression))
}

/// Decompresses `data`.
fn decompress(data: &[u8], compression: Compression) -> Result<Vec<u8>> {
    let tool = match compression {
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .context("gunzip the bzImage payload")?;
            return Ok(out);
        }
        Compression::Zstd => "zstd",
        Compression::Xz => "xz",
    };
    let mut child = Command::new(tool)
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {tool} (apt-get install {tool})"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().context(tool)?;
    // The payload may carry trailing bytes (the size field): a decoder that
    // stops with an error after the frame still produced the whole kernel,
    // which the ELF check below verifies.
    let _ = writer.join();
    Ok(out.stdout)
}

/// The ELF `vmlinux` of a bzImage's bytes.
pub fn extract(bzimage: &[u8]) -> Result<Vec<u8>> {
    let (data, compression) = payload(bzimage)?;
    let elf = decompress(data, compression)?;
    if !elf.starts_with(b"\x7fELF") {
        bail!("the decompressed {compression:?} bzImage payload is not an ELF file");
    }
    Ok(elf)
}

/// Writes the `vmlinux` of the bzImage `bzimage` to `out`.
pub fn extract_file(bzimage: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(bzimage).with_context(|| format!("read {}", bzimage.display()))?;
    let elf =
        extract(&bytes).with_context(|| format!("extract vmlinux from {}", bzimage.display()))?;
    std::fs::write(out, elf).with_context(|| format!("write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bzimage_with(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 1024 + 16];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(&[0xaa; 4]); // trailing size field
        image
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn extracts_a_gzip_payload_located_by_the_setup_header() {
        let elf = b"\x7fELF and the rest of a kernel".to_vec();
        let image = bzimage_with(&gzip(&elf));
        assert_eq!(payload(&image).unwrap().1, Compression::Gzip);
        assert_eq!(extract(&image).unwrap(), elf);
    }

    #[test]
    fn recognises_zstd_and_xz_magic() {
        let zstd = bzimage_with(&[0x28, 0xb5, 0x2f, 0xfd, 0]);
        assert_eq!(payload(&zstd).unwrap().1, Compression::Zstd);
        let xz = bzimage_with(b"\xfd7zXZ\0\0");
        assert_eq!(payload(&xz).unwrap().1, Compression::Xz);
    }

    #[test]
    fn rejects_non_bzimages_bad_ranges_and_non_elf_payloads() {
        assert!(payload(&[0u8; 2048]).is_err());
        let mut image = bzimage_with(&gzip(b"x"));
        image[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(payload(&image).is_err());
        let not_elf = bzimage_with(&gzip(b"MZ not an ELF"));
        assert!(extract(&not_elf).is_err());
        let unknown = bzimage_with(b"LZ4?");
        assert!(payload(&unknown).is_err());
    }
}
