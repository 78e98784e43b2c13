//! `tidemark run` across `fork` without `exec`, deaths by SIGINT, and SIGTERM or SIGHUP
//! sent to `tidemark run` itself.
//!
//! - `--follow-fork`: a forked child records its own capture (named with its pid) from the
//!   moment of the fork, holding exactly its own allocations; the parent's capture holds
//!   exactly the parent's (the events it had buffered at the fork written once, by the
//!   parent). Without it only the parent is recorded, and the child's exit handlers still run.
//! - SIGINT: a program with no handler of its own dies by SIGINT (status passed through) with
//!   its capture flushed; the preload's flush handler is invisible to the program, so CPython
//!   still raises KeyboardInterrupt.
//! - SIGTERM or SIGHUP sent to `tidemark run` alone (`kill`, `timeout`, a CI cancel) is passed
//!   on to the program, which is never left running without its parent.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use tidemark_tests::{
    captures_in, compile_c, preload_library, python_executable, scratch_dir, site, text,
    tidemark_cli, tidemark_run, Capture,
};

/// C flags of code as distributions build it: no frame pointers (stacks need DWARF).
const NO_FP: [&str; 3] = [
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-pthread",
];

const FORK_PROGRAM: &str = "run_fork_record.c";

/// The child's pid, which the fork program reports on stderr.
fn child_pid(stderr: &str) -> u32 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("child pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no child pid in {stderr}"))
}

/// The fork program's sites.
struct ForkSites {
    before: String,
    after: String,
    thread: String,
    child: String,
}

fn fork_sites() -> ForkSites {
    ForkSites {
        before: site(FORK_PROGRAM, "before_fork", "before"),
        after: site(FORK_PROGRAM, "after_fork", "after"),
        thread: site(FORK_PROGRAM, "in_thread", "thread"),
        child: site(FORK_PROGRAM, "in_child", "child"),
    }
}

/// The parent's capture holds the parent's allocations exactly (each once, the ones still
/// buffered at the fork included) and none of the child's.
fn assert_parent_capture(c: &Capture, s: &ForkSites) {
    let all = c.describe();
    assert!(c.complete, "the parent's capture is complete:\n{all}");
    assert_eq!(c.dropped, 0);
    assert_eq!(c.totals_at(&s.before), (40, 40 * 1111, 0), "{all}");
    assert_eq!(c.totals_at(&s.after), (30, 30 * 2222, 0), "{all}");
    assert_eq!(c.totals_at(&s.thread), (20_000, 20_000 * 444, 0), "{all}");
    assert_eq!(
        c.totals_at(&s.child),
        (0, 0, 0),
        "the child's allocations: {all}"
    );
    // Nothing of the preload's own: with --follow-fork its constructor sets the children's
    // capture pattern in the environment after the recording started (it showed as leaks).
    assert!(
        !c.sites
            .iter()
            .any(|s| s.frames.iter().any(|f| f.contains("tidemark_preload::"))),
        "{all}"
    );
}

