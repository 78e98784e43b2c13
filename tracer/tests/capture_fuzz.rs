//! The reader never panics: ≥ 10,000 random and mutated inputs each give either data or an
//! error that names the file and the problem. Plus the exact messages for the common cases.

use std::panic::{catch_unwind, AssertUnwindSafe};
use tidemark_tracer::capture::builder::CaptureBuilder;
use tidemark_tracer::capture::events::encode_events;
use tidemark_tracer::capture::format::*;
use tidemark_tracer::capture::writer::put_chunk;
use tidemark_tracer::capture::CaptureReader;
use tidemark_tracer::report::{self, AnalyzeOptions, Symbols};
use tidemark_tracer::symbolize::Frame;

#[path = "shared/rng.rs"]
mod rng;
use rng::Rng;

fn meta() -> Meta {
    Meta {
        pid: 42,
        start_unix_ms: 1_700_000_000_000,
        sample_interval_ms: 10,
        command: "fuzz --me".into(),
        executable: "/bin/fuzz".into(),
        aggregate: false,
    }
}

fn alloc(seq: u64, ptr: u64, size: u64, stack: u32) -> Event {
    Event {
        seq,
        thread: 0,
        kind: EventKind::Alloc {
            ptr,
            size,
            api: 0,
            stack,
        },
    }
}
fn free(seq: u64, ptr: u64) -> Event {
    Event {
        seq,
        thread: 0,
        kind: EventKind::Free { ptr, api: 0 },
    }
}

/// A valid capture: two threads, stacks, modules, samples, a realloc, an end marker.
fn valid_capture() -> Vec<u8> {
    let mut b = CaptureBuilder::new(&meta());
    b.stacks(1, &[(0x1000, 0), (0x2000, 1), (0x3000, 1)]);
    b.modules(&[ModuleRecord {
        path: "/bin/fuzz".into(),
        build_id: vec![1, 2, 3],
        base: 0x400000,
        segments: vec![(0x401000, 0x402000)],
    }]);
    b.threads(&[
        ThreadRecord {
            index: 0,
            os_tid: 100,
            name: "main".into(),
        },
        ThreadRecord {
            index: 1,
            os_tid: 101,
            name: "w".into(),
        },
    ]);
    let t0: Vec<Event> = (0..50)
        .map(|i| alloc(i * 2, 0x10000 + i * 64, 32 + i, 2))
        .collect();
    let mut t1: Vec<Event> = (0..50)
        .map(|i| Event {
            thread: 1,
            ..free(i * 2 + 1, 0x10000 + i * 64)
        })
        .collect();
    t1.push(Event {
        seq: 101,
        thread: 1,
        kind: EventKind::Realloc {
            old: 0,
            new: 0x9000,
            size: 77,
            stack: 3,
        },
    });
    b.events(0, &t0).events(1, &t1);
    b.sample(Sample {
        time_ns: 10_000_000,
        seq: 102,
        rss: 1 << 20,
        heap: 0,
    });
    // An exec that failed: the events after it say the run went on.
    b.exec(&ExecRecord {
        time_ns: 15_000_000,
        seq: 102,
        program: "/bin/missing".into(),
    });
    b.events(0, &[alloc(102, 0x20000, 4096, 3), free(103, 0x20000)]);
    b.sample(Sample {
        time_ns: 20_000_000,
        seq: 104,
        rss: 2 << 20,
        heap: 0,
    });
    b.end(EndRecord {
        time_ns: 25_000_000,
        events: 104,
        dropped: 0,
    });
    b.bytes().to_vec()
}

fn symbols() -> Symbols {
    Symbols::with_resolver(|ip| vec![Frame::with_function(format!("f{ip:x}"), "x.rs", 1)])
}

/// Reads everything and renders the stats; returns the error text, if any.
fn read_all(bytes: &[u8]) -> Result<report::Analysis, String> {
    let reader = CaptureReader::new(bytes, "fuzz.tdm").map_err(|e| e.to_string())?;
    let a = report::analysis::analyze_reader(reader, &AnalyzeOptions::default())
        .map_err(|e| e.to_string())?;
    let mut syms = symbols();
    let _ = report::stats::render_text(&a, &mut syms, &Default::default());
    let _ = report::tree::render_text(&a, &mut syms, &Default::default());
    Ok(a)
}

#[test]
fn valid_capture_reads() {
    let a = read_all(&valid_capture()).unwrap();
    assert_eq!(a.totals.allocs, 50 + 1 + 1);
    assert_eq!(a.totals.frees, 50 + 1);
    assert_eq!(a.leaked_bytes, 77);
    assert_eq!(a.peak_bytes, 4096 + 77);
    assert_eq!(a.timeline.len(), 2);
    assert!(a.end.is_some());
    assert_eq!(a.exec, None, "events came after the exec record");
}

