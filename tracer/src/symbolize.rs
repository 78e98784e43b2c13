//! Turning return addresses into functions, files and lines.
//!
//! Only snapshots and reports symbolize, never the allocation path. The loaded objects come from
//! `dl_iterate_phdr` (path, build id, load base, executable segments), so a capture file can
//! carry them and symbolize later; addr2line reads each object's DWARF once, lazily, and every
//! resolved ip is cached. Inlined calls become frames of their own, innermost first.
//!
//! Code without DWARF is named from the object's ELF symbol tables, and only by a function
//! whose bytes hold the address ([`elf_symbols`]): stripped binaries and libc (which has only
//! `.dynsym`) keep most of their functions out of any table, and the nearest exported function
//! before them is not their name. Such a frame is called `module+0xoffset` (`libc.so.6+0x29d90`),
//! as perf and heaptrack call it.

mod elf_symbols;

use elf_symbols::ElfSymbols;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One loaded object (the executable or a shared library).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub path: PathBuf,
    /// The GNU build id (empty when the object has none).
    pub build_id: Vec<u8>,
    /// Load bias: runtime address minus the address in the file.
    pub base: u64,
    /// [start, end) of the executable mappings, runtime addresses.
    pub segments: Vec<(u64, u64)>,
}

/// One frame of a symbolized stack. Ordered by (filename, lineno, function), as tracemalloc
/// orders frames by (filename, lineno).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    pub filename: String,
    pub lineno: u32,
    pub function: String,
}

impl Frame {
    /// A frame with a file and a line (tracemalloc's frame).
    pub fn new(filename: impl Into<String>, lineno: u32) -> Frame {
        Frame {
            filename: filename.into(),
            lineno,
            function: String::new(),
        }
    }

    /// A frame with a function name too.
    pub fn with_function(
        function: impl Into<String>,
        filename: impl Into<String>,
        lineno: u32,
    ) -> Frame {
        Frame {
            filename: filename.into(),
            lineno,
            function: function.into(),
        }
    }
}

impl std::fmt::Display for Frame {
    /// `filename:lineno`, or the function name alone for a frame that has no file (the key of
    /// `KeyType::Function` statistics).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.filename.is_empty() {
            write!(f, "{}", self.function)
        } else {
            write!(f, "{}:{}", self.filename, self.lineno)
        }
    }
}

/// The loader's running counts of objects loaded and unloaded (`dlpi_adds`, `dlpi_subs`):
/// they change whenever the module set does. One `dl_iterate_phdr` step.
pub fn module_load_counts() -> (u64, u64) {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr hands a valid info, and `data` is the tuple below.
        unsafe {
            let info = &*info;
            *(data as *mut (u64, u64)) = (info.dlpi_adds, info.dlpi_subs);
        }
        1
    }
    let mut counts = (0u64, 0u64);
    // SAFETY: the callback writes only the tuple `data` points to, during the call.
    unsafe { libc::dl_iterate_phdr(Some(first), &mut counts as *mut (u64, u64) as *mut _) };
    counts
}

/// The objects loaded in this process now.
pub fn current_modules() -> Vec<Module> {
    let mut modules: Vec<Module> = Vec::new();
    // SAFETY: the callback only reads the `dl_phdr_info` it is handed, for the duration of the
    // call, and `data` is the `Vec` above, alive for the whole iteration.
    unsafe {
        libc::dl_iterate_phdr(
            Some(collect_module),
            &mut modules as *mut Vec<Module> as *mut _,
        );
    }
    modules
}

