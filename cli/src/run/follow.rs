//! Reading the capture while the program still writes it, so that the summary `tidemark run`
//! prints at the end is ready when the program exits.
//!
//! Reading a capture costs about 30 ns per event on each of two threads (a 10M-allocation C
//! churn: 0.6 s, nearly as long as its traced run). Read after the exit, that time would be
//! added to every `tidemark run`; read alongside, it hides in the time the program runs
//! wherever the program and the capture writer leave a core idle (a CPython script: all of
//! it; the C churn, whose writer keeps the second core busy: little). The reader follows the
//! file as `tail -f` does: at the end of the data it waits for more until the program has
//! exited, then reads what is left and ends.
//!
//! The reader runs at a low priority (nice 10), so it takes mostly what the program leaves of
//! the cores.
//!
//! The capture's name is known before it exists, and a file of an earlier run may still sit
//! there: the reader takes the file only once its metadata names the program's pid (the
//! library truncates the file when it opens it, and a pid is not reused that soon).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tidemark_tracer::capture::{format::CaptureError, CaptureReader};
use tidemark_tracer::report::{self, Analysis};

/// How long the reader sleeps at the end of the data (the writer flushes every 10 ms).
const POLL: Duration = Duration::from_millis(5);

/// A summary being computed while the program runs.
pub struct Follower {
    exited: Arc<AtomicBool>,
    thread: JoinHandle<Option<Result<Analysis, CaptureError>>>,
}

impl Follower {
    /// Starts following `path`, the capture the program with `pid` writes. None when no
    /// thread could be started (the summary is then read after the exit).
    pub fn start(path: PathBuf, pid: u32) -> Option<Follower> {
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        let thread = std::thread::Builder::new()
            .name("tidemark-follow".into())
            .spawn(move || follow(path, pid, flag))
            .ok()?;
        Some(Follower { exited, thread })
    }

    /// Tells the reader that the program has exited and waits for the analysis: None when the
    /// program wrote no capture of its own at the path (or the reader could not run), and the
    /// caller reads the file itself.
    pub fn finish(self) -> Option<Result<Analysis, CaptureError>> {
        self.exited.store(true, Ordering::Release);
        self.thread.join().ok().flatten()
    }
}

fn follow(
    path: PathBuf,
    pid: u32,
    exited: Arc<AtomicBool>,
) -> Option<Result<Analysis, CaptureError>> {
    lower_priority();
    loop {
        // Read before testing: after the exit, one more look at the file sees all it holds.
        let done = exited.load(Ordering::Acquire);
        // Only a regular file can be followed (opening a FIFO would wait for a writer and
        // take its data; /dev/null never grows): anything else is read after the exit.
        let regular = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
        if let Some(file) = regular.then(|| File::open(&path).ok()).flatten() {
            let src = Tail {
                file,
                exited: exited.clone(),
            };
            let name = path.display().to_string();
            match CaptureReader::new(BufReader::with_capacity(1 << 16, src), name) {
                Ok(r) if r.meta().pid == pid => {
                    return Some(report::analysis::analyze_reader(
                        r,
                        &report::AnalyzeOptions::default(),
                    ))
                }
                // Another run's capture, or not a capture: read after the exit, as before.
                _ if done => return None,
                _ => {}
            }
        } else if done {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Lowers this thread's priority (and that of the threads it starts) to nice 10, so that
/// while the program runs, following takes mostly what the program and its writer leave
/// idle. Not `SCHED_IDLE`: an unprivileged thread cannot leave it again, and on a machine
/// kept busy by other work an idle-class thread gets almost nothing, so the summary would
/// wait minutes after the program's exit; at nice 10 it still gets a tenth of a contended
/// core. Where the call is refused, the thread competes as usual.
fn lower_priority() {
    // SAFETY: gettid and setpriority take integers and touch no memory of ours; on Linux,
    // PRIO_PROCESS with a thread id sets that thread's nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// The capture file as a stream that ends only when the program has exited.
struct Tail {
    file: File,
    exited: Arc<AtomicBool>,
}

impl Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let done = self.exited.load(Ordering::Acquire);
            let n = self.file.read(buf)?;
            if n > 0 || done || buf.is_empty() {
                return Ok(n);
            }
            std::thread::sleep(POLL);
        }
    }
}
