//! The recording's file descriptors (the capture, `/proc/self/statm`), kept out of the
//! program's way.
//!
//! They live in the recorded process, whose code does what it likes with descriptors: a shell
//! script's `exec 3>file`, a `dup2(fd, 3)`, a daemon's `closefrom(3)` or `close` of every
//! number below 1024. Left at the lowest free numbers (3 and 4 when the preload starts), they
//! were the program's to take: the capture went into the user's file (and a user's line into
//! the capture), or the capture stopped at a close with nothing said. So:
//!
//! * each is moved to a high number ([`high_base`]), where programs do not reach for one;
//! * before each use its identity (device and inode, taken at open) is checked, so a number
//!   the program closed, or reused for a file of its own, is never written to, read, or closed
//!   by the recording;
//! * a capture the program closed is reopened by its path when the path still names the same
//!   file, and the writing goes on at the offset it had reached; otherwise the write fails
//!   with [`CAPTURE_CLOSED`] in its message and the recording stops (the writer says so on
//!   stderr). A closed statm is simply opened again.
//!
//! Another thread of the program could close and reuse the number between the check and the
//! write: nothing short of the kernel closes that window, and it is a few instructions wide.

use std::ffi::CString;
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// What a lost capture's error message starts with.
pub(crate) const CAPTURE_CLOSED: &str = "the program closed the capture's file descriptor";

/// The lowest number the recording's descriptors take: 16 under the soft `RLIMIT_NOFILE`, at
/// most 1000.
///
/// - High: the kernel hands a program the lowest free numbers, and programs that name numbers
///   themselves name small ones (shells: 3-9 for scripts, 10 and up for descriptors they save,
///   255 for the script itself), so a number near 1000 is one a program meets last.
/// - At most 1000 even when the limit is far higher (a million in some containers): the kernel
///   sizes a process's descriptor table by its highest number.
/// - 16 under the soft limit: `F_DUPFD` takes no number at or above it, and the descriptors
///   (two, and a reopened one for a moment) need room above the base.
fn high_base() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as i64
    } else {
        1024
    };
    (soft - 16).clamp(3, 1000) as libc::c_int
}

/// Moves our descriptor `fd` to a close-on-exec one at or above [`high_base`] and closes `fd`;
/// keeps `fd` as it is when it is there already or no number is free up there.
fn move_high(fd: RawFd) -> RawFd {
    let base = high_base();
    if fd >= base {
        return fd;
    }
    // SAFETY: `fd` is ours and open; F_DUPFD_CLOEXEC makes a new descriptor or fails.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base) };
    if high < 0 {
        return fd;
    }
    // SAFETY: `fd` is ours and nothing else uses it (its duplicate replaces it).
    unsafe { libc::close(fd) };
    high
}

/// Which file a descriptor holds: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

/// The identity and `st_mode` of what `fd` holds; None when `fd` is not open.
fn identity(fd: RawFd) -> Option<(Identity, u32)> {
    if fd < 0 {
        return None;
    }
    // SAFETY: an all-zero `stat` is a valid value to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; a closed `fd` only makes fstat fail.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    let id = Identity {
        dev: st.st_dev,
        ino: st.st_ino,
    };
    Some((id, st.st_mode))
}

/// Is `fd` open on the file `id`?
fn holds(fd: RawFd, id: Identity) -> bool {
    identity(fd).is_some_and(|(now, _)| now == id)
}

/// The descriptor a recording keeps in one role, where a forked child finds it.
struct Kept {
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
}

impl Kept {
    const fn new() -> Kept {
        Kept {
            fd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
        }
    }

    fn set(&self, fd: RawFd, id: Identity) {
        self.dev.store(id.dev, Ordering::Relaxed);
        self.ino.store(id.ino, Ordering::Relaxed);
        self.fd.store(fd, Ordering::Release);
    }

    fn clear(&self) {
        self.fd.store(-1, Ordering::Release);
    }

    /// Closes the descriptor if it still holds its file.
    fn close_if_held(&self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        let id = Identity {
            dev: self.dev.load(Ordering::Relaxed),
            ino: self.ino.load(Ordering::Relaxed),
        };
        if holds(fd, id) {
            // SAFETY: `fd` is the recording's copy (checked by identity): nothing of the
            // program's is closed.
            unsafe { libc::close(fd) };
        }
    }
}

/// The capture's and statm's descriptors of the running recording.
static KEPT_CAPTURE: Kept = Kept::new();
static KEPT_STATM: Kept = Kept::new();

/// In a forked child: closes the copies of the parent's recording's descriptors, those that
/// still hold their files (fstat and close: async-signal-safe).
pub(crate) fn close_inherited() {
    KEPT_CAPTURE.close_if_held();
    KEPT_STATM.close_if_held();
}

/// Closes `fd` if it holds `id` (a descriptor the program took over is left alone).
fn close_if_holds(fd: RawFd, id: Identity) {
    if holds(fd, id) {
        // SAFETY: `fd` is ours (checked by identity).
        unsafe { libc::close(fd) };
    }
}

