//! `tidemark run [options] -- PROG ARGS...`: runs a program with the preload library, either
//! recording every allocation into a capture (glibc serves, as usual) or serving it with
//! tidemark's pymalloc, optionally under the debug hooks and optionally recording too.
//!
//! ```text
//! tidemark run -- ./prog args                       record tidemark-prog-PID.tdm
//! tidemark run -o run.tdm --follow-fork -- make     record make and every child it starts
//! tidemark run --allocator pymalloc -- python3 x.py run on tidemark's allocator
//! tidemark run --debug -- ./prog                    ... with the debug hooks (reports, abort)
//! ```
//!
//! The protocol with the library is the environment (read there once, without allocating;
//! see `cli/preload/src/role.rs`): `LD_PRELOAD`, `TIDEMARK_PRELOAD_ALLOCATOR`,
//! `TIDEMARK_PRELOAD_OUTPUT` (`%p` → pid), `TIDEMARK_PRELOAD_AGGREGATE`,
//! `TIDEMARK_PRELOAD_NATIVE_FRAMES`, `TIDEMARK_PRELOAD_FOLLOW_FORK`. The library removes them
//! (and itself from `LD_PRELOAD`) at load unless follow-fork is asked, so programs the traced
//! one execs run untouched.
//!
//! The exit code is the program's (128 + N when signal N killed it, as a shell reports it).
//! Errors before the program starts (not found, statically linked, capture not writable,
//! library missing) are one line each and exit status 2.

pub mod elf;
pub mod find;
mod follow;
mod signals;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use tidemark_tracer::capture::format::CaptureError;
use tidemark_tracer::report;

/// Which allocator serves the program.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocatorArg {
    /// tidemark's pymalloc-style allocator.
    Pymalloc,
    /// glibc's malloc (the default when recording).
    Malloc,
}

/// The options of `tidemark run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// The capture file (`%p` becomes the pid). Default: tidemark-PROG-PID.tdm here.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Keep only per-stack totals at the high-water mark and at the end (small files).
    #[arg(long)]
    pub aggregate: bool,
    /// Trace forked children (from the fork on) and programs started with exec too, each into
    /// its own capture (FILE.PID, or the pattern's %p).
    #[arg(long)]
    pub follow_fork: bool,
    /// Native frames kept per allocation stack.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub native_frames: u16,
    /// Serve the program's allocations with this allocator (no capture unless --trace or -o).
    #[arg(long, value_enum)]
    pub allocator: Option<AllocatorArg>,
    /// Serve with pymalloc under the debug hooks: corruption is reported and aborts; at exit
    /// every live block's guards and the quarantine's freed blocks are checked too (unless
    /// TIDEMARK_CHECK_AT_EXIT is set otherwise).
    #[arg(long)]
    pub debug: bool,
    /// With --allocator or --debug: record a capture as well (-o implies it).
    #[arg(long)]
    pub trace: bool,
    /// No summary after the run.
    #[arg(short, long)]
    pub quiet: bool,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = false,
        value_name = "PROG ARGS"
    )]
    pub command: Vec<OsString>,
}

/// What to run with which environment.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub program: PathBuf,
    /// `TIDEMARK_PRELOAD_*` variables to set (and, with --debug, `TIDEMARK_CHECK_AT_EXIT`).
    pub env: Vec<(&'static str, OsString)>,
    /// The capture name pattern (`%p` for the pid), when recording.
    pub capture: Option<PathBuf>,
}

/// Decides the environment for `args` (the program already resolved to `program`).
pub fn plan(args: &RunArgs, program: PathBuf) -> Plan {
    let allocator = match (args.debug, args.allocator) {
        (true, _) => Some("pymalloc_debug"),
        (false, Some(AllocatorArg::Pymalloc)) => Some("pymalloc"),
        (false, Some(AllocatorArg::Malloc)) => Some("malloc"),
        (false, None) => None,
    };
    let recording = allocator.is_none() || args.trace || args.output.is_some();
    let mut env: Vec<(&'static str, OsString)> = Vec::new();
    env.push((
        "TIDEMARK_PRELOAD_ALLOCATOR",
        allocator.unwrap_or("malloc").into(),
    ));
    let capture = recording.then(|| {
        args.output.clone().unwrap_or_else(|| {
            let name = program
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "prog".into());
            PathBuf::from(format!("tidemark-{name}-%p.tdm"))
        })
    });
    if let Some(c) = &capture {
        let abs = if c.is_absolute() {
            c.clone()
        } else {
            std::env::current_dir().unwrap_or_default().join(c)
        };
        env.push(("TIDEMARK_PRELOAD_OUTPUT", abs.into_os_string()));
        env.push((
            "TIDEMARK_PRELOAD_NATIVE_FRAMES",
            args.native_frames.to_string().into(),
        ));
        if args.aggregate {
            env.push(("TIDEMARK_PRELOAD_AGGREGATE", "1".into()));
        }
    }
    if args.follow_fork {
        env.push(("TIDEMARK_PRELOAD_FOLLOW_FORK", "1".into()));
    }
    // A write after free is caught when its block leaves the quarantine; one still there at
    // exit only by the check at exit, which `--debug` therefore turns on.
    if args.debug && std::env::var_os("TIDEMARK_CHECK_AT_EXIT").is_none() {
        env.push(("TIDEMARK_CHECK_AT_EXIT", "1".into()));
    }
    Plan {
        program,
        env,
        capture,
    }
}

