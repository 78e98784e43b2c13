//! json: generate a document of ~50 MB (a `serde_json::Value` tree of records), serialize it,
//! drop the tree, parse the text back, and serialize again. Many small maps, strings and
//! vectors, built and freed in bulk.

use super::Params;
use crate::rng::Rng;
use serde_json::{json, Value};

/// Records at scale 1 (~250 bytes each serialized: ~50 MB).
pub const RECORDS: usize = 200_000;

const CITIES: &[&str] = &[
    "Lisbon", "Oslo", "Kyoto", "Quito", "Perth", "Accra", "Turku",
];
const TAGS: &[&str] = &["new", "vip", "beta", "trial", "legacy", "staff", "bot"];

fn record(i: usize, rng: &mut Rng) -> Value {
    let tags: Vec<&str> = (0..rng.range(0, 4))
        .map(|_| TAGS[rng.range(0, TAGS.len() - 1)])
        .collect();
    let history: Vec<u64> = (0..rng.range(1, 6)).map(|_| rng.next_u64() >> 44).collect();
    json!({
        "id": i,
        "name": format!("user-{:08x}", rng.next_u64() as u32),
        "email": format!("u{i}@example.org"),
        "active": rng.next_u64() & 1 == 1,
        "score": (rng.range(0, 100_000) as f64) / 100.0,
        "tags": tags,
        "history": history,
        "address": {
            "city": CITIES[rng.range(0, CITIES.len() - 1)],
            "zip": format!("{:05}", rng.range(0, 99_999)),
        },
    })
}

pub fn run(params: &Params) -> u64 {
    let n = params.scaled(RECORDS, 100);
    let mut rng = Rng::new(0x4a53);
    let doc = Value::Array((0..n).map(|i| record(i, &mut rng)).collect());
    let text = serde_json::to_string(&doc).expect("serialize");
    drop(doc);
    let parsed: Value = serde_json::from_str(&text).expect("parse");
    let again = serde_json::to_string(&parsed).expect("re-serialize");
    assert_eq!(text.len(), again.len(), "round trip changed the document");
    let records = parsed.as_array().map_or(0, Vec::len) as u64;
    text.len() as u64 + records
}