unsafe extern "C" fn collect_module(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr hands a valid info and our `data` pointer (see current_modules).
    let (info, modules) = unsafe { (&*info, &mut *(data as *mut Vec<Module>)) };
    let base = info.dlpi_addr;
    // SAFETY: dlpi_name is null or a NUL-terminated string owned by the loader.
    let name = if info.dlpi_name.is_null() {
        Vec::new()
    } else {
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
            .to_bytes()
            .to_vec()
    };
    let path = if name.is_empty() {
        if modules.is_empty() {
            std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::new())
        } else {
            PathBuf::new()
        }
    } else {
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(name))
    };
    let mut segments = Vec::new();
    let mut build_id = Vec::new();
    let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: the loader guarantees dlpi_phnum headers at dlpi_phdr.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }
    };
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            let start = base.wrapping_add(ph.p_vaddr);
            segments.push((start, start.wrapping_add(ph.p_memsz)));
        } else if ph.p_type == libc::PT_NOTE && build_id.is_empty() {
            // SAFETY: a PT_NOTE segment is mapped at base + p_vaddr for p_memsz bytes.
            let notes = unsafe {
                std::slice::from_raw_parts(
                    base.wrapping_add(ph.p_vaddr) as *const u8,
                    ph.p_memsz as usize,
                )
            };
            build_id = find_build_id(notes).unwrap_or_default();
        }
    }
    modules.push(Module {
        path,
        build_id,
        base,
        segments,
    });
    0
}

/// The NT_GNU_BUILD_ID descriptor in a block of ELF notes.
fn find_build_id(mut notes: &[u8]) -> Option<Vec<u8>> {
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let word =
            |i: usize| u32::from_ne_bytes([notes[i], notes[i + 1], notes[i + 2], notes[i + 3]]);
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let name_end = 12 + align4(namesz);
        let desc_end = name_end.checked_add(align4(descsz))?;
        if desc_end > notes.len() {
            return None;
        }
        if kind == 3 && namesz == 4 && &notes[12..16] == b"GNU\0" {
            return Some(notes[name_end..name_end + descsz].to_vec());
        }
        notes = &notes[desc_end..];
    }
    None
}

/// The name to show for a DWARF or symbol table `name`: demangled, without a symbol version
/// (`__libc_start_main@GLIBC_2.2.5`, as a debug file's `.symtab` has it) and without the
/// prefix of glibc's internal aliases (`__GI___clone3` is `__clone3`).
fn symbol_name(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    demangle(name.strip_prefix("__GI_").unwrap_or(name))
}

/// Demangles a Rust (v0 or legacy, without the `::h<hash>` suffix) or C++ symbol name;
/// anything else is returned as is.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(s) = sym.demangle(&cpp_demangle::DemangleOptions::default()) {
                return s;
            }
        }
    }
    name.to_string()
}

/// What one module's file says about its code, read the first time an ip in it is resolved.
struct ModuleDebug {
    /// Its DWARF, through addr2line (`None` when the file cannot be read or parsed).
    dwarf: Option<addr2line::Loader>,
    /// Its function symbols, each with its size (empty when the file cannot be read).
    symbols: ElfSymbols,
}

impl ModuleDebug {
    /// From the module's separate debug file when one is installed under `debug_root` (its
    /// DWARF and its full symbol table: libc's `start_thread`, ld.so's `allocate_dtv`), else
    /// from the module.
    fn load(module: &Module, debug_root: &Path) -> ModuleDebug {
        let path = module.path.as_path();
        let separate = separate_debug_file(debug_root, &module.build_id);
        let dwarf = separate
            .as_deref()
            .and_then(|p| addr2line::Loader::new(p).ok())
            .or_else(|| addr2line::Loader::new(path).ok());
        let symbols = separate
            .as_deref()
            .map(ElfSymbols::load)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ElfSymbols::load(path));
        ModuleDebug { dwarf, symbols }
    }
}

/// Where distributions install what they strip from their binaries (the DWARF and the full
/// symbol table; Debian's `libc6-dbg` and `*-dbgsym` packages, Fedora's debuginfo), named by
/// the binary's build id, as gdb, perf and heaptrack look it up: the file is the one built
/// with it, whatever its path.
fn separate_debug_file(debug_root: &Path, build_id: &[u8]) -> Option<PathBuf> {
    if build_id.len() < 2 {
        return None;
    }
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    let path = debug_root
        .join(".build-id")
        .join(&hex[..2])
        .join(format!("{}.debug", &hex[2..]));
    path.is_file().then_some(path)
}

/// Where separate debug files are installed, by default.
const DEBUG_ROOT: &str = "/usr/lib/debug";

/// Resolves ips to frames, caching per ip and per object.
pub struct Symbolizer {
    modules: Vec<Module>,
    /// Per module: `None` until an ip in it is resolved.
    debug: Vec<Option<ModuleDebug>>,
    /// Where separate debug files are looked up (`DEBUG_ROOT`).
    debug_root: PathBuf,
    cache: HashMap<u64, Vec<Frame>>,
}

