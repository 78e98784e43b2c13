//! The event encoding is pinned: the bytes of an `Events` chunk are a function of its events
//! alone, and that function does not change without a format version bump (captures written
//! by earlier builds must stay what a later writer would write). And the recording writer,
//! which encodes straight from the per-thread rows, writes exactly the chunk
//! [`encode_events_at`] gives for the chunk's events.
//!
//! `TIDEMARK_REENCODE=a.tdm:b.tdm` also re-encodes every `Events` chunk of those captures
//! (recorded at `TIDEMARK_REENCODE_LEVEL`, default 1) and checks it comes out byte for byte.

use tidemark_tracer::capture::events::{
    encode_events_at, ChunkEncoder, EventCursor, DEFAULT_COLUMN_LEVEL,
};
use tidemark_tracer::capture::format::*;
use tidemark_tracer::capture::{self, RecordOptions};

#[path = "shared/rng.rs"]
mod rng;
use rng::Rng;
#[path = "shared/streams.rs"]
mod streams;

/// The `Events` chunk payloads of a capture file, in file order.
fn events_payloads(file: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at + CHUNK_HEADER_LEN <= file.len() {
        let h = &file[at..at + CHUNK_HEADER_LEN];
        let (kind, codec) = (h[0], h[1]);
        let raw_len = u32::from_le_bytes(h[2..6].try_into().unwrap()) as usize;
        let stored_len = u32::from_le_bytes(h[6..10].try_into().unwrap()) as usize;
        let stored = &file[at + CHUNK_HEADER_LEN..at + CHUNK_HEADER_LEN + stored_len];
        if kind == ChunkKind::Events as u8 {
            assert_eq!(codec, CODEC_RAW, "Events chunks store their payload as is");
            assert_eq!(raw_len, stored_len);
            out.push(stored.to_vec());
        }
        at += CHUNK_HEADER_LEN + stored_len;
    }
    assert_eq!(at, file.len(), "the capture ends on a chunk boundary");
    out
}

/// Decodes `payload` and encodes its events again at `level`: the same bytes must come out.
fn assert_reencodes(payload: &[u8], level: i32, what: &str) -> usize {
    let mut cursor = EventCursor::new(payload.to_vec(), None).expect("chunk decodes");
    let mut events = Vec::new();
    while let Some(ev) = cursor.next().expect("event decodes") {
        events.push(ev);
    }
    let mut again = Encoder::default();
    encode_events_at(cursor.thread(), &events, level, &mut again);
    assert!(
        again.buf == payload,
        "{what}: a chunk of {} events re-encodes to {} bytes, was {}",
        events.len(),
        again.buf.len(),
        payload.len()
    );
    events.len()
}

fn ev(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        thread: 5,
        kind,
    }
}

struct Pools {
    free_lists: Vec<Vec<u64>>,
    next_page: u64,
}

impl Pools {
    fn alloc(&mut self, size: u64, rng: &mut Rng) -> u64 {
        if size > 512 {
            return 0x5555_0000_0000 + 16 * rng.below(1 << 24) as u64;
        }
        let class = size.div_ceil(16).max(1) as usize;
        if self.free_lists[class].is_empty() {
            let block = class as u64 * 16;
            let page = self.next_page;
            self.free_lists[class].extend(
                (0..(16384 - 48) / block)
                    .rev()
                    .map(|i| page + 48 + i * block),
            );
            // Now and then a page in a far region.
            self.next_page += if rng.below(8) == 0 { 37 << 20 } else { 16384 };
        }
        self.free_lists[class].pop().unwrap()
    }
}

/// Churn on a toy pool allocator (16 KiB pages of one class, a 48-byte header, newest free
/// first), with reallocs, big sizes and stack changes: every branch of the pointer models.
fn pooled(steps: usize, rng: &mut Rng) -> Vec<Event> {
    let mut pools = Pools {
        free_lists: vec![Vec::new(); 33],
        next_page: 0x7f12_3400_0000,
    };
    let mut live: Vec<(u64, u64)> = Vec::new();
    let mut events = Vec::new();
    let (mut seq, mut stack) = (0u64, 1u32);
    let mut dead: Vec<(u64, u64)> = Vec::new();
    for step in 0..steps {
        if rng.below(16) == 0 {
            stack = rng.below(40) as u32;
        }
        let size = match rng.below(20) {
            0 => 513 + rng.below(1 << 20) as u64,
            1 => 0,
            _ => 1 + rng.below(512) as u64,
        };
        if live.len() < 500 || (step % 3 != 0 && live.len() < 5000) {
            let ptr = pools.alloc(size, rng);
            events.push(ev(
                seq,
                EventKind::Alloc {
                    ptr,
                    size,
                    api: if rng.below(8) == 0 {
                        rng.below(4) as u8
                    } else {
                        0
                    },
                    stack,
                },
            ));
            live.push((ptr, size));
        } else if rng.below(10) == 0 {
            let i = rng.below(live.len());
            let (old, _) = live[i];
            let new = pools.alloc(size, rng);
            seq += 1;
            events.push(ev(
                seq,
                EventKind::Realloc {
                    old,
                    new,
                    size,
                    stack,
                },
            ));
            live[i] = (new, size);
            dead.push((old, 0));
        } else {
            let (ptr, size) = live.swap_remove(rng.below(live.len()));
            seq += 1 + (rng.below(50) == 0) as u64 * rng.below(1000) as u64;
            events.push(ev(seq, EventKind::Free { ptr, api: 0 }));
            dead.push((ptr, size));
        }
        // Frees reach the allocator a little later, in a shuffled order.
        if dead.len() > 4 {
            let (ptr, size) = dead.swap_remove(rng.below(dead.len()));
            let class = size.div_ceil(16).max(1) as usize;
            if size <= 512 && size > 0 {
                pools.free_lists[class].push(ptr);
            }
        }
    }
    events
}

