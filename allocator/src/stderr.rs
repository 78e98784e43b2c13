//! Writing to fd 2 without allocating: reports are formatted into a fixed buffer that is
//! flushed with `write(2)` whenever it fills and when the writer is dropped.

use core::fmt;

/// A `fmt::Write` sink for stderr (or another fd) with a fixed 4 KiB buffer.
pub struct Stderr {
    buf: [u8; 4096],
    len: usize,
    fd: i32,
}

impl Stderr {
    pub const fn new() -> Self {
        Stderr::to_fd(2)
    }

    /// A writer to `fd` instead of 2.
    pub const fn to_fd(fd: i32) -> Self {
        Stderr {
            buf: [0; 4096],
            len: 0,
            fd,
        }
    }

    /// Appends raw bytes, flushing as needed.
    pub fn write_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = bytes.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
    }

    /// Writes out what is buffered. Errors are ignored: there is nowhere left to report them.
    pub fn flush(&mut self) {
        let mut done = 0;
        while done < self.len {
            // SAFETY: the range lies inside `buf`, which is initialized.
            let n = unsafe {
                libc::write(
                    self.fd,
                    self.buf.as_ptr().add(done) as *const libc::c_void,
                    self.len - done,
                )
            };
            if n <= 0 {
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            done += n as usize;
        }
        self.len = 0;
    }
}

impl Default for Stderr {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

impl Drop for Stderr {
    fn drop(&mut self) {
        self.flush();
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}
