//! `measure(|| work())`: heap counters for one closure on one thread.
//!
//! dhat-rs allows one profiler per process, which makes heap assertions in parallel tests
//! awkward. Here each `measure` keeps its counters in a frame on the calling thread's stack,
//! linked from a thread-local, so any number of tests (and nested measures) run at once. The
//! hook updates every frame of the chain. Each frame remembers which blocks it saw allocated
//! (a small pointer set in mmap'd memory), so freeing a block that was allocated before the
//! closure started does not make `curr_*` go below what the closure itself holds.

use crate::hook::{MEASURE_ONE, MODE};
use crate::sysmem::{map_zeroed, unmap};
use core::cell::Cell;
use core::sync::atomic::Ordering;

/// Heap counters for the allocations the current thread made inside a `measure` closure.
/// Same meaning as dhat's `HeapStats`: `max_*` are taken at the moment `curr_bytes` peaked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Blocks allocated (a realloc counts as one more block).
    pub total_blocks: u64,
    /// Bytes allocated (a realloc counts its new size).
    pub total_bytes: u64,
    /// Blocks allocated inside and still live at the end.
    pub curr_blocks: usize,
    /// Bytes of those blocks.
    pub curr_bytes: usize,
    /// Live blocks when `curr_bytes` peaked.
    pub max_blocks: usize,
    /// The peak of `curr_bytes`.
    pub max_bytes: usize,
}

struct Frame {
    stats: HeapStats,
    live: PtrSet,
    parent: *mut Frame,
}

thread_local! {
    static TOP: Cell<*mut Frame> = const { Cell::new(core::ptr::null_mut()) };
}

/// Runs `f` and returns its result with the heap counters of the allocations this thread made
/// inside it. Works whether or not tracing is on, in any number of threads at once; needs
/// `Traced<_>` as the global allocator.
///
/// ```
/// # use tidemark_tracer::Traced;
/// # #[global_allocator]
/// # static GLOBAL: Traced<std::alloc::System> = Traced::new(std::alloc::System);
/// let (v, stats) = tidemark_tracer::measure(|| vec![1u32; 256]);
/// assert_eq!(stats.total_blocks, 1);
/// assert_eq!(stats.curr_bytes, 1024);
/// drop(v);
/// ```
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, HeapStats) {
    struct Pop(*mut Frame);
    impl Drop for Pop {
        fn drop(&mut self) {
            MODE.fetch_sub(MEASURE_ONE, Ordering::SeqCst);
            // SAFETY: self.0 is the frame pushed below, still alive on measure's stack.
            let parent = unsafe { (*self.0).parent };
            let _ = TOP.try_with(|t| t.set(parent));
        }
    }
    let mut frame = Frame {
        stats: HeapStats::default(),
        live: PtrSet::new(),
        parent: core::ptr::null_mut(),
    };
    let fp: *mut Frame = &mut frame;
    let pushed = TOP
        .try_with(|t| {
            // SAFETY: fp points at `frame`, which outlives the Pop guard below.
            unsafe { (*fp).parent = t.get() };
            t.set(fp);
        })
        .is_ok();
    let r = if pushed {
        MODE.fetch_add(MEASURE_ONE, Ordering::SeqCst);
        let _pop = Pop(fp);
        f()
    } else {
        f()
    };
    // SAFETY: the guard has unlinked the frame; nobody else references it now.
    let stats = unsafe { (*fp).stats };
    (r, stats)
}

fn for_each_frame(mut g: impl FnMut(&mut Frame)) {
    let mut p = TOP.try_with(|t| t.get()).unwrap_or(core::ptr::null_mut());
    while !p.is_null() {
        // SAFETY: frames in the chain live on this thread's stack until unlinked, and only this
        // thread (inside the hook, not re-entered) touches them.
        let frame = unsafe { &mut *p };
        g(frame);
        p = frame.parent;
    }
}

