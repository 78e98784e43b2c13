//! Debug hooks (issue 3): owned by the debug-hooks work.
