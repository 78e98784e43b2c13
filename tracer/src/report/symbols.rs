//! Stack ids → symbolized frames, with the capture's own module list.
//!
//! When the recorded binary is gone frames fall back to `0x…` addresses; code that neither
//! DWARF nor a symbol names is `module+0x…` (see [`Symbolizer::resolve_uncached`]): reports
//! still render, just less readable.
//!
//! Reports walk every site's stack, and a capture has many more stacks than distinct
//! instruction pointers (stacks share their outer frames), so everything is interned:
//!
//! - each distinct ip is resolved once; its frames (several when calls were inlined) go to
//!   one arena and are named by a frame id from then on;
//! - a stack is cached as its (trimmed) frame ids, 4 bytes a frame, never as copies of
//!   frames;
//! - each distinct label (`function at file:line`) gets a label id, so reports aggregate
//!   by integers and build each string once.
//!
//! Frames are resolved only when a report asks for them: [`Symbols::location_id`] stops at
//! the allocation site, which is all stats needs.

use super::analysis::Analysis;
use super::replay::IntMap;
use crate::symbolize::{is_runtime_frame, unnamed_frame_module, Frame, Module, Symbolizer};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

/// A resolver for ips: the real [`Symbolizer`] or a function (tests, synthetic captures).
enum Resolver {
    Symbolizer(Box<Symbolizer>),
    Function(Box<dyn FnMut(u64) -> Vec<Frame>>),
}

/// What a frame is, decided once when it is interned.
const RUNTIME: u8 = 1;
const PLUMBING: u8 = 2;

/// The label of stacks with no frame at all.
const UNKNOWN: &str = "[unknown]";

