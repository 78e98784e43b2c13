//! Reading a capture on a second thread while the replay runs on the caller's.
//!
//! A report's single pass splits about evenly between reading (zstd, the column decoder and
//! its pointer model, merging the threads' chunks into one order) and replaying (the live
//! table and the per-site sums). The two halves meet only at the ordered event stream, so
//! [`with_batches`] runs the reader on a thread of its own and hands runs of events over, in
//! order, through a short bounded queue: on two cores a report takes about as long as the
//! longer half instead of the sum of both. The buffers travel back to be refilled, so memory
//! stays at `DEPTH + 2` runs of `RUN` events, whatever the capture's size.
//!
//! Where a thread cannot be started, the caller reads in line: same results, one core.

use crate::capture::format::{CaptureError, Event};
use crate::capture::{Batch, CaptureReader};
use std::io::Read;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};

/// Events per run handed over (384 KiB). Runs of 1024 events made the replay wait on an empty
/// queue so often that the thread switches ate the gain (1.3 s for `stats` on a 20M-event
/// capture, against 1.22 s reading in line); 8192 took 0.80 s, and 16384 was no faster.
const RUN: usize = 8192;
/// Runs queued ahead of the replay.
const DEPTH: usize = 3;

/// The stream of a capture, in order, wherever it is read.
pub(crate) trait Batches {
    /// As [`CaptureReader::next_batch`], with the run length chosen here.
    fn next_batch(&mut self, events: &mut Vec<Event>) -> Result<Option<Batch>, CaptureError>;
    /// Bytes of the file read so far (for progress).
    fn offset(&self) -> u64;
    /// Why the data ended early, once the stream is over.
    fn truncated(&self) -> Option<String>;
}

impl<R: Read> Batches for CaptureReader<R> {
    fn next_batch(&mut self, events: &mut Vec<Event>) -> Result<Option<Batch>, CaptureError> {
        CaptureReader::next_batch(self, events, RUN)
    }
    fn offset(&self) -> u64 {
        CaptureReader::offset(self)
    }
    fn truncated(&self) -> Option<String> {
        CaptureReader::truncated(self).map(str::to_string)
    }
}

/// What the reading thread sends: a piece of the stream and the file offset after it.
enum Msg {
    Piece(Result<Option<Batch>, CaptureError>, Vec<Event>, u64),
    /// The stream is over (after `Piece(Ok(None))`): why it ended early, if it did.
    Done(Option<String>),
}

/// The replay's end of the queue.
struct Ahead {
    rx: Receiver<Msg>,
    spare: Sender<Vec<Event>>,
    offset: u64,
    truncated: Option<String>,
}

impl Batches for Ahead {
    fn next_batch(&mut self, events: &mut Vec<Event>) -> Result<Option<Batch>, CaptureError> {
        match self.rx.recv() {
            Ok(Msg::Piece(result, mut run, offset)) => {
                self.offset = offset;
                std::mem::swap(events, &mut run);
                // The reader may have stopped (after an error); a lost spare is only memory.
                let _ = self.spare.send(run);
                if let Ok(None) = result {
                    if let Ok(Msg::Done(why)) = self.rx.recv() {
                        self.truncated = why;
                    }
                }
                result
            }
            // The reader sends Done only after Ok(None), which ends the caller's loop; a
            // closed queue means the reading thread is gone: the stream ends here.
            Ok(Msg::Done(_)) | Err(_) => {
                events.clear();
                Ok(None)
            }
        }
    }
    fn offset(&self) -> u64 {
        self.offset
    }
    fn truncated(&self) -> Option<String> {
        self.truncated.clone()
    }
}

/// Runs `replay` over the stream of `reader`, the reading done on a second thread.
pub(crate) fn with_batches<R: Read + Send, T>(
    mut reader: CaptureReader<R>,
    replay: impl FnOnce(&mut dyn Batches) -> T,
) -> T {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Msg>(DEPTH);
        let (spare, spares) = channel::<Vec<Event>>();
        let (start_tx, start_rx) = channel::<CaptureReader<R>>();
        let started = std::thread::Builder::new()
            .name("tidemark-read".into())
            .spawn_scoped(scope, move || {
                if let Ok(reader) = start_rx.recv() {
                    read(reader, tx, spares);
                }
            });
        if started.is_err() {
            return replay(&mut reader);
        }
        // The thread owns the reader from here (it waited for it so that a failed spawn
        // leaves the reader with us).
        if let Err(back) = start_tx.send(reader) {
            reader = back.0;
            return replay(&mut reader);
        }
        let mut ahead = Ahead {
            rx,
            spare,
            offset: 0,
            truncated: None,
        };
        replay(&mut ahead)
        // `ahead` drops here, before the scope joins the reader: a reader blocked on a full
        // queue (the replay stopped early) sees it closed and returns.
    })
}