/// `%p` → `pid`, `%%` → `%` (as the library expands it).
pub fn expand(pattern: &Path, pid: u32) -> PathBuf {
    let bytes = pattern.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 1 < bytes.len() && matches!(bytes[i + 1], b'p' | b'%') {
            if bytes[i + 1] == b'p' {
                out.extend_from_slice(pid.to_string().as_bytes());
            } else {
                out.push(b'%');
            }
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Checks the capture can be created (with this process's pid standing in for `%p`); the
/// probe file is removed again.
fn check_writable(pattern: &Path) -> Result<(), String> {
    let probe = expand(pattern, std::process::id());
    let existed = probe.exists();
    // A device or a FIFO takes the bytes (or refuses them later: /dev/full) but leaves
    // nothing to read; /dev/null is welcome, to time a run with the recording's cost.
    if let Ok(m) = std::fs::metadata(&probe) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let null = std::fs::metadata("/dev/null").map(|n| n.rdev());
        let is_null = m.file_type().is_char_device() && null.ok() == Some(m.rdev());
        if !(m.is_file() || is_null) {
            return Err(format!(
                "cannot write the capture {}: not a regular file (only /dev/null is taken, to \
                 time a run)",
                pattern.display()
            ));
        }
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&probe)
    {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(&probe);
            }
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot write the capture {}: {e}",
            pattern.display()
        )),
    }
}

/// Checks the program before starting it; returns its path and, for a `#!` script, its
/// interpreter.
fn resolve_program_and_interpreter(prog: &OsStr) -> Result<(PathBuf, Option<PathBuf>), String> {
    let Some(path) = find::in_path(prog, std::env::var_os("PATH")) else {
        let shown = prog.to_string_lossy();
        return Err(if prog.as_bytes().contains(&b'/') {
            match std::fs::metadata(prog) {
                Ok(m) if m.is_dir() => format!("{shown}: is a directory, not a program"),
                Ok(_) => {
                    format!("{shown}: not executable (chmod +x it, or run it with its interpreter)")
                }
                Err(_) => format!("{shown}: no such file"),
            }
        } else {
            format!("{shown}: program not found in PATH")
        });
    };
    let mut judged = path.clone();
    let mut interpreter = None;
    for _ in 0..4 {
        match elf::linkage(&judged) {
            Ok(elf::Linkage::Static) => {
                return Err(format!(
                    "{} is statically linked: the preload library cannot work on it (LD_PRELOAD needs the dynamic loader); use a dynamically linked build",
                    judged.display()
                ))
            }
            Ok(elf::Linkage::Script(interp)) => {
                interpreter.get_or_insert(interp.clone());
                judged = interp;
            }
            Ok(_) | Err(_) => break,
        }
    }
    Ok((path, interpreter))
}

/// Runs `tidemark run`; returns the process exit status (the program's, or 2 on an error
/// before it started).
pub fn main(args: RunArgs) -> i32 {
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            say!("tidemark: error: {e}");
            2
        }
    }
}