#[test]
fn fork_without_exec_is_followed_into_the_childs_own_capture() {
    let s = fork_sites();
    let dir = scratch_dir("fork-follow");
    let exe = compile_c(FORK_PROGRAM, &dir, &NO_FP);
    // exit: the child's exit handler flushes its capture; _exit: the preload's _exit does.
    // Named from -o (FILE.<pid>) and from the default pattern (tidemark-PROG-<pid>.tdm).
    for (how, named) in [("exit", true), ("_exit", false)] {
        let out_dir = dir.join(how);
        std::fs::create_dir_all(&out_dir).unwrap();
        let main = out_dir.join("f.tdm");
        let mut args = vec!["--follow-fork"];
        if named {
            args.extend(["-o", main.to_str().unwrap()]);
        }
        args.extend(["--", exe.to_str().unwrap(), how]);
        let out = tidemark_run(&out_dir, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{how}: {err}");
        let atexit_child = if how == "exit" { "atexit child\n" } else { "" };
        assert_eq!(
            text(&out.stdout),
            format!("child done\n{atexit_child}parent saw child exit 9\natexit parent\n"),
            "{how}"
        );
        let pid = child_pid(&err);
        let (main, child) = if named {
            (main, out_dir.join(format!("f.tdm.{pid}")))
        } else {
            let next = err
                .lines()
                .find_map(|l| l.strip_prefix("tidemark: next: tidemark flamegraph "))
                .unwrap_or_else(|| panic!("no next command in {err}"));
            (
                out_dir.join(next),
                out_dir.join(format!("tidemark-run_fork_record-{pid}.tdm")),
            )
        };
        assert_eq!(
            captures_in(&out_dir),
            {
                let mut both = vec![main.clone(), child.clone()];
                both.sort();
                both
            },
            "{how}: one capture per process"
        );
        // Shown as the main capture is: absolute from -o, relative to the directory the
        // run started in for the default name.
        let listed = if named {
            child.clone()
        } else {
            PathBuf::from(child.file_name().unwrap())
        };
        assert!(
            err.contains(&format!(
                "tidemark: child processes wrote:\n  {}\ntidemark: next:",
                listed.display()
            )),
            "{how}: the summary lists the child's capture: {err}"
        );

        assert_parent_capture(&Capture::read(&main), &s);
        let c = Capture::read(&child);
        let all = c.describe();
        assert!(c.complete, "{how}: the child's capture is complete:\n{all}");
        assert_eq!(c.pid, pid);
        assert_eq!(c.dropped, 0);
        // 25 blocks of 3333 bytes, 5 of them never freed.
        assert_eq!(
            c.totals_at(&s.child),
            (25, 25 * 3333, 5 * 3333),
            "{how}: {all}"
        );
        for parents in [&s.before, &s.after, &s.thread] {
            assert_eq!(
                c.totals_at(parents),
                (0, 0, 0),
                "{how}: {parents} in\n{all}"
            );
        }
        assert_eq!(
            c.threads, 1,
            "{how}: only the forking thread exists in the child"
        );
        assert!(c.allocs <= 25 + 2, "{how}: {all}");
    }
}

#[test]
fn fork_without_exec_is_not_traced_without_follow_fork() {
    let s = fork_sites();
    let dir = scratch_dir("fork-plain");
    let exe = compile_c(FORK_PROGRAM, &dir, &NO_FP);
    let main = dir.join("p.tdm");
    let out = tidemark_run(
        &dir,
        &["-o", main.to_str().unwrap(), "--", exe.to_str().unwrap()],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The child's exit handlers run as without tidemark, and nothing of the parent's
    // recording is flushed from the child.
    assert_eq!(
        text(&out.stdout),
        "child done\natexit child\nparent saw child exit 9\natexit parent\n"
    );
    child_pid(&err);
    assert_eq!(captures_in(&dir), vec![main.clone()]);
    assert!(!err.contains("child processes wrote"), "{err}");
    assert_parent_capture(&Capture::read(&main), &s);
}

#[test]
fn sigint_without_a_handler_flushes_and_dies_by_sigint() {
    let before = site("run_signals.c", "before_signal", "before");
    let dir = scratch_dir("sigint");
    let exe = compile_c("run_signals.c", &dir, &NO_FP);
    let plain = Command::new(&exe).output().unwrap();
    assert_eq!(plain.status.signal(), Some(libc::SIGINT));

    // Directly on the preload: the same dispositions seen, the same death.
    let path = dir.join("direct.tdm");
    let out = Command::new(&exe)
        .env("LD_PRELOAD", preload_library())
        .env("TIDEMARK_PRELOAD_OUTPUT", &path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGINT),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        text(&plain.stdout),
        "the program sees the dispositions it would see without tidemark"
    );
    assert!(text(&out.stdout).contains("SIGINT default again: yes\nraising SIGINT\n"));

    // Through `tidemark run`: 128 + 2, and the capture ends with its end marker, holding the
    // allocations made just before the signal (still in the buffers when it came).
    let path = dir.join("run.tdm");
    let out = tidemark_run(
        &dir,
        &["-o", path.to_str().unwrap(), "--", exe.to_str().unwrap()],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGINT), "{err}");
    assert!(err.contains("was killed by signal 2 (SIGINT)"), "{err}");
    assert_eq!(out.stdout, plain.stdout);
    for capture in [dir.join("direct.tdm"), path] {
        let c = Capture::read(&capture);
        assert!(
            c.complete,
            "{}: flushed with the end marker",
            capture.display()
        );
        assert_eq!(
            c.totals_at(&before),
            (20, (500..520).sum(), (500..520).sum()),
            "{}",
            c.describe()
        );
    }
}