/// FNV-1a: a fingerprint of the encoder's output.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash = (*hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
}

#[test]
fn the_encoding_of_fixed_event_streams_is_pinned() {
    let mut rng = Rng(0x7e57_ab1e);
    let streams = [
        pooled(120_000, &mut rng),
        streams::wild(40_000, &mut rng, 5),
    ];
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut total = 0;
    // One encoder kept from chunk to chunk (as the writer keeps it) writes the same bytes.
    let mut kept = ChunkEncoder::new();
    for events in &streams {
        // Chunks of many lengths, the models starting afresh in each.
        let mut rest = &events[..];
        for len in [0, 1, 2, 3, 17, 100, 4096, 5000, 70_000, usize::MAX] {
            let (chunk, more) = rest.split_at(len.min(rest.len()));
            rest = more;
            for level in [0, 1, 3] {
                let mut out = Encoder::default();
                encode_events_at(5, chunk, level, &mut out);
                fnv(&mut hash, &out.buf);
                total += out.buf.len();
                let mut again = Vec::new();
                for ev in chunk {
                    kept.push(ev);
                }
                kept.finish(5, level, &mut again);
                assert!(again == out.buf, "a kept encoder differs");
                let mut cursor = EventCursor::new(out.buf, None).expect("chunk decodes");
                for want in chunk {
                    assert_eq!(cursor.next().as_ref(), Ok(&Some(*want)));
                }
                assert_eq!(cursor.next(), Ok(None));
            }
        }
    }
    // From the encoder as of format version 3; a change here changes captures.
    assert_eq!((total, hash), (2_534_433, 3_640_619_965_497_985_988));
}

#[test]
fn recorded_chunks_are_what_the_encoder_gives() {
    let dir = std::env::temp_dir().join(format!("tidemark-pinned-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rec.tdm");
    let guard = capture::record(&path, RecordOptions::default()).unwrap();
    let stack = tidemark_tracer::stack::intern(&[0x10_1000, 0x10_0000]);
    let other = tidemark_tracer::stack::intern(&[0x10_2000, 0x10_0000]);
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng(0x5eed + t);
                let mut live: Vec<usize> = Vec::new();
                for i in 0..300_000usize {
                    let st = if i % 7 == 0 { other } else { stack };
                    match rng.below(10) {
                        0..=4 => {
                            let p =
                                0x7000_0000_0000 + ((t as usize) << 36) + (rng.below(1 << 26) << 4);
                            capture::on_alloc(p, 8 + rng.below(600), 0, st);
                            live.push(p);
                        }
                        5 if !live.is_empty() => {
                            let old = live.swap_remove(rng.below(live.len()));
                            if let Some(ticket) = capture::begin_realloc() {
                                let new = old + 16 * rng.below(4);
                                capture::finish_realloc(ticket, 0, old, new, 1 << 20, st);
                                live.push(new);
                            }
                        }
                        _ if !live.is_empty() => {
                            capture::on_free(live.swap_remove(rng.below(live.len())), 0)
                        }
                        _ => {}
                    }
                    if i % 50_000 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(15));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let summary = guard.stop().unwrap();
    let file = std::fs::read(&path).unwrap();
    let payloads = events_payloads(&file);
    let mut events = 0;
    for p in &payloads {
        events += assert_reencodes(p, DEFAULT_COLUMN_LEVEL, "recorded");
    }
    assert!(payloads.len() > 3, "{} chunks", payloads.len());
    assert_eq!(events as u64, summary.events);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn existing_captures_reencode_exactly() {
    let Ok(paths) = std::env::var("TIDEMARK_REENCODE") else {
        return;
    };
    let level = std::env::var("TIDEMARK_REENCODE_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_COLUMN_LEVEL);
    for path in paths.split(':') {
        let file = std::fs::read(path).unwrap();
        let (mut chunks, mut events) = (0, 0);
        for p in events_payloads(&file) {
            events += assert_reencodes(&p, level, path);
            chunks += 1;
        }
        println!("{path}: {chunks} chunks, {events} events re-encode exactly");
    }
}
