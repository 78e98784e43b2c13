//! The loaded modules as the dynamic linker lists them (`dl_iterate_phdr`): what the DWARF
//! unwinder reads unwind tables from, and where this library's own code lies (its frames are
//! dropped from every stack).

use core::sync::atomic::{AtomicU64, Ordering};

/// This library's code range, `[0]..[1]`, once `find_own_range` has read it.
static RANGE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// The address range of this library's code.
#[inline(always)]
pub fn own_range() -> (u64, u64) {
    let hi = RANGE[1].load(Ordering::Relaxed);
    if hi != 0 {
        return (RANGE[0].load(Ordering::Relaxed), hi);
    }
    find_own_range()
}

#[cold]
#[inline(never)]
fn find_own_range() -> (u64, u64) {
    let here = own_range as *const () as usize as u64;
    let mut found = (here, here + 1);
    for_each_module(|m| {
        if m.segments.iter().any(|s| s.contains(&here)) {
            found = m.range.clone().into_inner_pair();
        }
    });
    RANGE[0].store(found.0, Ordering::Relaxed);
    RANGE[1].store(found.1, Ordering::Relaxed);
    found
}

trait Pair {
    fn into_inner_pair(self) -> (u64, u64);
}
impl Pair for core::ops::Range<u64> {
    fn into_inner_pair(self) -> (u64, u64) {
        (self.start, self.end)
    }
}

/// One loaded module as `dl_iterate_phdr` shows it, in process addresses.
pub struct LoadedModule {
    pub name: String,
    pub base: u64,
    /// From the lowest to the highest loaded byte.
    pub range: core::ops::Range<u64>,
    /// The executable `PT_LOAD` segment(s).
    pub segments: Vec<core::ops::Range<u64>>,
    /// `.eh_frame_hdr` (from `PT_GNU_EH_FRAME`).
    pub eh_frame_hdr: Option<core::ops::Range<u64>>,
    /// Every `PT_LOAD` segment, to bound `.eh_frame`.
    pub loads: Vec<core::ops::Range<u64>>,
}

/// Calls `f` for each loaded module. Allocates (names, vectors).
pub fn for_each_module(mut f: impl FnMut(&LoadedModule)) {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut dyn FnMut` passed below; `info` is valid for this call.
        unsafe {
            let f = &mut *(data as *mut &mut dyn FnMut(&LoadedModule));
            let info = &*info;
            let base = info.dlpi_addr;
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                core::ffi::CStr::from_ptr(info.dlpi_name)
                    .to_string_lossy()
                    .into_owned()
            };
            let mut m = LoadedModule {
                name,
                base,
                range: 0..0,
                segments: Vec::new(),
                eh_frame_hdr: None,
                loads: Vec::new(),
            };
            let (mut lo, mut hi) = (u64::MAX, 0u64);
            for i in 0..info.dlpi_phnum as usize {
                let ph = &*info.dlpi_phdr.add(i);
                let start = base.wrapping_add(ph.p_vaddr);
                let r = start..start.wrapping_add(ph.p_memsz);
                match ph.p_type {
                    libc::PT_LOAD => {
                        lo = lo.min(r.start);
                        hi = hi.max(r.end);
                        if ph.p_flags & libc::PF_X != 0 {
                            m.segments.push(r.clone());
                        }
                        m.loads.push(r);
                    }
                    libc::PT_GNU_EH_FRAME => m.eh_frame_hdr = Some(r),
                    _ => {}
                }
            }
            if lo < hi {
                m.range = lo..hi;
                f(&m);
            }
        }
        0
    }
    let mut dynf: &mut dyn FnMut(&LoadedModule) = &mut f;
    // SAFETY: `visit` only uses `data` as the closure pointer, for the duration of the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(visit),
            &mut dynf as *mut &mut dyn FnMut(&LoadedModule) as *mut libc::c_void,
        );
    }
}

/// How many modules were ever loaded (`dlpi_adds`); changes when one is dlopen'd.
pub fn module_adds() -> u64 {
    tidemark_tracer::symbolize::module_load_counts().0
}
