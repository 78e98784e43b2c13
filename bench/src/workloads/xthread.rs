//! xthread: a producer thread allocates objects (8..=512 bytes) in batches and sends them over
//! a bounded channel to a consumer thread that frees them: every free is a cross-thread free.

use super::churn::{digest, object};
use super::Params;
use crate::rng::Rng;
use std::sync::mpsc::sync_channel;

pub const OBJECTS: usize = 20_000_000;
pub const BATCH: usize = 1000;
/// Batches in flight at most (bounds the memory the benchmark itself holds).
pub const QUEUE: usize = 64;

pub fn run(params: &Params) -> u64 {
    let batches = params.scaled(OBJECTS, BATCH) / BATCH;
    let (tx, rx) = sync_channel::<Vec<Vec<u8>>>(QUEUE);
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        for batch in rx {
            for obj in batch {
                sum = sum.wrapping_add(digest(&obj));
            }
        }
        sum
    });
    let mut rng = Rng::new(0x7472);
    for _ in 0..batches {
        let batch: Vec<Vec<u8>> = (0..BATCH).map(|_| object(&mut rng)).collect();
        tx.send(batch).expect("consumer hung up");
    }
    drop(tx);
    consumer.join().expect("consumer panicked")
}
