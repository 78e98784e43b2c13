//! Stack ids → symbolized frames, with the capture's own module list, cached per stack.
//!
//! When the recorded binary is gone (or has no debug info) frames fall back to `0x…`
//! addresses: reports still render, just less readable.

use super::analysis::Analysis;
use super::replay::IntMap;
use crate::symbolize::{is_runtime_frame, Frame, Module, Symbolizer};
use std::path::PathBuf;
use std::rc::Rc;

/// A resolver for ips: the real [`Symbolizer`] or a function (tests, synthetic captures).
enum Resolver {
    Symbolizer(Box<Symbolizer>),
    Function(Box<dyn FnMut(u64) -> Vec<Frame>>),
}

/// Resolves stacks of one capture.
pub struct Symbols {
    resolver: Resolver,
    warnings: Vec<String>,
    keep_runtime: bool,
    cache: IntMap<u32, Rc<[Frame]>>,
}

impl Symbols {
    /// A symbolizer over the modules recorded in `analysis`.
    ///
    /// A module whose file is gone or was rebuilt since (its GNU build id differs) is not
    /// used: its frames show as addresses, and [`Symbols::warnings`] says why.
    pub fn new(analysis: &Analysis) -> Symbols {
        let mut warnings = Vec::new();
        let modules = analysis
            .modules
            .iter()
            .map(|m| {
                let mut path = PathBuf::from(&m.path);
                if m.path.starts_with('/') {
                    match file_build_id(&path) {
                        Some(id) if id == m.build_id || m.build_id.is_empty() => {}
                        Some(_) => {
                            warnings.push(format!("{} was rebuilt since the recording: its frames are shown as addresses", m.path));
                            path = PathBuf::new();
                        }
                        None if !path.exists() => {
                            warnings.push(format!("{} is gone: its frames are shown as addresses", m.path));
                            path = PathBuf::new();
                        }
                        None => {}
                    }
                }
                Module { path, build_id: m.build_id.clone(), base: m.base, segments: m.segments.clone() }
            })
            .collect();
        Symbols {
            warnings,
            resolver: Resolver::Symbolizer(Box::new(Symbolizer::new(modules))),
            keep_runtime: false,
            cache: IntMap::default(),
        }
    }

    /// Resolves ips with `f` (innermost frame first, like [`Symbolizer::resolve`]).
    pub fn with_resolver(f: impl FnMut(u64) -> Vec<Frame> + 'static) -> Symbols {
        Symbols {
            warnings: Vec::new(),
            resolver: Resolver::Function(Box::new(f)),
            keep_runtime: false,
            cache: IntMap::default(),
        }
    }

    /// Problems found with the recorded modules (rebuilt or missing binaries).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Keep frames of Rust's runtime and tidemark at the top of stacks (default: trimmed).
    pub fn keep_runtime_frames(mut self, keep: bool) -> Symbols {
        self.keep_runtime = keep;
        self
    }

    fn resolve(&mut self, ip: u64) -> Vec<Frame> {
        match &mut self.resolver {
            Resolver::Symbolizer(s) => s.resolve(ip),
            Resolver::Function(f) => f(ip),
        }
    }

    /// Frames of `stack`, most recent first, runtime frames trimmed from the top (unless
    /// nothing would remain).
    pub fn frames(&mut self, analysis: &Analysis, stack: u32) -> Rc<[Frame]> {
        if let Some(f) = self.cache.get(&stack) {
            return f.clone();
        }
        let mut frames = Vec::new();
        for ip in analysis.stack_ips(stack) {
            frames.extend(self.resolve(ip));
        }
        if !self.keep_runtime {
            let skip = frames.iter().take_while(|f| is_runtime(f)).count();
            if skip < frames.len() {
                frames.drain(..skip);
            }
        }
        let frames: Rc<[Frame]> = frames.into();
        self.cache.insert(stack, frames.clone());
        frames
    }

