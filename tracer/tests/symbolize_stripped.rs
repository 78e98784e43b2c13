//! Symbolizing code that has no DWARF and no symbol of its own: a static function of a stripped
//! shared library, built here with `cc`, laid out right after an exported function.
//!
//! The nearest symbol before such code is that exported function, and naming the frame by it
//! is the wrong answer reports used to give (git's code as `error`, libc's `start_thread` as
//! `pthread_condattr_setpshared`). A symbol names only the bytes its size covers; what no symbol
//! covers is `<file name>+0x<offset>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tidemark_tracer::symbolize::{current_modules, Frame, Module, Symbolizer};

/// Built at -O0 with frame pointers: no inlining, functions in source order, and a stack that
/// the tracer's frame-pointer walk goes through.
const LIBRARY: &str = r#"
typedef void (*callback)(void);

/* Exported and laid out just before tm_hidden: the nearest symbol before tm_hidden's code once
   the library is stripped. */
int tm_exported_before(int x) { return x * 3 + 1; }

static __attribute__((noinline)) void tm_hidden(callback cb) {
    cb();
    __asm__ volatile(""); /* keeps the call a call */
}

void tm_entry(callback cb) {
    tm_hidden(cb);
    __asm__ volatile("");
}
"#;

struct Library {
    /// With its `.symtab`.
    full: PathBuf,
    /// Linked with `-s`: `.dynsym` only, as distributions ship libraries.
    stripped: PathBuf,
    /// (address, size) of each function, from the full library's symbol table.
    functions: HashMap<String, (u64, u64)>,
}

impl Library {
    fn function(&self, name: &str) -> (u64, u64) {
        self.functions[name]
    }
}