/// A capture whose last record is an exec (the program replaced itself) ended there: no end
/// marker, nothing missing.
#[test]
fn a_capture_ending_at_an_exec_says_so() {
    let mut b = CaptureBuilder::new(&meta());
    b.stacks(1, &[(0x1000, 0)]);
    b.events(0, &[alloc(0, 0x10000, 48, 1), alloc(0, 0x10040, 16, 1)]);
    let exec = ExecRecord {
        time_ns: 3_000_000,
        seq: 1,
        program: "/usr/bin/env".into(),
    };
    b.exec(&exec);
    let a = read_all(b.bytes()).unwrap();
    assert_eq!(a.exec, Some(exec));
    assert_eq!((a.end, a.truncated), (None, None));
    assert_eq!((a.totals.allocs, a.leaked_bytes), (2, 64));
    assert_eq!(a.duration_ns, 3_000_000);
}

#[test]
fn clear_errors_for_common_cases() {
    let err = |b: &[u8]| {
        read_all(b)
            .err()
            .unwrap_or_else(|| panic!("expected an error for {b:?}"))
    };
    assert_eq!(
        err(b""),
        "fuzz.tdm: empty file: not a tidemark capture (at byte 0)"
    );
    assert_eq!(
        err(b"hello world, this is text"),
        "fuzz.tdm: not a tidemark capture (wrong magic number) (at byte 0)"
    );
    assert_eq!(err(b"TDMKC"), "fuzz.tdm: truncated header (at byte 5)");
    let mut v = valid_capture();
    v[8] = 9;
    assert_eq!(
        err(&v),
        "fuzz.tdm: unsupported capture format version 9 (this build reads 3 to 4; read it with \
         the tidemark that recorded it, or record it again) (at byte 8)"
    );
    // Version 2 files (allocations' pointers as distances among all recent frees) exist on
    // disk; they are refused too.
    v[8] = 2;
    assert!(
        err(&v).starts_with(
            "fuzz.tdm: unsupported capture format version 2 (this build reads 3 to 4;"
        ),
        "{}",
        err(&v)
    );
    // Cut inside the first chunk's header, then inside its body: the byte is named once.
    let v = valid_capture();
    assert_eq!(
        err(&v[..20]),
        "fuzz.tdm: truncated capture: the file ends inside its first chunk, the run's \
         metadata (at byte 16)"
    );
    assert_eq!(
        err(&v[..40]),
        "fuzz.tdm: truncated capture: the file ends inside its first chunk, the run's \
         metadata (at byte 16)"
    );
    assert_eq!(
        err(&v[..16]),
        "fuzz.tdm: truncated capture: the file ends before the run's metadata (at byte 16)"
    );
    let mut v = valid_capture();
    let n = v.len();
    v[n - 3] ^= 0xFF; // inside the End chunk's payload
    assert!(err(&v).contains("checksum mismatch"), "{}", err(&v));
    // A file cut inside a chunk reads up to the last whole chunk and says so.
    let v = valid_capture();
    let a = read_all(&v[..v.len() - 2]).unwrap();
    assert!(
        a.truncated
            .as_deref()
            .unwrap()
            .contains("ends inside an End chunk"),
        "{:?}",
        a.truncated
    );
    assert!(a.end.is_none());
    // Bytes after the end marker are not the capture's: all of it reads, and they are named.
    let mut v = valid_capture();
    let end = v.len();
    v.extend_from_slice(b"stray bytes, more than a chunk header");
    let a = read_all(&v).unwrap();
    assert!(a.end.is_some());
    assert_eq!((a.totals.allocs, a.leaked_bytes), (52, 77));
    assert_eq!(
        a.truncated.as_deref(),
        Some(
            format!(
                "bytes follow the end marker (from byte {end}): not part of the capture, ignored"
            )
            .as_str()
        )
    );
    // A chunk header whose length no chunk can have: corrupt, with the length it claims.
    let mut v = valid_capture();
    let first_chunk = 16 + 14 + u32::from_le_bytes(v[22..26].try_into().unwrap()) as usize;
    v[first_chunk + 6..first_chunk + 10].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        err(&v).contains(&format!("a chunk header claims {} bytes", u32::MAX)),
        "{}",
        err(&v)
    );
    // Opening a missing file names it.
    let e = CaptureReader::open("/nonexistent/x.tdm")
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("/nonexistent/x.tdm: cannot open:"), "{e}");
}