/// Resolves stacks of one capture.
pub struct Symbols {
    resolver: Resolver,
    warnings: Vec<String>,
    keep_runtime: bool,
    /// ip → its frames' ids (`start..start + len`, innermost first).
    by_ip: IntMap<u64, (u32, u32)>,
    /// Every frame resolved so far, by frame id.
    frames: Vec<Frame>,
    /// Per frame id: [`RUNTIME`] and [`PLUMBING`] bits.
    kinds: Vec<u8>,
    /// Per frame id: its label id (`u32::MAX` until asked for).
    frame_labels: Vec<u32>,
    labels: Vec<Rc<str>>,
    label_ids: HashMap<Rc<str>, u32>,
    /// Stack id → its frame ids after trimming, most recent first.
    stacks: IntMap<u32, Rc<[u32]>>,
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
        Symbols::with(
            Resolver::Symbolizer(Box::new(Symbolizer::new(modules))),
            warnings,
        )
    }

    /// Resolves ips with `f` (innermost frame first, like [`Symbolizer::resolve`]).
    pub fn with_resolver(f: impl FnMut(u64) -> Vec<Frame> + 'static) -> Symbols {
        Symbols::with(Resolver::Function(Box::new(f)), Vec::new())
    }

    fn with(resolver: Resolver, warnings: Vec<String>) -> Symbols {
        Symbols {
            resolver,
            warnings,
            keep_runtime: false,
            by_ip: IntMap::default(),
            frames: Vec::new(),
            kinds: Vec::new(),
            frame_labels: Vec::new(),
            labels: Vec::new(),
            label_ids: HashMap::new(),
            stacks: IntMap::default(),
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

    /// Drops the debug information loaded so far (it is loaded again if needed). Frames
    /// already resolved stay: a report that has resolved its stacks calls this before
    /// building its output, so its peak memory does not hold both.
    pub fn release_debug_info(&mut self) {
        if let Resolver::Symbolizer(s) = &mut self.resolver {
            s.release_debug_info();
        }
    }

    /// The frame ids of `ip`, innermost first, resolving it the first time.
    fn ip_frames(&mut self, ip: u64) -> std::ops::Range<usize> {
        if let Some(&(start, len)) = self.by_ip.get(&ip) {
            return start as usize..(start + len) as usize;
        }
        let frames = match &mut self.resolver {
            Resolver::Symbolizer(s) => s.resolve_uncached(ip),
            Resolver::Function(f) => f(ip),
        };
        let start = self.frames.len();
        for f in frames {
            let kind = if is_runtime(&f) {
                RUNTIME | PLUMBING
            } else if is_plumbing(&f) {
                PLUMBING
            } else {
                0
            };
            self.kinds.push(kind);
            self.frame_labels.push(u32::MAX);
            self.frames.push(f);
        }
        self.by_ip
            .insert(ip, (start as u32, (self.frames.len() - start) as u32));
        start..self.frames.len()
    }

    /// The frame with id `id` (from [`Symbols::frame_ids`]).
    pub fn frame(&self, id: u32) -> &Frame {
        &self.frames[id as usize]
    }

    /// Frame ids of `stack`, most recent first, runtime frames trimmed from the top (unless
    /// nothing would remain).
    pub fn frame_ids(&mut self, analysis: &Analysis, stack: u32) -> Rc<[u32]> {
        if let Some(ids) = self.stacks.get(&stack) {
            return ids.clone();
        }
        let mut ids = Vec::new();
        for ip in analysis.stack_ips(stack) {
            ids.extend(self.ip_frames(ip).map(|i| i as u32));
        }
        if !self.keep_runtime {
            let skip = ids
                .iter()
                .take_while(|&&i| self.kinds[i as usize] & RUNTIME != 0)
                .count();
            if skip < ids.len() {
                ids.drain(..skip);
            }
        }
        let ids: Rc<[u32]> = ids.into();
        self.stacks.insert(stack, ids.clone());
        ids
    }

    /// Frames of `stack`, most recent first, runtime frames trimmed from the top (unless
    /// nothing would remain).
    pub fn frames(&mut self, analysis: &Analysis, stack: u32) -> Rc<[Frame]> {
        let ids = self.frame_ids(analysis, stack);
        ids.iter().map(|&i| self.frame(i).clone()).collect()
    }

    /// Frame ids of `stack` without the plumbing between the program's entry and user code
    /// (std's runtime, libc start-up, thread start): what trees and summaries show. When
    /// nothing would remain, the trimmed stack is put whole. `out` is cleared first.
    pub fn user_frame_ids(&mut self, analysis: &Analysis, stack: u32, out: &mut Vec<u32>) {
        let ids = self.frame_ids(analysis, stack);
        out.clear();
        if !self.keep_runtime {
            out.extend(
                ids.iter()
                    .copied()
                    .filter(|&i| self.kinds[i as usize] & PLUMBING == 0),
            );
        }
        if out.is_empty() {
            out.extend_from_slice(&ids);
        }
    }

    /// Frames of `stack` without the plumbing (see [`Symbols::user_frame_ids`]).
    pub fn user_frames(&mut self, analysis: &Analysis, stack: u32) -> Vec<Frame> {
        let mut ids = Vec::new();
        self.user_frame_ids(analysis, stack, &mut ids);
        ids.iter().map(|&i| self.frame(i).clone()).collect()
    }

    /// The label id of frame `id`: frames with the same [`label`] share it.
    pub fn label_id(&mut self, id: u32) -> u32 {
        let l = self.frame_labels[id as usize];
        if l != u32::MAX {
            return l;
        }
        let l = self.intern_label(label(&self.frames[id as usize]));
        self.frame_labels[id as usize] = l;
        l
    }

    /// The label id of the text `[unknown]` (stacks without frames).
    pub fn unknown_label(&mut self) -> u32 {
        self.intern_label(UNKNOWN.to_string())
    }

    fn intern_label(&mut self, text: String) -> u32 {
        if let Some(&l) = self.label_ids.get(text.as_str()) {
            return l;
        }
        let text: Rc<str> = text.into();
        let l = self.labels.len() as u32;
        self.labels.push(text.clone());
        self.label_ids.insert(text, l);
        l
    }

    /// The text of label `id` (`function at file:line`).
    pub fn label_text(&self, id: u32) -> &str {
        &self.labels[id as usize]
    }

    /// The label id of `stack`'s allocation site: its most recent frame after trimming
    /// (the first of [`Symbols::frames`]). Resolves only the frames up to that one, not the
    /// whole stack: reports that group by site (stats) symbolize every distinct stack.
    pub fn location_id(&mut self, analysis: &Analysis, stack: u32) -> u32 {
        if let Some(ids) = self.stacks.get(&stack) {
            return match ids.first() {
                Some(&i) => self.label_id(i),
                None => self.unknown_label(),
            };
        }
        let mut most_recent = None;
        for ip in analysis.stack_ips(stack) {
            for i in self.ip_frames(ip) {
                if self.keep_runtime || self.kinds[i] & RUNTIME == 0 {
                    return self.label_id(i as u32);
                }
                most_recent.get_or_insert(i as u32);
            }
        }
        // Nothing but runtime frames: nothing is trimmed, the most recent frame stands.
        match most_recent {
            Some(i) => self.label_id(i),
            None => self.unknown_label(),
        }
    }

    /// The allocation site of `stack` as text (see [`Symbols::location_id`]).
    pub fn location(&mut self, analysis: &Analysis, stack: u32) -> String {
        let l = self.location_id(analysis, stack);
        self.label_text(l).to_string()
    }
}

/// Runtime frames: the tracer's rule, plus the `#[global_allocator]` shims (`__rustc::__rust_alloc`
/// and friends, whose line info points at the `static` that names the allocator), and C++'s
/// allocation functions: every C++ allocation passes `operator new` (and, without inlining,
/// the standard allocator's `allocate`), which would otherwise be the top site of them all.
fn is_runtime(f: &Frame) -> bool {
    let name = f.function.as_str();
    is_runtime_frame(f)
        || name.starts_with("__rustc::")
        || name.starts_with("__rust_")
        || is_cxx_allocation(name)
}

/// `operator new` and `operator new[]` (any overload; demangled or not: `_Znwm`, `_Znam`, ...),
/// and the standard library's allocators' `allocate`.
fn is_cxx_allocation(name: &str) -> bool {
    if name.starts_with("operator new(") || name.starts_with("operator new[](") {
        return true;
    }
    if let Some(rest) = name.strip_prefix("_Zn") {
        return rest.starts_with("wm") || rest.starts_with("am");
    }
    [
        "std::allocator<",
        "std::__new_allocator<",
        "__gnu_cxx::new_allocator<",
        "std::allocator_traits<",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        && name.contains(">::allocate(")
}

/// Frames that only carry control from the entry point (or a thread start) to user code.
///
/// The C library's own entry frames (`__libc_start_call_main`, `start_thread`, `clone3`) are
/// static functions: libc's only symbol table is `.dynsym`, so they have no name and show as
/// `libc.so.6+0x…`. Every unnamed frame of the C library or the dynamic loader counts as
/// plumbing: besides those entry frames, the unnamed ones are internal helpers of an exported
/// function (`printf`, `dlopen`, `pthread_create`), whose own frame stays and names the call.
///
/// With the C library's separate debug file installed (`libc6-dbg`) those frames have names
/// and source files (`start_thread at ./nptl/pthread_create.c:442`): the entry names are the C
/// library's own, so they count whatever their file. `main` only without a file: a `main`
/// with debug information is the program's code.
pub fn is_plumbing(f: &Frame) -> bool {
    const ENTRY: [&str; 9] = [
        "_start",
        "__libc_start_main",
        "__libc_start_main_impl",
        "__libc_start_call_main",
        "start_thread",
        "clone",
        "__clone",
        "clone3",
        "__clone3",
    ];
    is_runtime(f)
        || ENTRY.contains(&f.function.as_str())
        || !has_file(f) && f.function == "main"
        || unnamed_frame_module(f).is_some_and(is_c_runtime_module)
}

/// Is `file_name` (a module's file name) the C library, its thread library or the dynamic
/// loader (glibc, as installed since 2.34 and before; musl)?
fn is_c_runtime_module(file_name: &str) -> bool {
    [
        "libc.so.",
        "libc-2.",
        "libpthread.so.",
        "libpthread-2.",
        "ld-linux",
        "ld-2.",
        "ld-musl-",
    ]
    .iter()
    .any(|p| file_name.starts_with(p))
}

/// `function at file:line` (or what is known of it).
pub fn label(f: &Frame) -> String {
    match function_label(f) {
        l if has_file(f) => format!("{l}:{}", f.lineno),
        l => l,
    }
}

/// `function at file` (or what is known of it): the function, whatever line of it.
pub fn function_label(f: &Frame) -> String {
    let function = if f.function.is_empty() {
        "?"
    } else {
        f.function.as_str()
    };
    if has_file(f) {
        format!("{function} at {}", f.filename)
    } else {
        function.to_string()
    }
}

fn has_file(f: &Frame) -> bool {
    !(f.filename.is_empty() || f.filename == "??")
}

/// A frame label safe inside folded-stack lines (no `;`, no newlines).
pub fn folded_label(f: &Frame) -> String {
    folded_text(&label(f))
}

/// A label made safe inside folded-stack lines (no `;`, no newlines).
pub fn folded_text(label: &str) -> String {
    label.replace(';', ",").replace(['\n', '\r'], " ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cxx_allocation_functions_are_runtime_frames() {
        let frame = |name: &str| Frame {
            filename: "??".into(),
            lineno: 0,
            function: name.into(),
        };
        for name in [
            "operator new(unsigned long)",
            "operator new[](unsigned long)",
            "operator new(unsigned long, std::align_val_t)",
            "_Znwm",
            "_ZnamRKSt9nothrow_t",
            "std::__new_allocator<int>::allocate(unsigned long, void const*)",
            "std::allocator_traits<std::allocator<char> >::allocate(std::allocator<char>&, unsigned long)",
        ] {
            assert!(is_runtime(&frame(name)), "{name}");
        }
        for name in ["operator newline_count(int)", "_Z4name", "make_buffer"] {
            assert!(!is_runtime(&frame(name)), "{name}");
        }
    }

    #[test]
    fn unnamed_frames_of_the_c_runtime_are_plumbing() {
        let frame = |name: &str| Frame::with_function(name, "??", 0);
        for name in [
            "libc.so.6+0x29d90",
            "libc.so.6+0x8a8fa",
            "libc-2.31.so+0x24083",
            "libpthread.so.0+0x8609",
            "ld-linux-x86-64.so.2+0x1b2c0",
            "ld-musl-x86_64.so.1+0x5f3e",
            "__libc_start_main",
            "__libc_start_call_main",
            "start_thread",
            "clone3",
        ] {
            assert!(is_plumbing(&frame(name)), "{name}");
        }
        for name in [
            // The program's own code, and other libraries: unnamed, but the reader's.
            "git+0x1a2b3c",
            "libcrypto.so.3+0x1234",
            "libcurl.so.4+0x40f0",
            // Named libc functions are the call that allocates.
            "strdup",
            "printf",
            // Not the symbolizer's form.
            "libc.so.6+0x",
            "libc.so.6+0xzz",
            "libc.so.6",
        ] {
            assert!(!is_plumbing(&frame(name)), "{name}");
        }
        // A frame with a file and line is never the unnamed form.
        assert!(!is_plumbing(&Frame::with_function(
            "libc.so.6+0x29d90",
            "src/main.c",
            3
        )));
    }

    /// With glibc's debug file installed its entry frames have files and lines; they are
    /// still plumbing. A `main` with a file is the program's.
    #[test]
    fn entry_frames_with_debug_information_are_plumbing() {
        for (name, file) in [
            ("start_thread", "./nptl/pthread_create.c"),
            (
                "__clone3",
                "./misc/../sysdeps/unix/sysv/linux/x86_64/clone3.S",
            ),
            ("__libc_start_main_impl", "./csu/../csu/libc-start.c"),
            (
                "__libc_start_call_main",
                "../sysdeps/nptl/libc_start_call_main.h",
            ),
        ] {
            assert!(is_plumbing(&Frame::with_function(name, file, 1)), "{name}");
        }
        assert!(!is_plumbing(&Frame::with_function("main", "src/main.c", 3)));
        assert!(is_plumbing(&Frame::with_function("main", "??", 0)));
    }
}
