//! tidemark-tracer (skeleton)