fn note_alloc(frame: &mut Frame, ptr: usize, size: usize) {
    let s = &mut frame.stats;
    s.total_blocks += 1;
    s.total_bytes += size as u64;
    if frame.live.insert(ptr) {
        s.curr_blocks += 1;
        s.curr_bytes += size;
        if s.curr_bytes > s.max_bytes {
            s.max_bytes = s.curr_bytes;
            s.max_blocks = s.curr_blocks;
        }
    }
}

fn note_free(frame: &mut Frame, ptr: usize, size: usize) {
    if frame.live.remove(ptr) {
        frame.stats.curr_blocks -= 1;
        frame.stats.curr_bytes -= size;
    }
}

pub(crate) fn on_alloc(ptr: usize, size: usize) {
    for_each_frame(|f| note_alloc(f, ptr, size));
}

pub(crate) fn on_free(ptr: usize, size: usize) {
    for_each_frame(|f| note_free(f, ptr, size));
}

pub(crate) fn on_realloc(old: usize, old_size: usize, new: usize, new_size: usize) {
    for_each_frame(|f| {
        note_free(f, old, old_size);
        note_alloc(f, new, new_size);
    });
}

/// A set of pointers: open addressing, linear probing, backward-shift deletion, mmap'd.
struct PtrSet {
    slots: *mut usize,
    cap: usize,
    len: usize,
}

impl PtrSet {
    const fn new() -> Self {
        PtrSet {
            slots: core::ptr::null_mut(),
            cap: 0,
            len: 0,
        }
    }

    #[inline]
    fn home(&self, p: usize) -> usize {
        let h = (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h ^ (h >> 32)) as usize & (self.cap - 1)
    }

    /// Adds `p`; false if it was there already or there is no memory.
    fn insert(&mut self, p: usize) -> bool {
        if (self.len + 1) * 2 > self.cap && !self.grow() && self.len + 1 >= self.cap {
            return false;
        }
        let mask = self.cap - 1;
        let mut i = self.home(p);
        // SAFETY: indices are masked to cap; at least one slot is empty.
        unsafe {
            loop {
                let s = *self.slots.add(i);
                if s == p {
                    return false;
                }
                if s == 0 {
                    *self.slots.add(i) = p;
                    self.len += 1;
                    return true;
                }
                i = (i + 1) & mask;
            }
        }
    }

    fn remove(&mut self, p: usize) -> bool {
        if self.cap == 0 {
            return false;
        }
        let mask = self.cap - 1;
        let mut i = self.home(p);
        // SAFETY: indices are masked to cap.
        unsafe {
            loop {
                let s = *self.slots.add(i);
                if s == 0 {
                    return false;
                }
                if s == p {
                    break;
                }
                i = (i + 1) & mask;
            }
            let mut j = i;
            loop {
                j = (j + 1) & mask;
                let s = *self.slots.add(j);
                if s == 0 {
                    break;
                }
                let home = self.home(s);
                if !crate::table::home_in_gap(i, home, j) {
                    *self.slots.add(i) = s;
                    i = j;
                }
            }
            *self.slots.add(i) = 0;
        }
        self.len -= 1;
        true
    }

    fn grow(&mut self) -> bool {
        let new_cap = if self.cap == 0 { 512 } else { self.cap * 2 };
        let slots = map_zeroed(new_cap * 8) as *mut usize;
        if slots.is_null() {
            return false;
        }
        let old = (self.slots, self.cap);
        self.slots = slots;
        self.cap = new_cap;
        self.len = 0;
        for j in 0..old.1 {
            // SAFETY: j < old cap.
            let p = unsafe { *old.0.add(j) };
            if p != 0 {
                self.insert(p);
            }
        }
        // SAFETY: the old mapping is ours and no longer used.
        unsafe { unmap(old.0 as *mut u8, old.1 * 8) };
        true
    }
}

impl Drop for PtrSet {
    fn drop(&mut self) {
        // SAFETY: our own mapping (or null).
        unsafe { unmap(self.slots as *mut u8, self.cap * 8) };
    }
}
