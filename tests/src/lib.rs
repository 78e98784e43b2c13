//! # tidemark-tests
//!
//! End-to-end tests across the tidemark crates, in `tests/`: real programs (C, Python, `sort`,
//! `git`) run on the preload library and compared with glibc runs, and Rust workloads run with
//! tidemark as their global allocator.
//!
//! Every test binary here uses [`tidemark_alloc::Tidemark`] as its global allocator, so the
//! same suite runs on plain pymalloc by default and on the debug hooks with
//! `TIDEMARK_MALLOC=pymalloc_debug cargo test -p tidemark-tests` (CI runs both).
//!
//! This library holds what the tests share: finding (building) the preload library and
//! running programs on it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The directory cargo builds this profile's artifacts into (`target/debug` or
/// `target/release`), found from the running test binary (`target/<profile>/deps/<test>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// `libtidemark_preload.so` of this profile, built on first use.
pub fn preload_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = profile_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "tidemark-preload"]);
        if release {
            build.arg("--release");
        }
        // The library must land beside this test binary's profile directory.
        build.env("CARGO_TARGET_DIR", dir.parent().expect("target dir"));
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building tidemark-preload failed");
        let lib = dir.join("libtidemark_preload.so");
        assert!(lib.exists(), "{} was not built", lib.display());
        lib
    })
}

/// Runs `cmd` on glibc and then on tidemark (the preload library); returns both outputs.
pub fn run_both(make: impl Fn() -> Command) -> (Output, Output) {
    let glibc = make().output().expect("program runs on glibc");
    let tidemark = make()
        .env("LD_PRELOAD", preload_library())
        .output()
        .expect("program runs on tidemark");
    (glibc, tidemark)
}

/// Asserts two runs behaved the same: exit status and stdout.
pub fn assert_same(what: &str, glibc: &Output, tidemark: &Output) {
    assert_eq!(
        glibc.status.code(),
        tidemark.status.code(),
        "{what}: exit status differs\n--- glibc stderr\n{}\n--- tidemark stderr\n{}",
        String::from_utf8_lossy(&glibc.stderr),
        String::from_utf8_lossy(&tidemark.stderr)
    );
    assert!(
        glibc.stdout == tidemark.stdout,
        "{what}: stdout differs\n--- glibc\n{}\n--- tidemark\n{}",
        String::from_utf8_lossy(&glibc.stdout),
        String::from_utf8_lossy(&tidemark.stdout)
    );
}

/// A scratch directory unique to this test process and `name`, emptied first.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidemark-tests-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The path of `tests/programs/<source>`.
fn program(source: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(source)
}

/// Compiles a C source file from `tests/programs/` with `cc`, returning the executable.
pub fn compile_c(source: &str, out_dir: &Path, extra: &[&str]) -> PathBuf {
    let src = program(source);
    let exe = out_dir.join(source.trim_end_matches(".c"));
    let status = Command::new("cc")
        .args(["-O1", "-g", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(extra)
        .status()
        .expect("cc runs (install gcc)");
    assert!(status.success(), "cc failed on {}", src.display());
    exe
}

/// Compiles a Rust source file from `tests/programs/` with `rustc` (the toolchain's, `RUSTC`
/// when cargo sets it) at opt-level 1 with line tables, returning the executable.
pub fn compile_rust(source: &str, out_dir: &Path, extra: &[&str]) -> PathBuf {
    let src = program(source);
    let exe = out_dir.join(source.trim_end_matches(".rs"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition=2021", "-C", "opt-level=1", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(extra)
        .status()
        .expect("rustc runs");
    assert!(status.success(), "rustc failed on {}", src.display());
    exe
}

/// Runs `cmd` to its end, or kills it after `limit` and fails the test with `what` (a program
/// that deadlocks must fail the test, not hang the suite). `cmd` runs in a process group of its
/// own, and the whole group is killed: a `tidemark run` leaves no hung program behind.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration, what: &str) -> Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            // SAFETY: kill has no memory preconditions; the group is the one `cmd` leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}, killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
    }
}

/// "function:line" of the line marked `/* SITE <marker> */` in `tests/programs/<source>`.
pub fn site(source: &str, function: &str, marker: &str) -> String {
    let path = program(source);
    let code = std::fs::read_to_string(&path).expect("the program's source");
    let tag = format!("/* SITE {marker} */");
    let line = code
        .lines()
        .position(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("{tag} not in {source}"));
    format!("{function}:{}", line + 1)
}

/// `tidemark run ARGS` in `dir`, its output captured.
pub fn tidemark_run(dir: &Path, args: &[&str]) -> Output {
    Command::new(tidemark_cli())
        .arg("run")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("tidemark runs")
}

/// The `tidemark` binary: `target/<profile>/tidemark` (built on first use, beside the preload
/// library, so `tidemark run` finds the library without any path set), or `TIDEMARK_TEST_CLI`
/// when set.
pub fn tidemark_cli() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        preload_library();
        let dir = profile_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "tidemark"]);
        if release {
            build.arg("--release");
        }
        build.env("CARGO_TARGET_DIR", dir.parent().expect("target dir"));
        assert!(
            build.status().expect("cargo runs").success(),
            "building tidemark"
        );
        let bin = std::env::var_os("TIDEMARK_TEST_CLI")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("tidemark"));
        let help = Command::new(&bin)
            .args(["run", "--help"])
            .output()
            .expect("tidemark runs");
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("--follow-fork"),
            "`tidemark run --help` lacks options:\n{help}"
        );
        bin
    })
}

