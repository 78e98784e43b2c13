//! What unwinding one frame does, per return address, in a form applied in a few
//! instructions: the step of a frame seen before skips framehop's call path (rule-cache
//! lookup, rule dispatch, register file), which cost ~150 instructions a frame.
//!
//! framehop turns every DWARF rule it caches into one of a few x86-64 shapes (its
//! `UnwindRuleX86_64`): the caller's `rsp` is this frame's `rsp` plus a constant, or `rbp + 16`;
//! the caller's `rbp` is unchanged, or read at `rsp` plus a constant, or at `rbp`; the return
//! address is the word under the caller's `rsp`. framehop does not hand its rules out, so
//! the shape of an address is learnt by asking framehop to unwind it twice with made-up
//! registers and a made-up stack whose every word tells its own address (`probe`): the
//! registers it returns and the addresses it read name the shape and its constants, and
//! the second probe, with other registers, must give exactly what the shape predicts. An
//! address whose result does not fit (a DWARF expression framehop evaluates each time, an
//! error) is marked to go through framehop every time. `apply` then repeats framehop's
//! checks in its order (overflow, a frame pointer that does not move outward, a zero return
//! address, no progress), so a step gives the same frame or the same end as framehop's.
//! The check mode (`TIDEMARK_PRELOAD_UNWIND_MEMO=check`) compares every stack with a walk
//! made by framehop alone.

use super::module_set::Modules;
use super::rule_cache::RuleCache;
use crate::dwarf_memo::End;
use framehop::x86_64::UnwindRegsX86_64;
use framehop::{FrameAddress, Unwinder};

/// Return addresses remembered (a power of two; sets of two).
const SLOTS: usize = 4096;

// A step's shape (`Shape::kind`; 0 in an empty entry, whose `ra` 0 no frame has).
/// framehop unwinds this address every time.
const FRAMEHOP: u8 = 1;
/// sp' = sp + cfa, bp' = bp.
const SP_OFFSET: u8 = 2;
/// sp' = sp + cfa, bp' = [sp + bp_at].
const SP_OFFSET_BP_AT: u8 = 3;
/// sp' = bp + 16, bp' = [bp] (bp 0: the outermost frame).
const FRAME_POINTER: u8 = 4;
/// The outermost frame.
const END: u8 = 5;

/// Bounds on the constants a shape may have (larger ones are not trusted as shapes).
const MAX_OFFSET: u64 = 1 << 20;
const MAX_BP_AT: u64 = 1 << 14;

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Shape {
    cfa: u32,
    bp_at: i16,
    kind: u8,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    /// The return address (0: empty).
    ra: u64,
    shape: Shape,
}

/// All-zero bytes are a valid empty table (unwind/dwarf.rs makes it so, in place).
pub struct Steps {
    /// The module set the shapes were learnt under (its address).
    generation: usize,
    entries: [Entry; SLOTS],
}

/// A made-up stack word: the mark and the word's own address.
const FAKE: u64 = 0x8000_0000_0000_0000;

/// Registers of the two probes: far apart, with different distances between `rsp` and
/// `rbp`, so that no shape fits both by chance.
const PROBES: [(u64, u64); 2] = [(0x1000_0000, 0x4000_0000), (0x2000_0008, 0x2800_0010)];

/// What framehop did with one probe.
#[derive(PartialEq, Eq, Debug)]
struct Seen {
    /// The return address it gave, or how the walk ends (None: framehop failed).
    result: Option<Result<u64, End>>,
    sp: u64,
    bp: u64,
    reads: [u64; 3],
    nreads: usize,
}

impl Steps {
    /// The shape of the frame with return address `ra` (learnt now if unknown), under
    /// module set `modules`.
    #[inline]
    pub fn shape(&mut self, ra: u64, modules: &Modules, cache: &mut RuleCache) -> Shape {
        let generation = modules as *const Modules as usize;
        if self.generation != generation {
            self.forget(generation);
        }
        let i = set(ra);
        for e in &self.entries[i..i + 2] {
            if e.ra == ra {
                return e.shape;
            }
        }
        self.learn_into(i, ra, modules, cache)
    }

    /// Learns the shape of `ra` into set `i`: the newest in the first way, the one it
    /// replaces in the second. (Two ways: two hot return addresses of one set would
    /// otherwise take turns evicting each other, and learning costs two framehop calls.)
    #[cold]
    #[inline(never)]
    fn learn_into(&mut self, i: usize, ra: u64, modules: &Modules, cache: &mut RuleCache) -> Shape {
        let shape = learn(ra, modules, cache);
        self.entries[i + 1] = self.entries[i];
        self.entries[i] = Entry { ra, shape };
        shape
    }

