//! Can the preload library work on this program? It needs the dynamic loader: an ELF
//! executable with a `PT_INTERP` program header. A `#!` script is judged by its interpreter.

use std::io::Read;
use std::path::{Path, PathBuf};

/// What the program file is, as far as LD_PRELOAD cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Linkage {
    /// An ELF executable run by the dynamic loader.
    Dynamic,
    /// An ELF executable without `PT_INTERP` (static, or static-pie): LD_PRELOAD is ignored.
    Static,
    /// A `#!` script run by this interpreter.
    Script(PathBuf),
    /// Something else (left for `exec` to judge).
    Unknown,
}

const PT_INTERP: u64 = 3;

/// Reads the start of `path` (ELF header and program headers, or the `#!` line).
pub fn linkage(path: &Path) -> std::io::Result<Linkage> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    Ok(classify(&head))
}

/// `linkage` on bytes already read (the first 64 KiB of the file).
pub fn classify(head: &[u8]) -> Linkage {
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or(b"");
        let line = String::from_utf8_lossy(line);
        return match line.split_whitespace().next() {
            Some(interp) => Linkage::Script(PathBuf::from(interp)),
            None => Linkage::Unknown,
        };
    }
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        return Linkage::Unknown;
    }
    let is64 = head[4] == 2;
    let le = head[5] == 1;
    let u16at = |o: usize| -> Option<u64> {
        let b = head.get(o..o + 2)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        } as u64)
    };
    let u32at = |o: usize| -> Option<u64> {
        let b: [u8; 4] = head.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as u64)
    };
    let u64at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = head.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let (phoff, phentsize, phnum) = if is64 {
        (u64at(0x20), u16at(0x36), u16at(0x38))
    } else {
        (u32at(0x1c), u16at(0x2a), u16at(0x2c))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Linkage::Unknown;
    };
    let mut saw_all = true;
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        match u32at(at) {
            Some(PT_INTERP) => return Linkage::Dynamic,
            Some(_) => {}
            None => saw_all = false,
        }
    }
    if saw_all {
        Linkage::Static
    } else {
        Linkage::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(name: &str) -> PathBuf {
        crate::run::find::in_path(std::ffi::OsStr::new(name), std::env::var_os("PATH"))
            .expect("present on the machine")
    }

    #[test]
    fn dynamic_programs_and_scripts() {
        assert_eq!(linkage(&exe("sh")).unwrap(), Linkage::Dynamic);
        assert_eq!(
            classify(b"#!/usr/bin/env python3\nprint(1)\n"),
            Linkage::Script(PathBuf::from("/usr/bin/env"))
        );
        assert_eq!(classify(b"plain text"), Linkage::Unknown);
    }

    #[test]
    fn static_elf() {
        // A minimal 64-bit little-endian ELF header with one PT_LOAD program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(classify(&elf), Linkage::Static);
        elf[64..68].copy_from_slice(&(PT_INTERP as u32).to_le_bytes());
        assert_eq!(classify(&elf), Linkage::Dynamic);
    }
}
