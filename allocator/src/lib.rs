//! tidemark-alloc (skeleton)
pub struct Pymalloc;
impl Pymalloc { pub const fn new() -> Self { Pymalloc } }
unsafe impl core::alloc::GlobalAlloc for Pymalloc {
    unsafe fn alloc(&self, l: core::alloc::Layout) -> *mut u8 { std::alloc::System.alloc(l) }
    unsafe fn dealloc(&self, p: *mut u8, l: core::alloc::Layout) { std::alloc::System.dealloc(p, l) }
}