/// The capture file, written with `write` at a high descriptor that is checked before each
/// write (see the module docs).
pub(crate) struct CaptureFile {
    fd: RawFd,
    id: Identity,
    path: PathBuf,
    /// Bytes written so far: where writing goes on after a reopen.
    offset: u64,
    /// A regular file (the usual case): reopened and positioned at `offset`. A FIFO or a
    /// device is not reopened: opening a FIFO may wait for a reader.
    regular: bool,
}

impl CaptureFile {
    /// Creates (truncates) `path`.
    pub(crate) fn create(path: &Path) -> io::Result<CaptureFile> {
        let fd = move_high(std::fs::File::create(path)?.into_raw_fd());
        let Some((id, mode)) = identity(fd) else {
            let e = io::Error::last_os_error();
            // SAFETY: `fd` is ours, just opened.
            unsafe { libc::close(fd) };
            return Err(e);
        };
        KEPT_CAPTURE.set(fd, id);
        Ok(CaptureFile {
            fd,
            id,
            path: path.to_path_buf(),
            offset: 0,
            regular: mode & libc::S_IFMT == libc::S_IFREG,
        })
    }

    /// Writes all of `buf`, to the capture only.
    pub(crate) fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        // A descriptor closed between the check and the write fails with EBADF: checked (and
        // reopened) again, a few times at most.
        let mut closed_races = 0;
        while !buf.is_empty() {
            if !holds(self.fd, self.id) {
                self.reopen()?;
            }
            // SAFETY: `fd` is open on the capture (checked just above); `buf` is valid for
            // its length.
            let n = unsafe { libc::write(self.fd, buf.as_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EBADF) if closed_races < 3 => {
                        closed_races += 1;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.offset += n as u64;
            buf = &buf[n as usize..];
        }
        Ok(())
    }

    /// The program closed the capture's descriptor (or put a file of its own at its number):
    /// opens the capture again by its path, if that is still the capture, at the offset
    /// reached. The old number is the program's now, and never closed here.
    fn reopen(&mut self) -> io::Result<()> {
        let lost = self.fd;
        self.fd = -1;
        KEPT_CAPTURE.clear();
        if let Some(fd) = self.open_same() {
            self.fd = move_high(fd);
            KEPT_CAPTURE.set(self.fd, self.id);
            return Ok(());
        }
        let why = if self.regular {
            "is no longer that file"
        } else {
            "is not a regular file, so it was not reopened"
        };
        Err(io::Error::other(format!(
            "{CAPTURE_CLOSED} (fd {lost}), and {} {why}",
            self.path.display()
        )))
    }

    /// A new descriptor on the capture, positioned at `offset`; None when the path names
    /// another file now, or none.
    fn open_same(&self) -> Option<RawFd> {
        if !self.regular {
            return None;
        }
        let path = CString::new(self.path.as_os_str().as_bytes()).ok()?;
        // No O_CREAT, no O_TRUNC: only the file that is there, as it is.
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
            )
        };
        if fd < 0 {
            return None;
        }
        let same = holds(fd, self.id);
        // SAFETY: `fd` is ours, just opened.
        if same && unsafe { libc::lseek(fd, self.offset as libc::off_t, libc::SEEK_SET) } >= 0 {
            return Some(fd);
        }
        // SAFETY: as above; nothing was written through it.
        unsafe { libc::close(fd) };
        None
    }
}

impl Drop for CaptureFile {
    fn drop(&mut self) {
        KEPT_CAPTURE.clear();
        close_if_holds(self.fd, self.id);
    }
}

/// `/proc/self/statm`, read with `pread` (the descriptor's offset is never moved, so a number
/// the program took over is not disturbed even by a read) after the same identity check.
pub(crate) struct Statm {
    fd: RawFd,
    id: Identity,
}

impl Statm {
    pub(crate) fn open() -> Option<Statm> {
        // SAFETY: the path is NUL-terminated.
        let fd = unsafe {
            libc::open(
                c"/proc/self/statm".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        let fd = move_high(fd);
        let Some((id, _)) = identity(fd) else {
            // SAFETY: `fd` is ours, just opened.
            unsafe { libc::close(fd) };
            return None;
        };
        KEPT_STATM.set(fd, id);
        Some(Statm { fd, id })
    }

    /// The resident set in pages; 0 when it cannot be read.
    pub(crate) fn resident_pages(&mut self) -> u64 {
        if !holds(self.fd, self.id) {
            // Closed by the program: any descriptor of the file will do.
            match Statm::open() {
                Some(fresh) => {
                    self.fd = fresh.fd;
                    self.id = fresh.id;
                    std::mem::forget(fresh);
                }
                None => {
                    self.fd = -1;
                    KEPT_STATM.clear();
                    return 0;
                }
            }
        }
        let mut buf = [0u8; 128];
        // SAFETY: `fd` is open on statm (checked above); `buf` is writable for its length.
        let n = unsafe { libc::pread(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return 0;
        }
        std::str::from_utf8(&buf[..n as usize])
            .ok()
            .and_then(|text| text.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    }
}

impl Drop for Statm {
    fn drop(&mut self) {
        KEPT_STATM.clear();
        close_if_holds(self.fd, self.id);
    }
}