    #[cold]
    fn forget(&mut self, generation: usize) {
        self.generation = generation;
        self.entries.fill(Entry::default());
    }
}

/// The first slot of `ra`'s set of two.
#[inline]
fn set(ra: u64) -> usize {
    (ra.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize & (SLOTS - 2)
}

impl Shape {
    /// framehop unwinds this frame.
    #[inline]
    pub fn is_framehop(self) -> bool {
        self.kind == FRAMEHOP
    }
}

/// Unwinds the frame with return address `ra` and registers `sp`, `bp` by `shape`, reading
/// the stack through `read`: the caller's (return address, sp, bp), or how the walk ends.
/// framehop's `UnwindRuleX86_64::exec` step by step, for a return address (not the first
/// frame of a sample). (Its `JustReturnIfFirstFrameOtherwiseFp`, which it makes from
/// instruction analysis of first frames, not from DWARF, fails where `rbp` is 0 and fits the
/// frame-pointer shape, which ends there: the same frames, another end.)
#[inline(always)]
pub fn apply(
    shape: Shape,
    ra: u64,
    sp: u64,
    bp: u64,
    read: &mut impl FnMut(u64) -> Result<u64, ()>,
) -> Result<(u64, u64, u64), End> {
    let (new_sp, new_bp) = match shape.kind {
        SP_OFFSET => (sp.checked_add(shape.cfa as u64).ok_or(End::Failed)?, bp),
        SP_OFFSET_BP_AT => {
            let new_sp = sp.checked_add(shape.cfa as u64).ok_or(End::Failed)?;
            let at = sp
                .checked_add_signed(shape.bp_at as i64)
                .ok_or(End::Failed)?;
            (new_sp, read(at).map_err(|_| End::Failed)?)
        }
        FRAME_POINTER => {
            if bp == 0 {
                return Err(End::Complete);
            }
            let new_sp = bp.checked_add(16).ok_or(End::Failed)?;
            if new_sp <= sp {
                return Err(End::Failed);
            }
            (new_sp, read(bp).map_err(|_| End::Failed)?)
        }
        END => return Err(End::Complete),
        _ => return Err(End::Failed), // not a shape (never applied)
    };
    let caller = read(new_sp.wrapping_sub(8)).map_err(|_| End::Failed)?;
    if caller == 0 {
        return Err(End::Complete);
    }
    if new_sp == sp && caller == ra {
        return Err(End::Failed);
    }
    Ok((caller, new_sp, new_bp))
}

/// The shape of return address `ra`, from two probes through framehop; `FRAMEHOP` when
/// none fits.
fn learn(ra: u64, modules: &Modules, cache: &mut RuleCache) -> Shape {
    let framehop = Shape {
        kind: FRAMEHOP,
        ..Shape::default()
    };
    let first = probe(ra, PROBES[0], modules, cache);
    let Some(shape) = fit(&first, PROBES[0]) else {
        return framehop;
    };
    for &(sp, bp) in &PROBES {
        if probe(ra, (sp, bp), modules, cache) != predict(shape, ra, sp, bp) {
            return framehop;
        }
    }
    shape
}

/// framehop's step of return address `ra` from registers `(sp, bp)` on the made-up stack.
fn probe(ra: u64, (sp, bp): (u64, u64), modules: &Modules, cache: &mut RuleCache) -> Seen {
    let mut seen = Seen {
        result: None,
        sp: 0,
        bp: 0,
        reads: [0; 3],
        nreads: 0,
    };
    let Some(address) = FrameAddress::from_return_address(ra) else {
        return seen;
    };
    let mut regs = UnwindRegsX86_64::new(ra, sp, bp);
    let mut read = |addr: u64| {
        if seen.nreads < seen.reads.len() {
            seen.reads[seen.nreads] = addr;
        }
        seen.nreads += 1;
        Ok(FAKE | addr)
    };
    let r = modules
        .unwinder
        .unwind_frame(address, &mut regs, cache.get(), &mut read);
    seen.result = match r {
        Ok(Some(caller)) => Some(Ok(caller)),
        Ok(None) => Some(Err(End::Complete)),
        Err(_) => None,
    };
    seen.sp = regs.sp();
    seen.bp = regs.bp();
    seen
}

/// What `apply` gives for `shape` on the made-up stack, as a `Seen`.
fn predict(shape: Shape, ra: u64, sp: u64, bp: u64) -> Seen {
    let mut seen = Seen {
        result: None,
        sp,
        bp,
        reads: [0; 3],
        nreads: 0,
    };
    let mut read = |addr: u64| {
        if seen.nreads < seen.reads.len() {
            seen.reads[seen.nreads] = addr;
        }
        seen.nreads += 1;
        Ok(FAKE | addr)
    };
    let r = apply(shape, ra, sp, bp, &mut read);
    match r {
        Ok((caller, new_sp, new_bp)) => {
            seen.result = Some(Ok(caller));
            seen.sp = new_sp;
            seen.bp = new_bp;
        }
        Err(End::Complete) => seen.result = Some(Err(End::Complete)),
        Err(_) => seen.result = None,
    }
    seen
}

/// The shape the first probe's result names, if any (the second probe checks it).
fn fit(seen: &Seen, (sp, bp): (u64, u64)) -> Option<Shape> {
    let reads = &seen.reads[..seen.nreads.min(3)];
    match seen.result? {
        Err(End::Complete) if seen.nreads == 0 => Some(Shape {
            kind: END,
            ..Shape::default()
        }),
        Ok(caller) => {
            let new_sp = seen.sp;
            if caller != FAKE | new_sp.wrapping_sub(8) {
                return None;
            }
            let cfa = new_sp.wrapping_sub(sp);
            let sp_relative = cfa > 0 && cfa < MAX_OFFSET && cfa.is_multiple_of(8);
            if seen.bp == bp && reads == [new_sp - 8] && sp_relative {
                return Some(Shape {
                    kind: SP_OFFSET,
                    cfa: cfa as u32,
                    bp_at: 0,
                });
            }
            if seen.bp == FAKE | bp && new_sp == bp + 16 && reads == [bp, new_sp - 8] {
                return Some(Shape {
                    kind: FRAME_POINTER,
                    ..Shape::default()
                });
            }
            let at = seen.bp & !FAKE;
            let bp_at = at.wrapping_sub(sp) as i64;
            let near = bp_at.unsigned_abs() < MAX_BP_AT && bp_at % 8 == 0;
            if seen.bp & FAKE != 0 && reads == [at, new_sp - 8] && sp_relative && near {
                return Some(Shape {
                    kind: SP_OFFSET_BP_AT,
                    cfa: cfa as u32,
                    bp_at: bp_at as i16,
                });
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_read(log: &mut Vec<u64>) -> impl FnMut(u64) -> Result<u64, ()> + '_ {
        |addr| {
            log.push(addr);
            Ok(FAKE | addr)
        }
    }

    #[test]
    fn shapes_fit_what_they_predict() {
        let shapes = [
            Shape {
                kind: SP_OFFSET,
                cfa: 24,
                bp_at: 0,
            },
            Shape {
                kind: SP_OFFSET_BP_AT,
                cfa: 48,
                bp_at: 16,
            },
            Shape {
                kind: FRAME_POINTER,
                ..Shape::default()
            },
            Shape {
                kind: END,
                ..Shape::default()
            },
        ];
        for shape in shapes {
            let (sp, bp) = PROBES[0];
            let seen = predict(shape, 0x1234, sp, bp);
            assert_eq!(fit(&seen, PROBES[0]), Some(shape), "{shape:?}");
        }
    }

    #[test]
    fn apply_repeats_framehops_checks() {
        let fp = Shape {
            kind: FRAME_POINTER,
            ..Shape::default()
        };
        let mut log = Vec::new();
        // A frame pointer of 0 ends the walk; one that does not move outward fails.
        assert_eq!(
            apply(fp, 1, 0x100, 0, &mut fake_read(&mut log)),
            Err(End::Complete)
        );
        assert_eq!(
            apply(fp, 1, 0x100, 0x20, &mut fake_read(&mut log)),
            Err(End::Failed)
        );
        // A zero return address ends it.
        let zero = |_addr: u64| Ok(0);
        let off = Shape {
            kind: SP_OFFSET,
            cfa: 8,
            bp_at: 0,
        };
        assert_eq!(apply(off, 1, 0x100, 5, &mut { zero }), Err(End::Complete));
        let mut log = Vec::new();
        assert_eq!(
            apply(off, 1, 0x100, 5, &mut fake_read(&mut log)),
            Ok((FAKE | 0x100, 0x108, 5))
        );
        assert_eq!(log, [0x100]);
    }
}
