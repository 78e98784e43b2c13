//! tidemark-tracer (work in progress)
pub mod capture;
pub mod report;
