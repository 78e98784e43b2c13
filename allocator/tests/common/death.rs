//! The death-test harness: a test commits its defect in a child process (this same test
//! binary, re-run on that one test with `TIDEMARK_DEATH` naming it), which must die by SIGABRT
//! with the report's exact lines on stderr.

use std::alloc::Layout;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD: &str = "TIDEMARK_DEATH";

/// In the child: true when this test is the one to commit its defect.
pub fn is_child(name: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(name)
}

/// Tells the parent where the block is, so it can check the addresses in the report.
pub fn announce(p: *mut u8) {
    println!("DEATH p={:#x}", p as usize);
}

pub struct Death {
    pub p: usize,
    pub stderr: String,
}

/// Runs test `name` in a child with the defect switched on; asserts SIGABRT.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> Death {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "child {name} did not abort: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let p = stdout
        .lines()
        .find_map(|l| l.split("DEATH p=0x").nth(1))
        .map_or(0, |hex| usize::from_str_radix(hex.trim(), 16).unwrap());
    Death { p, stderr }
}

impl Death {
    /// Asserts that each of `lines` is a whole line of the report.
    pub fn has_lines(&self, lines: &[String]) {
        for want in lines {
            assert!(
                self.stderr.lines().any(|l| l == want),
                "missing line {want:?} in report:\n{}",
                self.stderr
            );
        }
    }

    /// Asserts that some line starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) {
        assert!(
            self.stderr.lines().any(|l| l.starts_with(prefix)),
            "no line starting {prefix:?} in report:\n{}",
            self.stderr
        );
    }

    pub fn headline(&self) -> String {
        format!("Debug memory block at address p={:#x}: API 'rust'", self.p)
    }
}

pub fn poke(p: *mut u8, byte: u8) {
    // SAFETY (test): `p` is a byte of a live block, a guard byte or a quarantined byte.
    unsafe { p.write_volatile(byte) }
}

pub const L24: Layout = match Layout::from_size_align(24, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};