/// Chunk payloads of the valid capture, for mutating inside a valid checksum.
fn payload_mutant(rng: &mut Rng) -> Vec<u8> {
    let kinds = [
        ChunkKind::Events,
        ChunkKind::Stacks,
        ChunkKind::Modules,
        ChunkKind::Samples,
        ChunkKind::Threads,
        ChunkKind::Aggregate,
        ChunkKind::End,
    ];
    let mut e = Encoder::default();
    let kind = kinds[rng.below(kinds.len())];
    match kind {
        ChunkKind::Events => encode_events(
            0,
            &[
                alloc(0, 0x1000, 10, 1),
                free(1, 0x1000),
                alloc(5, 0x2000, 99, 2),
            ],
            &mut e,
        ),
        ChunkKind::Stacks => encode_stacks(1, &[(0x1000, 0), (0x2000, 1)], &mut e),
        ChunkKind::Modules => encode_modules(
            &[ModuleRecord {
                path: "/x".into(),
                build_id: vec![9; 20],
                base: 1,
                segments: vec![(1, 2)],
            }],
            &mut e,
        ),
        ChunkKind::Samples => encode_samples(
            &[Sample {
                time_ns: 5,
                seq: 3,
                rss: 4,
                heap: 0,
            }],
            &mut e,
        ),
        ChunkKind::Threads => encode_threads(
            &[ThreadRecord {
                index: 3,
                os_tid: 4,
                name: "t".into(),
            }],
            &mut e,
        ),
        ChunkKind::Aggregate => encode_aggregate(
            &AggregateRecord {
                peak_bytes: 5,
                entries: vec![AggregateEntry {
                    stack: 1,
                    peak_bytes: 5,
                    ..Default::default()
                }],
                ..Default::default()
            },
            &mut e,
        ),
        _ => encode_end(
            &EndRecord {
                time_ns: 1,
                events: 2,
                dropped: 0,
            },
            &mut e,
        ),
    }
    let mut p = e.buf;
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !p.is_empty() => {
                let i = rng.below(p.len());
                p[i] = rng.next() as u8;
            }
            1 => p.truncate(rng.below(p.len() + 1)),
            2 => p.push(rng.next() as u8),
            _ => {
                let i = rng.below(p.len() + 1);
                p.splice(i..i, std::iter::repeat_n(0xFFu8, 1 + rng.below(12)));
            }
        }
    }
    let mut out = CaptureBuilder::new(&meta()).bytes().to_vec();
    put_chunk(&mut out, kind, &p, 3);
    out
}

#[test]
fn ten_thousand_random_and_mutated_inputs_never_panic() {
    let valid = valid_capture();
    let mut rng = Rng(0x7ade_0000_0000_0001 ^ 0x5eed);
    let (mut ok, mut errors) = (0, 0);
    for i in 0..12_000 {
        let input: Vec<u8> = match i % 6 {
            0 => (0..rng.below(400)).map(|_| rng.next() as u8).collect(),
            1 => valid[..rng.below(valid.len() + 1)].to_vec(),
            2 => {
                let mut v = valid.clone();
                for _ in 0..1 + rng.below(8) {
                    let j = rng.below(v.len());
                    v[j] ^= 1 << rng.below(8);
                }
                v
            }
            3 => {
                // A valid header, then random chunk frames with arbitrary lengths.
                let mut v = valid[..HEADER_LEN].to_vec();
                for _ in 0..rng.below(4) {
                    v.push(1 + rng.below(9) as u8);
                    v.push(rng.below(3) as u8);
                    v.extend_from_slice(&(rng.next() as u32 >> rng.below(32)).to_le_bytes());
                    v.extend_from_slice(&(rng.next() as u32 >> rng.below(32)).to_le_bytes());
                    v.extend((0..rng.below(64)).map(|_| rng.next() as u8));
                }
                v
            }
            4 => payload_mutant(&mut rng),
            _ => {
                let mut v = valid.clone();
                let at = rng.below(v.len());
                let len = rng.below(32).min(v.len() - at);
                if rng.below(2) == 0 {
                    v.drain(at..at + len);
                } else {
                    v.splice(at..at, (0..len).map(|_| rng.next() as u8));
                }
                v
            }
        };
        match catch_unwind(AssertUnwindSafe(|| read_all(&input))) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(msg)) => {
                assert!(
                    msg.starts_with("fuzz.tdm: "),
                    "error must name the file: {msg}"
                );
                errors += 1;
            }
            Err(_) => panic!("reader panicked on input #{i}: {input:?}"),
        }
    }
    assert_eq!(ok + errors, 12_000);
    assert!(errors > 5000, "most mutants are errors ({errors})");
}