#[test]
fn python_keeps_its_keyboard_interrupt() {
    let Some(py) = python_executable() else {
        eprintln!("python3 not installed: skipped");
        return;
    };
    let dir = scratch_dir("sigint-python");
    let prelude = "import os, signal, time\nkept = [bytes(1234) for _ in range(2000)]\n";
    // Caught: CPython installed its own SIGINT handler (it found SIG_DFL), and SIGTERM still
    // reads as the default although the preload's flush handler stands there.
    let caught = format!(
        "{prelude}try:\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(5)\n\
         except KeyboardInterrupt:\n    print('caught')\n\
         print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n"
    );
    // Uncaught: CPython ends by SIGINT itself (SIG_DFL, then kill), after finalizing.
    let uncaught = format!("{prelude}os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n");
    for (name, script) in [("caught", caught), ("uncaught", uncaught)] {
        let file = dir.join(format!("{name}.py"));
        std::fs::write(&file, script).unwrap();
        let path = dir.join(format!("{name}.tdm"));
        let out = Command::new(&py)
            .arg(&file)
            .env("PYTHONMALLOC", "malloc")
            .env("LD_PRELOAD", preload_library())
            .env("TIDEMARK_PRELOAD_OUTPUT", &path)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        if name == "caught" {
            assert!(out.status.success(), "{err}");
            assert_eq!(text(&out.stdout), "caught\nTrue\n");
        } else {
            assert_eq!(out.status.signal(), Some(libc::SIGINT), "{err}");
            assert!(err.contains("KeyboardInterrupt"), "{err}");
        }
        let c = Capture::read(&path);
        assert!(c.complete, "{name}: the capture is complete");
        assert!(c.allocs > 2000, "{name}");
    }
}

/// SIGTERM and SIGHUP sent to `tidemark run` go on to the program: it dies by the signal with
/// its capture flushed, tidemark reports that and exits 128 + N, and no program is left
/// running.
#[test]
fn sigterm_and_sighup_to_tidemark_are_passed_on_to_the_program() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        let dir = scratch_dir(&format!("pass-on-{sig}"));
        let exe = compile_c("run_wait.c", &dir, &[]);
        let mut run = Command::new(tidemark_cli())
            .arg("run")
            .arg("-o")
            .arg(dir.join("t.%p.tdm"))
            .arg("--")
            .arg(&exe)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // "ready" comes from the program's main, which runs after the preload's constructor
        // started the recording and put its flush handlers in place.
        let mut out = std::io::BufReader::new(run.stdout.take().unwrap());
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
        assert_eq!(ready, "ready\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let capture = captures_in(&dir).pop().expect("the capture exists");
        let pid: i32 = capture
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("t.")?.strip_suffix(".tdm")?.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", capture.display()));
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(run.id() as i32, sig) };
        let status = loop {
            if let Some(status) = run.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: as above; the test fails below either way.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = run.kill();
                panic!("tidemark run did not end after {name}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(128 + sig), "{name}: {err}");
        assert!(
            err.contains(&format!("was killed by signal {sig} ({name})")),
            "{name}: {err}"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name}: the program (pid {pid}) is still there"
        );
        assert!(Capture::read(&capture).complete, "{name}: capture flushed");
    }
}

/// multiprocessing's Pool ends its workers with SIGTERM, often while they are exiting by
/// themselves and flushing their captures: the flush finishes first, so every worker's
/// capture ends with its end marker (before the fix, about one in seven did not).
#[test]
fn pool_workers_terminated_while_exiting_leave_complete_captures() {
    let Some(py) = python_executable() else {
        eprintln!("python3 not installed: skipped");
        return;
    };
    let dir = scratch_dir("pool-terminate");
    let script = dir.join("pool.py");
    std::fs::write(
        &script,
        "import multiprocessing as mp\n\
         def f(x):\n    return len({i: str(i) * 10 for i in range(20000 + x)})\n\
         if __name__ == '__main__':\n    mp.set_start_method('fork')\n\
         \x20   with mp.Pool(4) as p:\n        p.map(f, range(16))\n",
    )
    .unwrap();
    for round in 0..3 {
        let pattern = dir.join(format!("r{round}.tdm"));
        let out = Command::new(tidemark_cli())
            .args(["run", "-q", "--follow-fork", "-o"])
            .arg(&pattern)
            .arg("--")
            .arg(&py)
            .arg(&script)
            .env("PYTHONMALLOC", "malloc")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let workers: Vec<PathBuf> = captures_in(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e != "tdm"))
        .collect();
    assert_eq!(workers.len(), 12, "{workers:?}");
    for w in workers {
        assert!(Capture::read(&w).complete, "{}", w.display());
    }
}
