//! tidemark-alloc (work in progress: the allocator lands next)
pub mod debug;
pub mod env;
pub mod hooks;
pub mod select;
pub mod stderr;
pub mod sync;

pub struct Pymalloc;
impl Pymalloc {
    pub const fn new() -> Self {
        Pymalloc
    }
}
unsafe impl core::alloc::GlobalAlloc for Pymalloc {
    unsafe fn alloc(&self, l: core::alloc::Layout) -> *mut u8 {
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: core::alloc::Layout) {
        std::alloc::System.dealloc(p, l)
    }
}

/// Is `ptr` inside one of tidemark's arenas? (placeholder until the arena map lands)
pub fn is_ours(_ptr: *const u8) -> bool {
    false
}
