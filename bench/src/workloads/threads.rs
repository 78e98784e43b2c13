//! threads: one thread per core (`available_parallelism`), each running `churn` on its own
//! objects; the total work and population equal the single-threaded churn's. Measures thread-local scaling.

use super::churn::{churn, LIVE, OPS};
use super::Params;

pub fn run(params: &Params) -> u64 {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ops = params.scaled(OPS, 1000 * n) / n;
    let live = (LIVE / n).min(ops / 10);
    let workers: Vec<_> = (0..n as u64)
        .map(|i| std::thread::spawn(move || churn(live, ops, 0x7468 + i)))
        .collect();
    workers
        .into_iter()
        .map(|w| w.join().expect("worker panicked"))
        .fold(0u64, u64::wrapping_add)
}
