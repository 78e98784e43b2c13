//! Event streams shared by the codec tests.

use crate::rng::Rng;
use tidemark_tracer::capture::format::{Event, EventKind};

/// Pointers anywhere, unaligned, at the extremes, and repeated.
pub fn wild(n: usize, rng: &mut Rng, thread: u32) -> Vec<Event> {
    let mut events = Vec::new();
    let mut recent: Vec<u64> = Vec::new();
    let mut seq = 0u64;
    for _ in 0..n {
        let ptr = match rng.below(8) {
            0 => rng.next(),
            1 => u64::MAX - rng.below(3) as u64,
            2 => rng.below(64) as u64,
            3 if !recent.is_empty() => recent[rng.below(recent.len())],
            _ => 0x5500_0000_0000 + rng.below(4 << 14) as u64,
        };
        seq += rng.below(3) as u64;
        let big = rng.below(4) == 0;
        let kind = match rng.below(5) {
            0 | 1 => EventKind::Alloc {
                ptr,
                size: rng.below(if big { 1 << 40 } else { 600 }) as u64,
                api: rng.below(4) as u8,
                stack: rng.below(5) as u32,
            },
            2 | 3 => EventKind::Free {
                ptr,
                api: rng.below(4) as u8,
            },
            _ => EventKind::Realloc {
                old: recent.last().copied().unwrap_or(0),
                new: ptr,
                size: rng.below(1000) as u64,
                stack: rng.below(5) as u32,
            },
        };
        recent.push(ptr);
        if recent.len() > 64 {
            recent.remove(0);
        }
        events.push(Event { seq, thread, kind });
    }
    events
}
