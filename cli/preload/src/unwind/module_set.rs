//! The module set the DWARF walks read their rules from: framehop's unwinder over every
//! loaded module's `.eh_frame` (found through `PT_GNU_EH_FRAME`, read in place from the
//! loaded image, never from disk), re-read when a module is dlopen'd.

use crate::modules::{for_each_module, module_adds};
use core::sync::atomic::{AtomicPtr, Ordering};
use framehop::x86_64::UnwinderX86_64;
use framehop::MustNotAllocateDuringUnwind;
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};
use std::sync::Mutex;

/// Unwind data is read in place from the loaded image.
type Mem = &'static [u8];

pub struct Modules {
    /// Without allocation while unwinding: gimli's CFI rows and expression stacks are
    /// fixed arrays (in the rule cache and on the stack) instead of vectors, so a rule
    /// looked up or a DWARF expression evaluated inside the malloc hook never allocates.
    pub unwinder: UnwinderX86_64<Mem, MustNotAllocateDuringUnwind>,
    /// The modules' address ranges, sorted: is the program's frame in a known module?
    ranges: Vec<(u64, u64)>,
    /// `dlpi_adds` when the set was read.
    pub adds: u64,
}

impl Modules {
    /// The range of the module holding `ip`, if it is in one.
    pub fn range_of(&self, ip: u64) -> Option<(u64, u64)> {
        let i = self.ranges.partition_point(|r| r.0 <= ip);
        (i > 0 && ip < self.ranges[i - 1].1).then(|| self.ranges[i - 1])
    }

    /// Has a module been loaded since this set was read?
    pub fn stale(&self) -> bool {
        self.adds != module_adds()
    }
}

/// The current module set. Readers only load the pointer (no shared counter to bounce
/// between cores); a rebuild after a dlopen publishes a new set and leaks the old one,
/// which a capture on another thread may still be reading (a few KiB per dlopen).
static MODULES: AtomicPtr<Modules> = AtomicPtr::new(core::ptr::null_mut());
/// Serializes rebuilds.
static REBUILD: Mutex<()> = Mutex::new(());

/// The current set, read on first use. Sets are never freed, so the reference stays valid
/// (and a set's address names it for good: the memo keys on it).
#[inline]
pub fn current() -> Option<&'static Modules> {
    let mut p = MODULES.load(Ordering::Acquire);
    if p.is_null() {
        rebuild(p);
        p = MODULES.load(Ordering::Acquire);
    }
    // SAFETY: published sets are never freed.
    unsafe { p.as_ref() }
}

/// The current set, if it was read (no read here): for the express lane in dwarf.rs.
#[inline(always)]
pub fn current_if_read() -> Option<&'static Modules> {
    // SAFETY: published sets are never freed.
    unsafe { MODULES.load(Ordering::Acquire).as_ref() }
}

/// Reads the modules again unless another thread just did (`seen` is the set the caller
/// found stale, or null); returns the set current afterwards.
#[cold]
pub fn rebuild(seen: *const Modules) -> Option<&'static Modules> {
    let _g = REBUILD.lock().unwrap_or_else(|e| e.into_inner());
    if core::ptr::eq(MODULES.load(Ordering::Acquire), seen) {
        let fresh = Box::into_raw(Box::new(build()));
        MODULES.store(fresh, Ordering::Release);
    }
    // SAFETY: published sets are never freed.
    unsafe { MODULES.load(Ordering::Acquire).as_ref() }
}

/// Reads `.eh_frame_hdr`'s pointer to `.eh_frame` (pc-relative or absolute, 4 or 8 bytes).
///
/// # Safety
/// `hdr` is the mapped `.eh_frame_hdr` of a loaded module.
unsafe fn eh_frame_start(hdr: u64) -> Option<u64> {
    // SAFETY: the header is at least 4 bytes plus the encoded pointer.
    unsafe {
        let p = hdr as *const u8;
        if *p != 1 {
            return None;
        }
        let enc = *p.add(1);
        let field = hdr + 4;
        let value = match enc & 0x0f {
            0x03 => (field as *const u32).read_unaligned() as u64,
            0x0b => (field as *const i32).read_unaligned() as i64 as u64,
            0x04 | 0x0c => (field as *const u64).read_unaligned(),
            _ => return None,
        };
        match enc & 0x70 {
            0x00 => Some(value),
            0x10 => Some(field.wrapping_add(value)),
            _ => None,
        }
    }
}

fn build() -> Modules {
    let mut unwinder = UnwinderX86_64::new();
    let mut ranges = Vec::new();
    let adds = module_adds();
    for_each_module(|m| {
        ranges.push((m.range.start, m.range.end));
        let Some(hdr) = m.eh_frame_hdr.clone() else {
            return;
        };
        // SAFETY: PT_GNU_EH_FRAME of a loaded module is mapped.
        let Some(eh) = (unsafe { eh_frame_start(hdr.start) }) else {
            return;
        };
        // .eh_frame's length is not in the header: it runs at most to the end of its
        // segment, and framehop finds entries through the header's sorted table.
        let Some(seg) = m.loads.iter().find(|s| s.contains(&eh)) else {
            return;
        };
        let slice = |r: &core::ops::Range<u64>| -> Mem {
            // SAFETY: the range lies inside a loaded segment, mapped while the module is
            // loaded.
            unsafe { core::slice::from_raw_parts(r.start as *const u8, (r.end - r.start) as usize) }
        };
        let svma = |r: &core::ops::Range<u64>| (r.start - m.base)..(r.end - m.base);
        let text = m.segments.first().cloned();
        let eh_range = eh..seg.end;
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: text.as_ref().map(svma),
            text: text.as_ref().map(slice),
            eh_frame_svma: Some(svma(&eh_range)),
            eh_frame: Some(slice(&eh_range)),
            eh_frame_hdr_svma: Some(svma(&hdr)),
            eh_frame_hdr: Some(slice(&hdr)),
            ..Default::default()
        };
        unwinder.add_module(Module::new(m.name.clone(), m.range.clone(), m.base, info));
    });
    ranges.sort_unstable();
    Modules {
        unwinder,
        ranges,
        adds,
    }
}