    /// Frames of `stack` without the plumbing between the program's entry and user code
    /// (std's runtime, libc start-up, thread start): what trees and summaries show. When
    /// nothing would remain, the trimmed stack is returned whole.
    pub fn user_frames(&mut self, analysis: &Analysis, stack: u32) -> Vec<Frame> {
        let frames = self.frames(analysis, stack);
        if self.keep_runtime {
            return frames.to_vec();
        }
        let user: Vec<Frame> = frames.iter().filter(|f| !is_plumbing(f)).cloned().collect();
        if user.is_empty() {
            frames.to_vec()
        } else {
            user
        }
    }

    /// The allocation site of `stack`: its most recent frame after trimming (the first of
    /// [`Symbols::frames`]). Resolves only the frames up to that one, not the whole stack:
    /// reports that group by site (stats) symbolize every distinct stack.
    pub fn location(&mut self, analysis: &Analysis, stack: u32) -> String {
        if let Some(f) = self.cache.get(&stack) {
            return f.first().map_or_else(|| "[unknown]".to_string(), label);
        }
        let mut most_recent = None;
        for ip in analysis.stack_ips(stack) {
            for f in self.resolve(ip) {
                if self.keep_runtime || !is_runtime(&f) {
                    return label(&f);
                }
                most_recent.get_or_insert(f);
            }
        }
        // Nothing but runtime frames: nothing is trimmed, the most recent frame stands.
        most_recent.map_or_else(|| "[unknown]".to_string(), |f| label(&f))
    }
}

/// Runtime frames: the tracer's rule, plus the `#[global_allocator]` shims (`__rustc::__rust_alloc`
/// and friends, whose line info points at the `static` that names the allocator).
fn is_runtime(f: &Frame) -> bool {
    is_runtime_frame(f) || f.function.starts_with("__rustc::") || f.function.starts_with("__rust_")
}

/// Frames that only carry control from the entry point (or a thread start) to user code.
pub fn is_plumbing(f: &Frame) -> bool {
    const ENTRY: [&str; 8] = [
        "main",
        "_start",
        "__libc_start_main",
        "__libc_start_call_main",
        "__libc_init_first",
        "start_thread",
        "clone",
        "clone3",
    ];
    is_runtime(f)
        || (f.filename.is_empty() || f.filename == "??") && ENTRY.contains(&f.function.as_str())
}

/// `function at file:line` (or what is known of it).
pub fn label(f: &Frame) -> String {
    let function = if f.function.is_empty() {
        "?"
    } else {
        f.function.as_str()
    };
    if f.filename.is_empty() || f.filename == "??" {
        function.to_string()
    } else {
        format!("{function} at {}:{}", f.filename, f.lineno)
    }
}

/// A frame label safe inside folded-stack lines (no `;`, no newlines).
pub fn folded_label(f: &Frame) -> String {
    label(f).replace(';', ",").replace(['\n', '\r'], " ")
}

/// The GNU build id of an ELF file on disk (from its PT_NOTE segments), if it has one.
pub fn file_build_id(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    // 64-bit little-endian ELF only (what this tracer runs on).
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at =
        |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4])) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let (phoff, phentsize, phnum) = (u64_at(&eh, 32), u16_at(&eh, 54), u16_at(&eh, 56));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        f.seek(SeekFrom::Start(phoff + i * phentsize)).ok()?;
        f.read_exact(&mut ph).ok()?;
        if u32_at(&ph, 0) != 4 {
            continue; // not PT_NOTE
        }
        let (offset, size) = (u64_at(&ph, 8), u64_at(&ph, 32));
        if size > 1 << 20 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        f.seek(SeekFrom::Start(offset)).ok()?;
        f.read_exact(&mut notes).ok()?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at) as usize;
            let descsz = u32_at(&notes, at + 4) as usize;
            let kind = u32_at(&notes, at + 8);
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let end = desc_at.checked_add(descsz.div_ceil(4) * 4)?;
            if desc_at + descsz > notes.len() {
                break;
            }
            if kind == 3 && namesz == 4 && &notes[name_at..name_at + 4] == b"GNU\0" {
                return Some(notes[desc_at..desc_at + descsz].to_vec());
            }
            at = end;
        }
    }
    None
}
