//! Starting children: one process per (workload, allocator) run, reaped with `wait4` so that
//! the peak RSS (`ru_maxrss`) is that one process's own.

use crate::child::parse_result;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One measured run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Wall time of the workload itself, measured inside the child.
    pub time: Duration,
    /// Peak resident set of the child process, in KiB.
    pub max_rss_kib: u64,
    pub checksum: u64,
}

/// Runs `binary <workload> --scale <scale>` and measures it.
pub fn run_child(binary: &Path, workload: &str, scale: f64) -> Result<Sample, String> {
    let mut child = Command::new(binary)
        .arg(workload)
        .arg("--scale")
        .arg(scale.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut stdout = String::new();
    let read = child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout);
    // Reaped here, not by `Child::wait`, to get this child's own rusage.
    let (status, usage) = wait4(child.id())?;
    read.map_err(|e| format!("reading the child's output: {e}"))?;

    if libc::WIFSIGNALED(status) {
        return Err(format!("killed by signal {}", libc::WTERMSIG(status)));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("exited with status {}", libc::WEXITSTATUS(status)));
    }
    let result = parse_result(&stdout).ok_or_else(|| format!("no result line in {stdout:?}"))?;
    Ok(Sample {
        time: result.time,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        checksum: result.checksum,
    })
}

fn wait4(pid: u32) -> Result<(libc::c_int, libc::rusage), String> {
    let pid = pid as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data (integers and timevals); all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not yet reaped (std's `Child` never waited for it);
        // `status` and `usage` are valid for writes for the duration of the call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            return Ok((status, usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {err}"));
        }
    }
}
