//! Reports rendered from captures (issue 5).