impl Symbolizer {
    pub fn new(modules: Vec<Module>) -> Self {
        let debug = modules.iter().map(|_| None).collect();
        Symbolizer {
            modules,
            debug,
            debug_root: PathBuf::from(DEBUG_ROOT),
            cache: HashMap::new(),
        }
    }

    /// Looks separate debug files up under `root` (`root/.build-id/ab/cdef….debug`) instead
    /// of `/usr/lib/debug`: a sysroot's, or a test's.
    pub fn with_debug_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.debug_root = root.into();
        self
    }

    /// Drops the debug information and symbol tables loaded so far; they are loaded again when
    /// an ip needs them.
    pub fn release_debug_info(&mut self) {
        for debug in &mut self.debug {
            *debug = None;
        }
    }

    /// The modules this symbolizer knows.
    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// Is `ip` inside an executable segment of a known module?
    pub fn knows(&self, ip: u64) -> bool {
        self.module_of(ip).is_some()
    }

    fn module_of(&self, ip: u64) -> Option<usize> {
        self.modules
            .iter()
            .position(|m| m.segments.iter().any(|&(s, e)| ip >= s && ip < e))
    }

    /// Frames for the return address `ip`: innermost (inlined) first, outermost (the function
    /// that contains the call) last. The lookup uses `ip - 1`, inside the call instruction.
    /// An ip in no known module (or in one whose path is unknown) gives one frame with function
    /// `0x...` and filename `??`; an ip in a module that neither DWARF nor a symbol names gives
    /// `<file name>+0x<offset>` (see [`Symbolizer::resolve_uncached`]).
    pub fn resolve(&mut self, ip: u64) -> Vec<Frame> {
        if let Some(f) = self.cache.get(&ip) {
            return f.clone();
        }
        let frames = self.resolve_uncached(ip);
        self.cache.insert(ip, frames.clone());
        frames
    }

    /// [`Symbolizer::resolve`] without the per-ip cache, for callers that keep their own.
    ///
    /// Names come from DWARF first. Code without DWARF is named by the ELF function symbol
    /// whose `[address, address + size)` holds the ip, and failing that it is called
    /// `<file name>+0x<offset>`: `libc.so.6+0x29d90`, `git+0x1a2b3c`. The offset is the
    /// return address minus the module's load bias, the address in the module's own terms that
    /// `addr2line -e`, `objdump` and perf take (for shared libraries and position-independent
    /// executables linked by GNU ld it is also the offset in the file).
    pub fn resolve_uncached(&mut self, ip: u64) -> Vec<Frame> {
        let Some(m) = self.module_of(ip) else {
            return vec![address_frame(ip)];
        };
        let module = &self.modules[m];
        if module.path.as_os_str().is_empty() {
            // Nothing to read, and no name to give: a capture's module whose file is gone.
            return vec![address_frame(ip)];
        }
        let debug =
            self.debug[m].get_or_insert_with(|| ModuleDebug::load(module, &self.debug_root));
        let probe = ip.wrapping_sub(1).wrapping_sub(module.base);
        let unnamed = || {
            let file = module.path.file_name().unwrap_or(module.path.as_os_str());
            format!(
                "{}+{:#x}",
                file.to_string_lossy(),
                ip.wrapping_sub(module.base)
            )
        };
        let mut out = Vec::new();
        if let Some(Ok(mut iter)) = debug.dwarf.as_ref().map(|d| d.find_frames(probe)) {
            while let Ok(Some(f)) = iter.next() {
                let function = f
                    .function
                    .as_ref()
                    .and_then(|n| n.raw_name().ok())
                    .map(|n| symbol_name(&n))
                    .unwrap_or_default();
                let (filename, lineno) = match &f.location {
                    Some(loc) => (loc.file.unwrap_or("??").to_string(), loc.line.unwrap_or(0)),
                    None => ("??".to_string(), 0),
                };
                out.push(Frame {
                    filename,
                    lineno,
                    function,
                });
            }
        }
        let symbol = || debug.symbols.find(probe).map(symbol_name);
        if out.is_empty() {
            out.push(Frame {
                filename: "??".into(),
                lineno: 0,
                function: symbol().unwrap_or_else(unnamed),
            });
        } else if let Some(last) = out.last_mut() {
            // The outermost frame is the function the code belongs to; with line-tables-only
            // debug info its DWARF name lacks the path (`main`), the symbol table has it all.
            // (Only a path replaces it: a C function's DWARF name, `__libc_start_main_impl`,
            // is better than its symbol's, `__libc_start_main`.)
            if !last.function.contains("::") {
                let full = symbol();
                if let Some(full) = full.filter(|f| f.contains("::") || last.function.is_empty()) {
                    last.function = full;
                } else if last.function.is_empty() {
                    // Line tables but no function (assembly built with -g): still say where.
                    last.function = unnamed();
                }
            }
        }
        out
    }
}