fn run(args: &RunArgs) -> Result<i32, String> {
    if args.debug && args.allocator == Some(AllocatorArg::Malloc) {
        return Err(
            "--debug runs the program on pymalloc with the debug hooks: drop --allocator malloc"
                .into(),
        );
    }
    let (program, interpreter) = resolve_program_and_interpreter(&args.command[0])?;
    if let (Some(interp), false, false) = (&interpreter, args.follow_fork, args.quiet) {
        // pyenv's `python3`, for one, is a shell script that execs the real interpreter.
        say!(
            "tidemark: note: {} is a script run by {}: programs it execs are traced only with --follow-fork",
            program.display(),
            interp.display()
        );
    }
    let library = find::preload_library()?;
    let plan = plan(args, program);
    if let Some(c) = &plan.capture {
        check_writable(c)?;
    }
    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    let mut preload = library.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    cmd.env("LD_PRELOAD", preload);
    for (k, v) in &plan.env {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let started_at = std::time::SystemTime::now();
    // The program's signals go to the program, while this process waits to report.
    let mut standing = signals::before_spawn();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", plan.program.display()))?;
    let pid = child.id();
    standing.program_started(pid);
    let follower = match (&plan.capture, args.quiet) {
        (Some(pattern), false) => follow::Follower::start(expand(pattern, pid), pid),
        _ => None,
    };
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", plan.program.display()))?;
    drop(standing);
    let elapsed = started.elapsed();
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => {
            if !args.quiet {
                say!(
                    "tidemark: {} was killed by signal {sig} ({})",
                    plan.program.display(),
                    signal_name(sig)
                );
            }
            128 + sig
        }
        (None, None) => 1,
    };
    if let (Some(pattern), false) = (&plan.capture, args.quiet) {
        let children = args.follow_fork.then_some(started_at);
        let analysis = follower.and_then(follow::Follower::finish);
        summarize(&expand(pattern, pid), pattern, children, elapsed, analysis);
    }
    Ok(code)
}

/// Prints what was recorded and the next command; with `children` (follow-fork: when the run
/// started), the captures the traced children wrote. `analysis` is the capture's, when it was
/// read while the program ran (see `follow`); else the file is read here.
fn summarize(
    capture: &Path,
    pattern: &Path,
    children: Option<std::time::SystemTime>,
    elapsed: std::time::Duration,
    analysis: Option<Result<report::Analysis, CaptureError>>,
) {
    use tidemark_tracer::report::text;
    if analysis.is_none() && !capture.exists() {
        say!(
            "tidemark: no capture was written at {} (the program did not start, or is not dynamically linked)",
            capture.display()
        );
        return;
    }
    if analysis.is_none() && !capture.is_file() {
        // /dev/null (to time a run), a FIFO another program reads: nothing to read back.
        say!(
            "tidemark: recorded into {} (not a regular file: no summary)",
            capture.display()
        );
        return;
    }
    let analysis =
        analysis.unwrap_or_else(|| report::analyze(capture, &report::AnalyzeOptions::default()));
    let mut next = capture.to_path_buf();
    match analysis {
        Ok(a) => {
            say!(
                "tidemark: recorded {} in {}: {}",
                capture.display(),
                text::duration(elapsed.as_nanos() as u64),
                totals_line(&a)
            );
            if a.end.is_none() && a.exec.is_some() && children.is_none() {
                say!(
                    "tidemark: the program it exec'd was not recorded (--follow-fork records it too)"
                );
            }
            no_malloc_note(&a);
        }
        Err(e) => say!("tidemark: recorded {} ({e})", capture.display()),
    }
    if let Some(since) = children {
        let children = child_captures(capture, pattern, since);
        // With follow-fork, what the program exec'd recorded under the same pid: a `#!`
        // shim's real program, say. Its capture is the one to look at next.
        if let Some((path, a)) = exec_successor(capture, &children) {
            say!(
                "tidemark: the program it exec'd recorded {} in {}: {}",
                path.display(),
                text::duration(a.duration_ns),
                totals_line(&a)
            );
            no_malloc_note(&a);
            next = path;
        }
        if !children.is_empty() {
            say!("tidemark: child processes wrote:");
            for c in children {
                say!("  {}", c.display());
            }
        }
    }
    say!("tidemark: next: tidemark flamegraph {}", shell_quote(&next));
}

/// A program that ran to its end without one call to the C malloc family either needs no heap
/// or brings its own allocator linked in (rustc's jemalloc, a static mimalloc), whose calls
/// never reach the preload: say so, rather than leave an empty capture unexplained.
fn no_malloc_note(a: &report::Analysis) {
    if a.totals.allocs == 0 && a.end.is_some() {
        say!(
            "tidemark: no call to malloc was recorded: the program needs no heap, or has its \
             own allocator linked in (rustc's jemalloc, a static mimalloc), which the preload \
             cannot see"
        );
    }
}

