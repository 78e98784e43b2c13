//! Capture files: writer, reader, format (issue 5).
//!
//! The recording entry points below are called by the tracer's hook (`Traced`) when
//! `is_recording()` is true. They are no-ops until recording lands.

/// True while a capture file is being recorded (one relaxed atomic load).
#[inline]
pub fn is_recording() -> bool {
    false
}

/// An allocation of `size` bytes at `ptr` by `api` (0 = Rust, 1 = C malloc family) at stack `stack`.
pub fn on_alloc(_ptr: usize, _size: usize, _api: u8, _stack: u32) {}

/// A free of `ptr` by `api`.
pub fn on_free(_ptr: usize, _api: u8) {}

/// A realloc of `old` to `new` with `size` bytes at stack `stack`.
pub fn on_realloc(_old: usize, _new: usize, _size: usize, _stack: u32) {}