/// The frame of an ip that no module names: its address.
fn address_frame(ip: u64) -> Frame {
    Frame::with_function(format!("{ip:#x}"), "??", 0)
}

/// The module file name of a frame that no DWARF or symbol names (`libc.so.6` of
/// `libc.so.6+0x29d90`, as [`Symbolizer::resolve_uncached`] writes it), or `None` for any other
/// frame.
pub fn unnamed_frame_module(frame: &Frame) -> Option<&str> {
    if frame.filename != "??" || frame.lineno != 0 {
        return None;
    }
    let (module, offset) = frame.function.rsplit_once("+0x")?;
    let is_hex = !offset.is_empty() && offset.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex && !module.is_empty()).then_some(module)
}

fn strip_generic_open(name: &str) -> &str {
    name.trim_start_matches('<')
        .trim_start_matches('&')
        .trim_start_matches("mut ")
}

/// tidemark-tracer's and tidemark-alloc's `src/` directories as the compiler saw them.
fn own_source_dirs() -> (&'static str, &'static str) {
    static DIRS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    let (t, a) = DIRS.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tracer = format!("{}/src/", manifest.display());
        let alloc = match manifest.parent() {
            Some(root) => format!("{}/allocator/src/", root.display()),
            None => tracer.clone(),
        };
        (tracer, alloc)
    });
    (t, a)
}

const RUNTIME_CRATES: [&str; 7] = [
    "core::",
    "alloc::",
    "std::",
    "hashbrown::",
    "tidemark_tracer::",
    "tidemark_alloc::",
    "__rust",
];