/// "N allocations, peak P, leaked L" and how the recording ended when not cleanly.
fn totals_line(a: &report::Analysis) -> String {
    use tidemark_tracer::report::text;
    format!(
        "{}, peak {}, leaked {}{}",
        text::counted(a.totals.allocs, "allocation", "allocations"),
        text::bytes(a.peak_bytes),
        text::bytes(a.leaked_bytes),
        match (&a.truncated, &a.end, &a.exec) {
            (Some(why), _, _) => format!(" (ends early: {why}{})", aggregate_cut(a)),
            (None, None, Some(exec)) => format!(" (ends at its exec of {})", exec.program),
            (None, None, None) if a.meta.aggregate => {
                format!(" (no end marker{})", aggregate_cut(a))
            }
            // SIGKILL, or a recording cut off another way: the events still in the
            // program's buffers at that moment are not in the file.
            (None, None, None) => " (no end marker: the last events may be missing)".into(),
            (None, Some(_), _) => String::new(),
        }
    )
}

/// What an aggregate capture cut off before its end holds: the totals of its last record of
/// them, written now and then (the writer's `AGGREGATE_EVERY_*`), or none.
fn aggregate_cut(a: &report::Analysis) -> String {
    use tidemark_tracer::report::text;
    match (
        a.meta.aggregate,
        a.end.is_some() || a.exec.is_some(),
        a.aggregate_ns,
    ) {
        (false, _, _) | (true, true, _) => String::new(),
        (true, false, Some(at)) => format!(
            ": the totals are those written at {}; what came after is missing",
            text::duration(at)
        ),
        (true, false, None) => {
            ": it ended before its first totals were written, so they are missing".into()
        }
    }
}

/// The capture of the last program the main process exec'd, among `children`: the one of the
/// main capture's pid that started last, read. None when the main process exec'd nothing
/// that recorded.
fn exec_successor(main: &Path, children: &[PathBuf]) -> Option<(PathBuf, report::Analysis)> {
    use tidemark_tracer::capture::CaptureReader;
    let meta_of = |p: &Path| CaptureReader::open(p).ok().map(|r| r.meta().clone());
    let pid = meta_of(main)?.pid;
    let (_, path) = children
        .iter()
        .filter_map(|c| {
            meta_of(c)
                .filter(|m| m.pid == pid)
                .map(|m| (m.start_unix_ms, c))
        })
        .max()?;
    let a = report::analyze(path, &report::AnalyzeOptions::default()).ok()?;
    Some((path.clone(), a))
}

/// Captures of traced children, forked or exec'd: `PATTERN.<pid>` or `PATTERN.<pid>.<n>` (or
/// the pattern with other pids when it has `%p`) beside the main one, written since `since`
/// (not those of earlier runs with the same pattern).
fn child_captures(main: &Path, pattern: &Path, since: std::time::SystemTime) -> Vec<PathBuf> {
    // File times come from a coarser clock than `since`: a capture created right after the
    // start may look a little older.
    let since = since
        .checked_sub(std::time::Duration::from_secs(1))
        .unwrap_or(std::time::UNIX_EPOCH);
    let dir = main.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let pat = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (prefix, suffix) = match pat.find("%p") {
        Some(i) => (pat[..i].to_string(), pat[i + 2..].to_string()),
        None => (format!("{pat}."), String::new()),
    };
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        // Named as `main` is (relative stays relative, without a `./` of its own).
        .map(|e| main.with_file_name(e.file_name()))
        .filter(|p| p != main)
        .filter(|p| {
            let Some(n) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                return false;
            };
            n.len() > prefix.len() + suffix.len()
                && n.starts_with(&prefix)
                && n.ends_with(&suffix)
                && is_pid_name(&n[prefix.len()..n.len() - suffix.len()])
        })
        .filter(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .collect();
    out.sort();
    out
}

/// What the preload puts for `%p`: a pid, or `pid.n` for the n-th program a process exec'd
/// after it recorded (`role::expand_output` in the preload).
fn is_pid_name(s: &str) -> bool {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        Some((pid, generation)) => digits(pid) && digits(generation),
        None => digits(s),
    }
}