/// The CPython executable itself, if `python3` is installed (`python3` may be a shell shim that
/// execs it, and exec'd programs do not inherit the preload).
pub fn python_executable() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The capture files (`*.tdm*`) in `dir`, sorted by name.
pub fn captures_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".tdm"))
        .collect();
    v.sort();
    v
}

/// One allocation site of a capture, symbolized.
#[derive(Debug)]
pub struct SiteView {
    /// "function:line" (or "function" without line info), most recent call first, runtime
    /// frames kept.
    pub frames: Vec<String>,
    pub thread: u32,
    pub total_count: u64,
    pub total_bytes: u64,
    /// Bytes of this site still live at the end of the capture.
    pub cur_bytes: u64,
}

/// A capture read back with the report API, for assertions.
pub struct Capture {
    pub pid: u32,
    /// The end marker is there and nothing was cut short.
    pub complete: bool,
    pub dropped: u64,
    /// Events written, as the end marker counts them (0 without one).
    pub events: u64,
    /// The program the recording ended by exec'ing, if it did.
    pub exec: Option<String>,
    pub threads: usize,
    pub allocs: u64,
    pub sites: Vec<SiteView>,
}

impl Capture {
    pub fn read(path: &Path) -> Capture {
        use tidemark_tracer::report::{self, AnalyzeOptions, Symbols};
        let a = report::analyze(path, &AnalyzeOptions::default())
            .unwrap_or_else(|e| panic!("{} does not read: {e}", path.display()));
        let mut syms = Symbols::new(&a).keep_runtime_frames(true);
        let sites = a
            .sites
            .iter()
            .map(|s| SiteView {
                frames: syms
                    .frames(&a, s.stack)
                    .iter()
                    .map(|f| {
                        if f.lineno > 0 {
                            format!("{}:{}", f.function, f.lineno)
                        } else {
                            f.function.clone()
                        }
                    })
                    .collect(),
                thread: s.thread,
                total_count: s.total_count,
                total_bytes: s.total_bytes,
                cur_bytes: s.cur_bytes,
            })
            .collect();
        Capture {
            pid: a.meta.pid,
            complete: a.end.is_some() && a.truncated.is_none(),
            dropped: a.end.as_ref().map_or(0, |e| e.dropped),
            events: a.end.as_ref().map_or(0, |e| e.events),
            exec: a.exec.as_ref().map(|e| e.program.clone()),
            threads: a.threads.len(),
            allocs: a.totals.allocs,
            sites,
        }
    }

    /// Sites whose stack passes through `frame` ("function:line").
    pub fn at<'a>(&'a self, frame: &'a str) -> impl Iterator<Item = &'a SiteView> + 'a {
        self.sites
            .iter()
            .filter(move |s| s.frames.iter().any(|f| f == frame))
    }

    pub fn count_at(&self, frame: &str) -> u64 {
        self.at(frame).map(|s| s.total_count).sum()
    }

    /// (count, bytes, live bytes) of the allocations whose stack passes through `frame`.
    pub fn totals_at(&self, frame: &str) -> (u64, u64, u64) {
        self.at(frame).fold((0, 0, 0), |t, s| {
            (t.0 + s.total_count, t.1 + s.total_bytes, t.2 + s.cur_bytes)
        })
    }

    /// Every site, one line each, for assertion messages.
    pub fn describe(&self) -> String {
        self.sites
            .iter()
            .map(|s| {
                format!(
                    "  {} x{} ({} B): {}\n",
                    s.thread,
                    s.total_count,
                    s.total_bytes,
                    s.frames.join(" <- ")
                )
            })
            .collect()
    }
}
