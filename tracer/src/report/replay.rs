//! Replaying a capture's events: live allocations, the high-water mark, leaks, totals.
//!
//! One pass, O(1) per event. Memory is the live allocation table (like the program's own
//! heap, one 16-byte entry per live block: [`super::live::LiveTable`]) plus one [`Site`]
//! per (stack, thread) pair.
//!
//! The memory live at the peak, per site, without snapshots: every site remembers the
//! sequence number of its last change (`mod_seq`). When the heap reaches a new peak we only
//! note `peak_mark` (events before it are "at or before the peak"). Before a site changes,
//! if its last change was before `peak_mark`, its current value is exactly what it held at
//! the peak, so we copy it to `peak_*` first. At the end the same rule settles every site
//! that did not change after the peak. (memray's high-water-mark aggregator uses the same
//! lazy idea.)

use super::super::capture::format::{Event, EventKind, Sample};
use super::live::LiveTable;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiplicative hasher for integer keys (pointers, ids): much faster than SipHash and
/// good enough for keys no attacker chooses.
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        // The product's low bits are weak (aligned pointers make them zero); hashbrown indexes
        // buckets with the low bits, so fold the well-mixed high half in.
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
}

pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Allocation totals of one (stack, thread) pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Site {
    pub stack: u32,
    pub thread: u32,
    /// Live now (after the last event: the leaks, once the replay is finished).
    pub cur_bytes: u64,
    pub cur_count: u64,
    /// Live at the high-water mark (valid after [`Replay::finish`]).
    pub peak_bytes: u64,
    pub peak_count: u64,
    /// Every allocation ever made here.
    pub total_bytes: u64,
    pub total_count: u64,
    /// Allocations freed by the very next event of the allocating thread (heaptrack's
    /// "temporary allocations", per thread).
    pub temporary_count: u64,
    /// The most this site ever had live at once.
    pub max_bytes: u64,
    pub max_count: u64,
    /// The frees' times minus the allocations' times, in ns (wrapping; see
    /// [`Site::total_lifetime_ns`]).
    pub(crate) lifetime_acc: u64,
    pub(crate) mod_seq: u64,
}

impl Site {
    /// How long the blocks allocated here lived, summed, in ns; blocks still live count up to
    /// `end_ns`. Each event is dated by the memory sample before it (one every 10 ms), so a
    /// lifetime counts the sample boundaries it crosses: exact on average over many blocks
    /// (a block that lives 1 ms crosses one boundary in ten), not for one block. Zero for an
    /// aggregate capture, which keeps no times.
    pub fn total_lifetime_ns(&self, end_ns: u64) -> u64 {
        // Σ(free - alloc) over the freed blocks + Σ(end - alloc) over the live ones
        //   = Σ frees' times - Σ allocations' times + live count × end.
        self.lifetime_acc
            .wrapping_add(self.cur_count.wrapping_mul(end_ns))
    }
}

/// A point of the memory-over-time chart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimelinePoint {
    pub time_ns: u64,
    pub rss: u64,
    pub heap: u64,
}

/// Which moment "the peak" means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Only consider the heap's maximum inside `[from, to)` nanoseconds since start.
    pub window_ns: Option<(u64, u64)>,
}

/// The replay state; feed events and samples in stream order, then [`Replay::finish`].
pub struct Replay {
    live: LiveTable,
    site_index: IntMap<u64, u32>,
    /// The last `(thread << 32 | stack, site)` looked up: runs of allocations from one call
    /// site skip the map.
    last_site: (u64, u32),
    pub sites: Vec<Site>,
    pub heap: u64,
    pub peak_bytes: u64,
    pub peak_time_ns: u64,
    /// A new peak was reached since the last sample: its time is the next sample's.
    peak_unsettled: bool,
    peak_mark: u64,
    window: Option<(u64, u64)>,
    /// The window as the samples bound it, `(opened, closed)` ns, `closed` u64::MAX while
    /// open: it opens at the first sample at or after `from` and takes in the events up to
    /// the first sample at or after `to` (events are dated by the sample after them).
    pub window_sampled: Option<(u64, u64)>,
    eligible: bool,
    now_ns: u64,
    /// Per thread: the pointer of its last event if that was an allocation (u64::MAX if not).
    last_alloc: Vec<u64>,
    pub totals: Totals,
    pub timeline: Vec<TimelinePoint>,
}

/// Whole-run counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
    pub reallocs: u64,
    /// Frees of pointers allocated before recording started (or whose record was lost).
    pub unmatched_frees: u64,
    pub temporary: u64,
    /// Allocation counts by `log2(size)` bucket: bucket `b` holds sizes in `[2^(b-1), 2^b)`.
    pub size_histogram: Vec<(u64, u64)>,
    /// Allocation counts by API (0 Rust, 1 C malloc family, 2 realloc).
    pub api_counts: [u64; 4],
    pub last_seq: u64,
    pub threads_seen: u32,
}