fn shell_quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+%,:@".contains(&b))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .unwrap()
            .run
    }

    fn env_of(p: &Plan, k: &str) -> Option<String> {
        p.env
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    }

    #[test]
    fn tracing_run_records_with_glibc() {
        let a = parse(&["--", "./prog", "-x", "--y"]);
        assert_eq!(a.command, ["./prog", "-x", "--y"]);
        let p = plan(&a, PathBuf::from("/bin/prog"));
        assert_eq!(env_of(&p, "TIDEMARK_PRELOAD_ALLOCATOR").unwrap(), "malloc");
        assert!(env_of(&p, "TIDEMARK_PRELOAD_OUTPUT")
            .unwrap()
            .ends_with("/tidemark-prog-%p.tdm"));
        assert_eq!(env_of(&p, "TIDEMARK_PRELOAD_NATIVE_FRAMES").unwrap(), "64");
        assert_eq!(env_of(&p, "TIDEMARK_PRELOAD_FOLLOW_FORK"), None);
    }

    #[test]
    fn allocator_runs_record_only_when_asked() {
        let a = parse(&["--allocator", "pymalloc", "--", "prog"]);
        let p = plan(&a, PathBuf::from("/bin/prog"));
        assert_eq!(
            env_of(&p, "TIDEMARK_PRELOAD_ALLOCATOR").unwrap(),
            "pymalloc"
        );
        assert_eq!(p.capture, None);
        let a = parse(&[
            "--debug",
            "--trace",
            "-o",
            "/tmp/x.tdm",
            "--follow-fork",
            "prog",
        ]);
        let p = plan(&a, PathBuf::from("/bin/prog"));
        assert_eq!(
            env_of(&p, "TIDEMARK_PRELOAD_ALLOCATOR").unwrap(),
            "pymalloc_debug"
        );
        assert_eq!(env_of(&p, "TIDEMARK_PRELOAD_OUTPUT").unwrap(), "/tmp/x.tdm");
        assert_eq!(env_of(&p, "TIDEMARK_PRELOAD_FOLLOW_FORK").unwrap(), "1");
        assert_eq!(env_of(&p, "TIDEMARK_CHECK_AT_EXIT").unwrap(), "1");
        let a = parse(&["--aggregate", "--native-frames", "8", "prog"]);
        let p = plan(&a, PathBuf::from("prog"));
        assert_eq!(env_of(&p, "TIDEMARK_PRELOAD_AGGREGATE").unwrap(), "1");
        assert_eq!(env_of(&p, "TIDEMARK_PRELOAD_NATIVE_FRAMES").unwrap(), "8");
    }

    #[test]
    fn expands_pid_like_the_library() {
        assert_eq!(expand(Path::new("a-%p.tdm"), 12), PathBuf::from("a-12.tdm"));
        assert_eq!(expand(Path::new("a%%p"), 12), PathBuf::from("a%p"));
    }

    #[test]
    fn errors_are_one_line() {
        let e =
            resolve_program_and_interpreter(OsStr::new("no-such-program-tidemark")).unwrap_err();
        assert_eq!(e, "no-such-program-tidemark: program not found in PATH");
        let text = std::env::temp_dir().join(format!("tidemark-not-exec-{}", std::process::id()));
        std::fs::write(&text, b"not a program").unwrap();
        let text_name = text.to_str().unwrap();
        let not_exec =
            format!("{text_name}: not executable (chmod +x it, or run it with its interpreter)");
        for (prog, why) in [
            ("/", "/: is a directory, not a program"),
            (text_name, not_exec.as_str()),
            ("/no/such/prog", "/no/such/prog: no such file"),
        ] {
            let e = resolve_program_and_interpreter(OsStr::new(prog)).unwrap_err();
            assert_eq!(e, why);
        }
        std::fs::remove_file(&text).unwrap();
        assert_eq!(
            check_writable(Path::new("/dev/full")),
            Err(
                "cannot write the capture /dev/full: not a regular file (only /dev/null is \
                 taken, to time a run)"
                    .into()
            )
        );
        assert_eq!(check_writable(Path::new("/dev/null")), Ok(()));
        let e = check_writable(Path::new("/proc/no/such/dir/x.tdm")).unwrap_err();
        assert!(
            e.starts_with("cannot write the capture /proc/no/such/dir/x.tdm: "),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn finds_child_captures() {
        let dir = std::env::temp_dir().join(format!("tidemark-run-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for n in ["c.tdm", "c.tdm.12", "c.tdm.13", "c.tdm.x", "other"] {
            std::fs::write(dir.join(n), b"").unwrap();
        }
        let main = dir.join("c.tdm");
        let since = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let found = child_captures(&main, &main, since);
        assert_eq!(found, vec![dir.join("c.tdm.12"), dir.join("c.tdm.13")]);
        // A capture left by an earlier run with the same pattern is not this run's.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(child_captures(&main, &main, later).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
