//! strings: `format!` many short Strings into a Vec, index them in a
//! `HashMap<String, Vec<u32>>` (a fresh key String per lookup, growing Vecs), then sort them.
//! Typical text-processing allocation: short strings, reallocs, a big sort buffer.

use super::Params;
use crate::rng::Rng;
use std::collections::HashMap;

pub const STRINGS: usize = 1_000_000;

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

pub fn run(params: &Params) -> u64 {
    let n = params.scaled(STRINGS, 1000);
    let mut rng = Rng::new(0x5747);
    let mut lines: Vec<String> = (0..n)
        .map(|i| {
            let word = WORDS[rng.range(0, WORDS.len() - 1)];
            format!("{word}-{:x}-{i}", rng.next_u64() & 0xfff)
        })
        .collect();

    let mut index: HashMap<String, Vec<u32>> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        // The key is the "word-hex" prefix: 1M lines over 64k keys, so each key's Vec grows
        // (by realloc) to ~16 entries.
        let key = &line[..line.rfind('-').expect("formatted above")];
        index.entry(key.to_owned()).or_default().push(i as u32);
    }

    lines.sort();

    let mut sum = index.len() as u64;
    sum += index.values().map(|v| v.len() as u64 * 3).sum::<u64>();
    sum += lines[0].len() as u64 + lines[n / 2].len() as u64 + lines[n - 1].len() as u64;
    sum
}
