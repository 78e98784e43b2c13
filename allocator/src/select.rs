//! `Tidemark`: the allocator chosen at run time by `TIDEMARK_MALLOC` (issue 3).