/// Builds the library in a directory of its own, named `lib<name>.so` and
/// `lib<name>-stripped.so`.
fn build_library(name: &str) -> Library {
    let dir = std::env::temp_dir().join(format!(
        "tidemark-symbolize-stripped-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("tm.c");
    std::fs::write(&src, LIBRARY).unwrap();
    let build = |out: &Path, extra: &[&str]| {
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O0", "-fno-omit-frame-pointer", "-o"])
            .arg(out)
            .arg(&src)
            .args(extra)
            .status()
            .expect("cc runs (install gcc)");
        assert!(status.success(), "cc failed on {}", src.display());
    };
    let full = dir.join(format!("lib{name}.so"));
    let stripped = dir.join(format!("lib{name}-stripped.so"));
    build(&full, &[]);
    build(&stripped, &["-s"]);

    use object::{Object, ObjectSymbol};
    let data = std::fs::read(&full).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let functions: HashMap<String, (u64, u64)> = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.is_definition())
        .filter_map(|s| Some((s.name().ok()?.to_string(), (s.address(), s.size()))))
        .collect();
    let data = std::fs::read(&stripped).unwrap();
    let file = object::File::parse(&*data).unwrap();
    assert!(file.symbol_table().is_none(), "-s left a .symtab");

    let lib = Library {
        full,
        stripped,
        functions,
    };
    // The layout the test is about: tm_hidden between two exported functions, and no symbol
    // of the stripped library covering it.
    let (before, before_size) = lib.function("tm_exported_before");
    let (hidden, hidden_size) = lib.function("tm_hidden");
    let (entry, _) = lib.function("tm_entry");
    assert!(before_size > 0 && hidden_size > 0, "{:?}", lib.functions);
    assert!(before + before_size <= hidden, "{:?}", lib.functions);
    assert!(hidden + hidden_size <= entry, "{:?}", lib.functions);
    lib
}

/// One module: `path` loaded at `base`, its code anywhere in the next 4 GiB.
fn module_at(path: &Path, base: u64) -> Module {
    Module {
        path: path.to_path_buf(),
        build_id: Vec::new(),
        base,
        segments: vec![(base, base + (1 << 32))],
    }
}

fn unnamed(function: String) -> Vec<Frame> {
    vec![Frame::with_function(function, "??", 0)]
}

fn named(function: &str) -> Vec<Frame> {
    vec![Frame::with_function(function, "??", 0)]
}

#[test]
fn a_symbol_names_only_the_bytes_its_size_covers() {
    let lib = build_library("tmsize");
    let (before, before_size) = lib.function("tm_exported_before");
    let (hidden, _) = lib.function("tm_hidden");
    let (entry, _) = lib.function("tm_entry");
    let end = before + before_size;

    // The defect: the nearest preceding symbol, with no size check, names tm_hidden's code.
    let loader = addr2line::Loader::new(&lib.stripped).unwrap();
    assert_eq!(loader.find_symbol(hidden + 4), Some("tm_exported_before"));

    // `resolve` takes return addresses and looks up `ip - 1`: ip `a + 1` asks about byte `a`.
    let base = 0x7f00_0000_0000;
    let mut s = Symbolizer::new(vec![module_at(&lib.stripped, base)]);
    assert_eq!(s.resolve(base + before + 1), named("tm_exported_before"));
    assert_eq!(
        s.resolve(base + end),
        named("tm_exported_before"),
        "last byte"
    );
    assert_eq!(
        s.resolve(base + end + 1),
        unnamed(format!("libtmsize-stripped.so+{:#x}", end + 1)),
        "the first byte past tm_exported_before's end is not named by it"
    );
    assert_eq!(
        s.resolve(base + hidden + 5),
        unnamed(format!("libtmsize-stripped.so+{:#x}", hidden + 5))
    );
    assert_eq!(s.resolve(base + entry + 5), named("tm_entry"));

    // With its .symtab, the same file names the static function.
    let mut s = Symbolizer::new(vec![module_at(&lib.full, base)]);
    assert_eq!(s.resolve(base + hidden + 5), named("tm_hidden"));
    assert_eq!(s.resolve(base + end + 1), named("tm_hidden"));

    // A module whose file is missing is still named by its file name.
    let gone = lib.stripped.with_file_name("libgone.so.1");
    let mut s = Symbolizer::new(vec![module_at(&gone, base)]);
    assert_eq!(
        s.resolve(base + 0x1234),
        unnamed("libgone.so.1+0x1234".into())
    );
}

/// The ips of the stack [`record_stack`] was called from, innermost first.
static STACK: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

extern "C" fn record_stack() {
    let mut ips = [0u64; 64];
    let n = tidemark_tracer::capture_stack(0, &mut ips);
    *STACK.lock().unwrap() = ips[..n].to_vec();
}

#[test]
fn a_static_function_of_a_stripped_library_shows_as_module_and_offset() {
    let lib = build_library("tmlive");
    let (hidden, hidden_size) = lib.function("tm_hidden");
    let path = std::ffi::CString::new(lib.stripped.to_str().unwrap()).unwrap();
    // SAFETY: dlopen and dlsym take NUL-terminated strings; the library's constructors are
    // the compiler's defaults, and it stays loaded for the rest of the test process.
    let entry = unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null(), "dlopen {}", lib.stripped.display());
        libc::dlsym(handle, c"tm_entry".as_ptr())
    };
    assert!(!entry.is_null());
    // SAFETY: tm_entry is `void tm_entry(void (*)(void))`, and record_stack is such a function.
    let tm_entry: extern "C" fn(extern "C" fn()) = unsafe { std::mem::transmute(entry) };
    tm_entry(record_stack);
    let ips = STACK.lock().unwrap().clone();

    let modules = current_modules();
    let module = modules
        .iter()
        .find(|m| m.path == lib.stripped)
        .expect("the library is loaded")
        .clone();
    let in_library: Vec<u64> = ips
        .iter()
        .copied()
        .filter(|ip| module.segments.iter().any(|&(s, e)| *ip >= s && *ip < e))
        .collect();
    assert_eq!(in_library.len(), 2, "tm_hidden and tm_entry: {ips:#x?}");
    let hidden_ip = in_library[0];
    let offset = hidden_ip - module.base;
    assert!(
        (hidden..hidden + hidden_size).contains(&(offset - 1)),
        "{offset:#x} is tm_hidden's call of the callback"
    );

    let mut s = Symbolizer::new(modules);
    assert_eq!(
        s.resolve(hidden_ip),
        unnamed(format!("libtmlive-stripped.so+{offset:#x}"))
    );
    assert_eq!(s.resolve(in_library[1]), named("tm_entry"));
    for ip in ips {
        for f in s.resolve(ip) {
            assert_ne!(f.function, "tm_exported_before", "{ip:#x}");
        }
    }
}