/// Is `frame` part of the machinery between user code and the allocator: tidemark itself, or
/// Rust's standard library (`core`, `alloc`, `std`, and the crates std vendors)? Tracebacks are
/// trimmed of such frames at the top so that their most recent frame is the user's call.
pub fn is_runtime_frame(frame: &Frame) -> bool {
    let f = &frame.function;
    let g = strip_generic_open(f);
    // The allocator shims (`__rust_alloc`, `__rg_alloc`, ...) are generated into the crate that
    // declares `#[global_allocator]`, so they carry that crate's path and file.
    let last = f.rsplit("::").next().unwrap_or(f);
    if g.starts_with("tidemark_tracer::")
        || g.starts_with("tidemark_alloc::")
        || ["__rust_", "__rg_", "__rdl_"]
            .iter()
            .any(|p| last.starts_with(p))
    {
        return true;
    }
    let file = &frame.filename;
    if !file.is_empty() && file != "??" {
        // With `debug = "line-tables-only"` inlined frames carry short names (`alloc<..>`), so
        // tidemark's own frames are recognized by their source files too.
        let (tracer_src, alloc_src) = own_source_dirs();
        return file.starts_with(tracer_src)
            || file.starts_with(alloc_src)
            || file.contains("/tidemark-tracer-")
            || file.contains("/tidemark-alloc-")
            || file.starts_with("/rustc/")
            || file.contains("/library/core/src/")
            || file.contains("/library/alloc/src/")
            || file.contains("/library/std/src/")
            || file.contains("/rust/deps/");
    }
    // No line info: judge by the path of the implementing type, or for `<T as Trait>` with a
    // primitive or generic T, by the trait.
    if RUNTIME_CRATES.iter().any(|c| g.starts_with(c)) {
        return true;
    }
    if let Some((ty, rest)) = g.split_once(" as ") {
        if !ty.contains("::") {
            return RUNTIME_CRATES.iter().any(|c| rest.starts_with(c));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn here() -> u64 {
        let mut ips = [0u64; 4];
        crate::capture_stack(0, &mut ips);
        ips[1] // ips[0] is inside here(); ips[1] is the call of here()
    }

    #[test]
    fn resolves_own_code_with_lines() {
        let line = line!() + 1;
        let ip = here();
        let mut s = Symbolizer::new(current_modules());
        let frames = s.resolve(ip);
        // Optimized builds may inline the test body and move the call: lines are checked
        // exactly in debug builds only (the accuracy tests check them in release too).
        if cfg!(debug_assertions) {
            let f = frames
                .iter()
                .find(|f| f.lineno == line)
                .expect("a frame at the call line");
            assert!(f.filename.ends_with("symbolize.rs"), "{frames:?}");
        }
        assert!(
            frames.iter().any(|f| f.filename.ends_with("symbolize.rs")),
            "{frames:?}"
        );
        assert!(
            frames
                .iter()
                .any(|f| f.function.contains("resolves_own_code_with_lines")),
            "{frames:?}"
        );
        let last = frames.last().unwrap();
        assert!(!last.function.contains("::h"), "{frames:?}");
        assert_eq!(s.resolve(ip), frames, "cached");
        let unknown = s.resolve(8);
        assert_eq!(unknown, vec![Frame::with_function("0x8", "??", 0)]);
    }

    #[test]
    fn unnamed_frames_give_their_module() {
        let f = |function: &str, filename: &str, lineno| {
            unnamed_frame_module(&Frame::with_function(function, filename, lineno))
                .map(String::from)
        };
        assert_eq!(
            f("libc.so.6+0x29d90", "??", 0).as_deref(),
            Some("libc.so.6")
        );
        assert_eq!(f("git+0x1A2b3c", "??", 0).as_deref(), Some("git"));
        assert_eq!(f("a+b+0x10", "??", 0).as_deref(), Some("a+b"));
        assert_eq!(f("libc.so.6+0x29d90", "x.c", 3), None);
        assert_eq!(f("libc.so.6+0x", "??", 0), None);
        assert_eq!(f("+0x10", "??", 0), None);
        assert_eq!(f("0x7f0012345678", "??", 0), None);
        assert_eq!(f("operator+", "??", 0), None);
    }

    #[test]
    fn modules_have_the_executable_first() {
        let m = current_modules();
        assert!(!m.is_empty());
        assert!(!m[0].segments.is_empty());
        assert!(m[0].path.exists());
    }

    #[test]
    fn symbol_names_lose_versions_and_glibc_alias_prefixes() {
        assert_eq!(
            symbol_name("__libc_start_main@GLIBC_2.2.5"),
            "__libc_start_main"
        );
        assert_eq!(symbol_name("memcpy@@GLIBC_2.14"), "memcpy");
        assert_eq!(symbol_name("__GI___clone3"), "__clone3");
        assert_eq!(symbol_name("__GI__dl_allocate_tls"), "_dl_allocate_tls");
        assert_eq!(symbol_name("_ZN3foo3barEv"), "foo::bar()");
    }

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(demangle("malloc"), "malloc");
    }

    #[test]
    fn runtime_frames() {
        let std_frame = Frame::with_function(
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "/rustc/abc/library/alloc/src/raw_vec.rs",
            10,
        );
        assert!(is_runtime_frame(&std_frame));
        let user_impl =
            Frame::with_function("<app::Foo as core::clone::Clone>::clone", "src/main.rs", 3);
        assert!(!is_runtime_frame(&user_impl));
        assert!(is_runtime_frame(&Frame::with_function(
            "__rust_alloc",
            "??",
            0
        )));
        assert!(is_runtime_frame(&Frame::with_function(
            "app::_::__rust_alloc",
            "src/main.rs",
            3
        )));
        assert!(is_runtime_frame(&Frame::with_function(
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "??",
            0
        )));
        assert!(!is_runtime_frame(&Frame::with_function(
            "app::main",
            "??",
            0
        )));
        assert!(is_runtime_frame(&Frame::with_function(
            "<tidemark_tracer::Traced<A> as core::alloc::global::GlobalAlloc>::alloc",
            "/work/main/tracer/src/hook.rs",
            1
        )));
    }
}