impl Replay {
    pub fn new(options: ReplayOptions) -> Replay {
        Replay {
            live: LiveTable::new(),
            site_index: IntMap::default(),
            last_site: (u64::MAX, 0),
            sites: Vec::new(),
            heap: 0,
            peak_bytes: 0,
            peak_time_ns: 0,
            peak_unsettled: false,
            peak_mark: 0,
            window: options.window_ns,
            window_sampled: options
                .window_ns
                .filter(|&(from, _)| from == 0)
                .map(|_| (0, u64::MAX)),
            eligible: options.window_ns.is_none_or(|(from, _)| from == 0),
            now_ns: 0,
            last_alloc: Vec::new(),
            totals: Totals {
                size_histogram: vec![(0, 0); 65],
                ..Totals::default()
            },
            timeline: Vec::new(),
        }
    }

    #[inline]
    fn site(&mut self, stack: u32, thread: u32, seq: u64) -> u32 {
        let key = ((thread as u64) << 32) | stack as u64;
        if self.last_site.0 != key {
            self.last_site = (key, self.site_slow(key, seq));
        }
        self.last_site.1
    }

    fn site_slow(&mut self, key: u64, seq: u64) -> u32 {
        let (thread, stack) = ((key >> 32) as u32, key as u32);
        let sites = &mut self.sites;
        *self.site_index.entry(key).or_insert_with(|| {
            sites.push(Site {
                stack,
                thread,
                mod_seq: seq,
                ..Site::default()
            });
            (sites.len() - 1) as u32
        })
    }

    #[inline]
    fn touch(&mut self, site: u32, seq: u64) -> &mut Site {
        let peak_mark = self.peak_mark;
        let s = &mut self.sites[site as usize];
        settle(s, peak_mark);
        s.mod_seq = seq;
        s
    }

    fn add(&mut self, ptr: u64, size: u64, stack: u32, thread: u32, seq: u64) {
        let site = self.site(stack, thread, seq);
        if let Some((old_size, old_site)) = self.live.insert(ptr, size, site) {
            // A free we never saw (lost record): the block cannot be live twice.
            self.release(old_size, old_site, seq);
        }
        let now = self.now_ns;
        let s = self.touch(site, seq);
        s.lifetime_acc = s.lifetime_acc.wrapping_sub(now);
        s.cur_bytes += size;
        s.cur_count += 1;
        s.total_bytes += size;
        s.total_count += 1;
        if s.cur_bytes > s.max_bytes {
            s.max_bytes = s.cur_bytes;
            s.max_count = s.cur_count;
        }
        self.heap += size;
        self.totals.allocs += 1;
        self.totals.alloc_bytes += size;
        let bucket = (64 - size.leading_zeros()) as usize;
        self.totals.size_histogram[bucket].0 += 1;
        self.totals.size_histogram[bucket].1 += size;
        if self.eligible && self.heap > self.peak_bytes {
            self.peak_bytes = self.heap;
            self.peak_mark = seq + 1;
            self.peak_time_ns = self.now_ns;
            self.peak_unsettled = true;
        }
    }

    fn release(&mut self, size: u64, site: u32, seq: u64) {
        let now = self.now_ns;
        let s = self.touch(site, seq);
        s.lifetime_acc = s.lifetime_acc.wrapping_add(now);
        s.cur_bytes -= size;
        s.cur_count -= 1;
        self.heap -= size;
    }

    fn remove(&mut self, ptr: u64, thread: u32, seq: u64) -> bool {
        match self.live.remove(ptr) {
            Some((size, site)) => {
                if self.last_alloc.get(thread as usize) == Some(&ptr) {
                    self.totals.temporary += 1;
                    self.sites[site as usize].temporary_count += 1;
                }
                self.release(size, site, seq);
                true
            }
            None => {
                self.totals.unmatched_frees += 1;
                false
            }
        }
    }

    fn note_alloc(&mut self, thread: u32, ptr: u64) {
        // Thread indexes are small and dense (one per thread of the run); a corrupt huge one
        // only loses the temporary-allocation count.
        let t = thread as usize;
        if t >= self.last_alloc.len() {
            if t >= 1 << 20 {
                return;
            }
            self.last_alloc.resize(t + 1, u64::MAX - 1);
        }
        if self.last_alloc[t] == u64::MAX - 1 {
            self.totals.threads_seen += 1;
        }
        self.last_alloc[t] = ptr;
    }

