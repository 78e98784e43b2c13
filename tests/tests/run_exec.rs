//! `tidemark run` of a program that replaces itself with `exec`: the capture holds every
//! allocation made before the exec, whichever function of the family the program called, and
//! says that the recording ends there. A failed exec, or the exec of a `vfork` child, changes
//! nothing: the recording goes on.

use std::process::Command;
use tidemark_tests::{
    captures_in, compile_c, scratch_dir, site, text, tidemark_cli, tidemark_run, Capture,
};

const PROGRAM: &str = "run_exec.c";

#[test]
fn every_exec_function_leaves_a_complete_capture() {
    let dir = scratch_dir("run-exec");
    // No frame pointers, as distributions build C: the stacks need the DWARF unwinder.
    let exe = compile_c(PROGRAM, &dir, &["-pthread", "-fomit-frame-pointer"]);
    let exe = exe.to_str().expect("a UTF-8 path");
    let thread = site(PROGRAM, "in_thread", "thread");
    for (how, program) in [
        ("execl", "/bin/true"),
        ("execlp", "true"),
        ("execle", "/bin/true"),
        ("execv", "/bin/true"),
        ("execvp", "true"),
        ("execvpe", "true"),
        ("execve", "/bin/true"),
    ] {
        let capture = format!("{how}.tdm");
        let out = tidemark_run(&dir, &["-o", &capture, "--", exe, how]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{how}: {err}");
        assert!(
            err.contains(&format!(
                "(ends at its exec of {program})\ntidemark: the program it exec'd was not \
                 recorded (--follow-fork records it too)\n"
            )),
            "{how}: {err}"
        );
        let c = Capture::read(&dir.join(&capture));
        let all = c.describe();
        assert_eq!(c.exec.as_deref(), Some(program), "{how}");
        assert_kept_before_exec(&c, how);
        assert_eq!(c.totals_at(&thread), (5000, 5000 * 444, 0), "{how}: {all}");
    }
    let stats = Command::new(tidemark_cli())
        .args(["stats", "execv.tdm"])
        .current_dir(&dir)
        .output()
        .expect("tidemark stats runs");
    let report = text(&stats.stdout);
    assert!(
        report.contains("🔚 Recording ends where the program exec'd /bin/true (at "),
        "{report}"
    );
    assert!(!report.contains("no end marker"), "{report}");
}

/// A failed exec, and the exec of a `vfork` child (which shares the recording process's
/// memory, pid aside): the recording goes on as if nothing happened.
#[test]
fn the_recording_goes_on_after_a_failed_exec_or_a_vfork_childs_exec() {
    let dir = scratch_dir("run-exec-fail");
    let exe = compile_c(PROGRAM, &dir, &["-pthread"]);
    let exe = exe.to_str().expect("a UTF-8 path");
    for how in ["fail", "vfork"] {
        goes_on_recording(&dir, exe, how);
    }
}

fn goes_on_recording(dir: &std::path::Path, exe: &str, how: &str) {
    let capture = format!("{how}.tdm");
    let out = tidemark_run(dir, &["-o", &capture, "--", exe, how]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{how}: {err}");
    assert!(!err.contains("ends at its exec"), "{how}: {err}");
    let c = Capture::read(&dir.join(&capture));
    let all = c.describe();
    assert!(c.complete, "{how}: the end marker follows: {all}");
    assert_eq!(c.exec, None, "{how}");
    assert_kept_before_exec(&c, how);
    assert_eq!(
        c.totals_at(&site(PROGRAM, "after_failure", "after")),
        (7, 7 * 777, 7 * 777),
        "{how}: {all}"
    );
}

#[test]
fn an_aggregate_capture_holds_its_totals_at_the_exec() {
    let dir = scratch_dir("run-exec-aggregate");
    let exe = compile_c(PROGRAM, &dir, &["-pthread"]);
    let exe = exe.to_str().expect("a UTF-8 path");
    let out = tidemark_run(&dir, &["--aggregate", "-o", "agg.tdm", "--", exe, "execv"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("(ends at its exec of /bin/true)\n"), "{err}");
    let c = Capture::read(&dir.join("agg.tdm"));
    assert_eq!(c.exec.as_deref(), Some("/bin/true"));
    assert_kept_before_exec(&c, "aggregate");
}

/// With `--follow-fork` the program the process execs records too, under the same pid: into
/// the pattern's `<pid>.1` (the `<pid>` capture is the image before the exec), and the summary
/// reports it and names it as the capture to look at next.
#[test]
fn with_follow_fork_the_execd_program_records_beside_it() {
    let dir = scratch_dir("run-exec-follow");
    let exe = compile_c(PROGRAM, &dir, &["-pthread"]);
    let exe = exe.to_str().expect("a UTF-8 path");
    let out = tidemark_run(
        &dir,
        &["--follow-fork", "-o", "x.%p.tdm", "--", exe, "self"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let main = Capture::read(&dir.join(format!("x.{}.tdm", main_pid(&err))));
    let name = format!("x.{}.1.tdm", main.pid);
    let successor = dir.join(&name);
    assert!(
        err.contains(
            "(ends at its exec of /proc/self/exe)\ntidemark: the program it exec'd recorded "
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "child processes wrote:\n  {name}\ntidemark: next: tidemark flamegraph {name}\n"
        )),
        "{err}"
    );
    assert_kept_before_exec(&main, "main");
    let next = Capture::read(&successor);
    assert!(next.complete);
    assert_eq!(next.pid, main.pid);
    assert_eq!(
        next.totals_at(&site(PROGRAM, "in_successor", "successor")),
        (11, 11 * 555, 11 * 555),
        "{}",
        next.describe()
    );
}

/// The pid in "tidemark: recorded x.<pid>.tdm in ...".
fn main_pid(stderr: &str) -> u32 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("tidemark: recorded x."))
        .and_then(|l| l.split('.').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no main capture in {stderr}"))
}

/// The program keeps 300 blocks of 333 B from one site before it execs, in every mode.
fn assert_kept_before_exec(c: &Capture, context: &str) {
    assert_eq!(
        c.totals_at(&site(PROGRAM, "before_exec", "before")),
        (300, 300 * 333, 300 * 333),
        "{context}: {}",
        c.describe()
    );
}

/// bash exports `setenv`, `unsetenv` and `getenv` of its own, which do nothing before its
/// `main`: the preload must take itself out of the environment with the C library's, or
/// every program the script runs inherits it, records into the same file and truncates
/// bash's capture.
#[test]
fn a_shell_with_its_own_setenv_runs_its_programs_untraced() {
    let dir = scratch_dir("run-exec-bash");
    let out = tidemark_run(
        &dir,
        &[
            "-o",
            "bash.tdm",
            "--",
            "/bin/bash",
            "-c",
            "/bin/true; export -p > env.txt; /bin/true; exit 0",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let env = std::fs::read_to_string(dir.join("env.txt")).expect("the script wrote env.txt");
    assert!(!env.contains("TIDEMARK_PRELOAD_"), "{env}");
    assert!(!env.contains("libtidemark_preload"), "{env}");
    assert_eq!(captures_in(&dir), vec![dir.join("bash.tdm")], "{err}");
    let c = Capture::read(&dir.join("bash.tdm"));
    assert!(c.complete && c.exec.is_none(), "{}", c.describe());
    assert!(c.allocs > 0, "{}", c.describe());
}