/// A stripped library whose debug information a distribution installed apart (as Debian's
/// `libc6-dbg` does for glibc): found by the library's build id under the debug root, it names
/// the static function with its DWARF, file and line.
#[test]
fn a_separate_debug_file_is_found_by_build_id() {
    let lib = build_library("tmdebug");
    let dir = lib.full.parent().unwrap().to_path_buf();
    let with_dwarf = dir.join("libtmdebug-g.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O0", "-g", "-Wl,--build-id", "-o"])
        .arg(&with_dwarf)
        .arg(dir.join("tm.c"))
        .status()
        .unwrap();
    assert!(status.success());
    // What a distribution ships: the library stripped of everything (the build id note stays),
    // and its DWARF and symbol table in `.build-id/ab/cdef….debug`.
    let shipped = dir.join("libtmdebug-shipped.so");
    let objcopy = |args: &[&str], from: &Path, to: &Path| {
        let status = Command::new("objcopy")
            .args(args)
            .arg(from)
            .arg(to)
            .status()
            .expect("objcopy runs (install binutils)");
        assert!(status.success(), "objcopy {args:?}");
    };
    objcopy(&["--strip-all"], &with_dwarf, &shipped);
    let data = std::fs::read(&shipped).unwrap();
    let build_id = {
        use object::Object;
        object::File::parse(&*data)
            .unwrap()
            .build_id()
            .unwrap()
            .expect("a build id")
            .to_vec()
    };
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    let root = dir.join("debug-root");
    let debug_dir = root.join(".build-id").join(&hex[..2]);
    std::fs::create_dir_all(&debug_dir).unwrap();
    objcopy(
        &["--only-keep-debug"],
        &with_dwarf,
        &debug_dir.join(format!("{}.debug", &hex[2..])),
    );

    let (hidden, _) = lib.function("tm_hidden");
    let base = 0x7f00_0000_0000;
    let module = Module {
        build_id,
        ..module_at(&shipped, base)
    };
    // Without the debug file: module and offset (the layout is the first test's library's).
    let mut s = Symbolizer::new(vec![module.clone()]).with_debug_root(dir.join("nowhere"));
    assert_eq!(
        s.resolve(base + hidden + 5),
        unnamed(format!("libtmdebug-shipped.so+{:#x}", hidden + 5))
    );
    // With it: the function, its file and line.
    let mut s = Symbolizer::new(vec![module]).with_debug_root(&root);
    let frames = s.resolve(base + hidden + 5);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].function, "tm_hidden");
    assert!(frames[0].filename.ends_with("tm.c"), "{frames:?}");
    // tm_hidden's lines of LIBRARY (which begins with a newline): its opening line to its end.
    assert!((7..=10).contains(&frames[0].lineno), "{frames:?}");
}

/// A stripped executable's entry point has no symbol: it is named `_start` (which reports
/// trim), as far as the C runtime's `_start` reaches, and no further.
#[test]
fn a_stripped_executables_entry_point_is_start() {
    let dir = std::env::temp_dir().join(format!("tidemark-symbolize-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("main.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let exe = dir.join("stripped-main");
    let status = Command::new("cc")
        .args(["-O1", "-s", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc runs (install gcc)");
    assert!(status.success());
    let entry = {
        use object::Object;
        object::File::parse(&*std::fs::read(&exe).unwrap())
            .unwrap()
            .entry()
    };
    assert_ne!(entry, 0);
    let base = 0x5555_0000_0000;
    let mut s = Symbolizer::new(vec![module_at(&exe, base)]);
    // The return address of _start's call of __libc_start_main lies a few dozen bytes in.
    assert_eq!(s.resolve(base + entry + 0x21), named("_start"));
    assert_eq!(
        s.resolve(base + entry + 0x40),
        unnamed(format!("stripped-main+{:#x}", entry + 0x40))
    );
}