    /// Applies a run of events (in sequence order).
    ///
    /// Each event's block is looked up in the live table while the table's slot for the
    /// event [`LOOKAHEAD`] places later is being fetched: the lookups' cache misses overlap
    /// instead of following one another.
    pub fn events(&mut self, events: &[Event]) {
        for e in events.iter().take(LOOKAHEAD) {
            self.live.prefetch(block_of(e));
        }
        for (i, e) in events.iter().enumerate() {
            if let Some(ahead) = events.get(i + LOOKAHEAD) {
                self.live.prefetch(block_of(ahead));
            }
            self.event(e);
        }
    }

    /// Applies one event (events must arrive in sequence order).
    pub fn event(&mut self, e: &Event) {
        self.totals.last_seq = e.seq;
        match e.kind {
            EventKind::Alloc {
                ptr,
                size,
                api,
                stack,
            } => {
                self.add(ptr, size, stack, e.thread, e.seq);
                self.totals.api_counts[(api & 3) as usize] += 1;
                self.note_alloc(e.thread, ptr);
            }
            EventKind::Free { ptr, .. } => {
                self.totals.frees += 1;
                self.remove(ptr, e.thread, e.seq);
                // heaptrack's rule: temporary = freed by the very next event of its thread.
                if let Some(last) = self.last_alloc.get_mut(e.thread as usize) {
                    if *last != u64::MAX - 1 {
                        *last = u64::MAX;
                    }
                }
            }
            EventKind::Realloc {
                old,
                new,
                size,
                stack,
            } => {
                self.totals.reallocs += 1;
                self.totals.api_counts[2] += 1;
                if old != 0 {
                    if let Some((old_size, old_site)) = self.live.remove(old) {
                        self.release(old_size, old_site, e.seq);
                    }
                }
                self.add(new, size, stack, e.thread, e.seq);
                self.note_alloc(e.thread, u64::MAX);
            }
        }
    }

    /// Moves the clock to `time_ns` (a sample's time): a peak reached since the previous
    /// sample is dated here. [`Replay::sample`] does this and keeps a timeline point; the
    /// capture writer's aggregate mode calls it alone (its timeline is in the file).
    pub fn clock(&mut self, time_ns: u64) {
        self.now_ns = time_ns;
        if self.peak_unsettled {
            // The peak happened after the previous sample and no later than this one.
            self.peak_time_ns = time_ns;
            self.peak_unsettled = false;
        }
    }

    /// Applies a memory sample: moves the clock and records a timeline point.
    pub fn sample(&mut self, s: &Sample) {
        self.clock(s.time_ns);
        if let Some((from, to)) = self.window {
            if !self.eligible && s.time_ns >= from && s.time_ns < to && self.peak_mark == 0 {
                // The window opens: the state right now is its first candidate peak.
                self.eligible = true;
                self.peak_bytes = self.heap;
                self.peak_mark = s.seq;
                self.peak_time_ns = s.time_ns;
                self.window_sampled = Some((s.time_ns, u64::MAX));
            } else if self.eligible && s.time_ns >= to {
                self.eligible = false;
                if let Some(w) = &mut self.window_sampled {
                    w.1 = s.time_ns;
                }
            }
        }
        self.timeline.push(TimelinePoint {
            time_ns: s.time_ns,
            rss: s.rss,
            heap: self.heap,
        });
    }

    /// Settles every site's value at the peak. Call once, after the last event.
    pub fn finish(&mut self) {
        let mark = self.peak_mark;
        for s in &mut self.sites {
            settle(s, mark);
        }
        // Sites that never changed after... are settled; further events must not re-sync.
        self.peak_mark = 0;
    }

    /// The sites as [`Replay::finish`] would leave them, without finishing: the replay can
    /// go on (the capture writer's snapshot for an aggregate capture at `exec`).
    pub fn settled_sites(&self) -> impl Iterator<Item = Site> + '_ {
        self.sites.iter().map(|s| {
            let mut s = *s;
            settle(&mut s, self.peak_mark);
            s
        })
    }

    /// Bytes and blocks live now.
    pub fn live(&self) -> (u64, usize) {
        (self.heap, self.live.len())
    }
}

/// A site whose last change came before the peak (`mark`) held at the peak what it holds now.
#[inline]
fn settle(s: &mut Site, mark: u64) {
    if s.mod_seq < mark {
        s.peak_bytes = s.cur_bytes;
        s.peak_count = s.cur_count;
    }
}

/// How many events ahead [`Replay::events`] prefetches: enough to cover a memory access
/// (~100 ns) at a few nanoseconds per event, few enough that the lines are still cached.
const LOOKAHEAD: usize = 24;

/// The block an event looks up in the live table.
#[inline]
fn block_of(e: &Event) -> u64 {
    match e.kind {
        EventKind::Alloc { ptr, .. } | EventKind::Free { ptr, .. } => ptr,
        EventKind::Realloc { old, .. } => old,
    }
}