/// The reading thread: reads runs until the end, an error, or the replay hangs up.
fn read<R: Read>(
    mut reader: CaptureReader<R>,
    tx: std::sync::mpsc::SyncSender<Msg>,
    spares: Receiver<Vec<Event>>,
) {
    loop {
        let mut run = spares
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(RUN));
        let result = reader.next_batch(&mut run, RUN);
        let more = matches!(result, Ok(Some(_)));
        let end = matches!(result, Ok(None));
        if tx.send(Msg::Piece(result, run, reader.offset())).is_err() {
            return;
        }
        if end {
            let _ = tx.send(Msg::Done(reader.truncated().map(str::to_string)));
        }
        if !more {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::builder::CaptureBuilder;
    use crate::capture::format::{EventKind, Meta, Sample};
    use crate::capture::Item;
    use std::io::Cursor;

    /// Three threads' allocations, 1000 per chunk and thread, a sample after each round: many
    /// runs, and items between them.
    fn capture(rounds: u64) -> Vec<u8> {
        let mut b = CaptureBuilder::new(&Meta {
            pid: 7,
            ..Meta::default()
        });
        let mut seq = 0;
        for round in 0..rounds {
            let mut per_thread = vec![Vec::new(); 3];
            for _ in 0..3000 {
                let thread = (seq % 3) as u32;
                per_thread[thread as usize].push(Event {
                    seq,
                    thread,
                    kind: EventKind::Alloc {
                        ptr: 0x10000 + 16 * seq,
                        size: 16 + seq % 100,
                        api: 0,
                        stack: 0,
                    },
                });
                seq += 1;
            }
            for (thread, events) in per_thread.iter().enumerate() {
                b.events(thread as u32, events);
            }
            b.sample(Sample {
                time_ns: round,
                seq,
                rss: 0,
                heap: 0,
            });
        }
        b.bytes().to_vec()
    }

    fn reader(bytes: &[u8]) -> CaptureReader<Cursor<Vec<u8>>> {
        CaptureReader::new(Cursor::new(bytes.to_vec()), "test.tdm").unwrap()
    }

    /// Everything a replay sees: the events and the other items, in order.
    fn drain(batches: &mut dyn Batches) -> (Vec<Event>, Vec<Item>) {
        let (mut events, mut items, mut run) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(batch) = batches.next_batch(&mut run).unwrap() {
            match batch {
                Batch::Events => events.extend_from_slice(&run),
                Batch::Item(item) => items.push(item),
            }
        }
        (events, items)
    }

    #[test]
    fn reading_ahead_gives_the_stream_read_in_line() {
        let bytes = capture(20);
        let ahead = with_batches(reader(&bytes), drain);
        let in_line = drain(&mut reader(&bytes));
        assert_eq!(ahead.0.len(), 60_000);
        assert_eq!(ahead.1.len(), 20);
        assert_eq!(ahead, in_line);
        // In key order across the threads' chunks.
        assert!(ahead.0.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    }

    #[test]
    fn a_replay_that_stops_early_does_not_wait_for_the_reader() {
        // More runs than the queue holds: the reader blocks on a full queue until the replay
        // hangs up, and then must return (else the scope would never end).
        let bytes = capture(20);
        let first = with_batches(reader(&bytes), |b| {
            let mut run = Vec::new();
            b.next_batch(&mut run).unwrap();
            run.len()
        });
        assert_eq!(first, 3000, "the first round, up to its sample");
    }

    #[test]
    fn the_end_and_a_truncation_reach_the_replay() {
        let mut bytes = capture(3);
        let whole = with_batches(reader(&bytes), |b| {
            drain(b);
            b.truncated()
        });
        assert_eq!(whole, None);
        bytes.truncate(bytes.len() - 5);
        let cut = with_batches(reader(&bytes), |b| {
            let (events, items) = drain(b);
            (events.len(), items.len(), b.truncated())
        });
        assert_eq!(cut.0, 9000, "every chunk but the last sample");
        assert_eq!(cut.1, 2);
        let why = cut.2.expect("the cut is reported");
        assert!(
            why.starts_with("the file ends inside a Samples chunk at byte "),
            "{why}"
        );
    }
}
