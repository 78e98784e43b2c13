//! The function symbols of one ELF file, with their sizes: what names code that has no DWARF.
//!
//! addr2line's `find_symbol` answers with the nearest symbol *before* an address, whatever
//! that symbol's size. In a stripped binary, whose only symbol table is `.dynsym` (the exported
//! functions), every static function then takes the name of some exported function laid out
//! before it: Debian's `/usr/bin/git`, which exports the one function `error`, showed much of
//! its code as `error`; libc's `start_thread` showed as `pthread_condattr_setpshared`. Nothing
//! in such a name says it is a guess. Here a symbol names only the bytes it covers,
//! `[address, address + size)`, and an address outside every function gets no name at all (the
//! symbolizer then says `module+0x…`, which is honest and what perf and heaptrack users read).
//!
//! The rules, each for a reason:
//!
//! - Both `.symtab` and `.dynsym` are read: a stripped file has only the latter, and an
//!   unstripped one keeps its static functions only in the former.
//! - Function symbols only (`STT_FUNC`). Data objects are not code. `STT_GNU_IFUNC` symbols
//!   are left out too (object does not count them as definitions): their address is the
//!   resolver's, which picks an implementation at load time, so `memcpy` would name the
//!   resolver and none of the code a stack passes through.
//! - A symbol of size 0 (hand-written assembly without `.size`) names its own address only: how
//!   far it reaches is unknown, and guessing "up to the next symbol" is the defect above again.
//!   Stacks hold return addresses, which lie after a call and never at a function's first byte,
//!   so in practice such a symbol names no frame.
//! - Aliases (several names at one address, `malloc` and `__libc_malloc`) keep one name, by the
//!   rule of object's `symbol_map`, which addr2line uses: global before local, then the later
//!   entry of its table, `.symtab` before `.dynsym`. So functions that do have DWARF keep the
//!   names they had. The alias reaches as far as the largest size among them: they name the same
//!   code.
//! - Nested symbols (a local label-like function inside a bigger one, as some assembly has):
//!   the one that starts last, the innermost, names the address.
//!
//! Names are kept raw (mangled) in one string, so a binary with a hundred thousand symbols costs
//! a few allocations; the caller demangles the one it asks for.

use object::{Object, ObjectSymbol, ObjectSymbolTable, SymbolKind, SymbolScope};
use std::path::Path;

/// How far `_start` reaches when no symbol says so: glibc's x86-64 `_start` is 38 bytes, its
/// call of `__libc_start_main` ends 37 bytes in, and the next function is 16-aligned.
const START_SIZE: u64 = 48;

/// One function: `[address, address + size)` in the file's own addresses (ELF virtual
/// addresses, what the symbolizer's probes are), and its name in [`ElfSymbols::names`].
#[derive(Clone, Copy, Debug)]
struct Function {
    address: u64,
    size: u64,
    name_start: u32,
    name_len: u32,
}

/// The size-checked function symbols of one file, sorted by address.
#[derive(Debug, Default)]
pub struct ElfSymbols {
    functions: Vec<Function>,
    names: String,
    /// The largest size of any function: no function that starts further than this before a
    /// probe can contain it, which bounds the backward scan of [`ElfSymbols::find`].
    max_size: u64,
}

/// A symbol before aliases are merged: `rank` orders the names at one address, best first.
struct Candidate<'a> {
    address: u64,
    size: u64,
    rank: (u8, u8, std::cmp::Reverse<usize>),
    name: &'a str,
}

impl ElfSymbols {
    /// The function symbols of the file at `path`; none when it cannot be read or parsed (its
    /// frames are then named by module and offset, which is all that is known).
    pub fn load(path: &Path) -> ElfSymbols {
        let Ok(file) = std::fs::File::open(path) else {
            return ElfSymbols::default();
        };
        // SAFETY: the mapping is read-only and private to this function; it is parsed and the
        // names copied out before it is dropped. A file truncated under us meanwhile could
        // fault (as it would for addr2line, which maps the same files), which a report accepts.
        let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
            return ElfSymbols::default();
        };
        match object::File::parse(&*map) {
            Ok(object) => ElfSymbols::of(&object),
            Err(_) => ElfSymbols::default(),
        }
    }

    /// No function symbol at all (a file without symbol tables, or none that could be read).
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// The function symbols of a parsed object file.
    pub fn of<'data>(object: &impl Object<'data>) -> ElfSymbols {
        let mut candidates = Vec::new();
        let tables = [object.symbol_table(), object.dynamic_symbol_table()];
        for (table_rank, table) in tables.iter().enumerate() {
            let Some(table) = table else { continue };
            for symbol in table.symbols() {
                if symbol.kind() != SymbolKind::Text || !symbol.is_definition() {
                    continue;
                }
                let Ok(name) = symbol.name() else { continue };
                if name.is_empty() {
                    continue;
                }
                let scope_rank = match symbol.scope() {
                    SymbolScope::Dynamic => 0,
                    SymbolScope::Linkage => 1,
                    SymbolScope::Compilation => 2,
                    SymbolScope::Unknown => 3,
                };
                candidates.push(Candidate {
                    address: symbol.address(),
                    size: symbol.size(),
                    rank: (
                        scope_rank,
                        table_rank as u8,
                        std::cmp::Reverse(symbol.index().0),
                    ),
                    name,
                });
            }
        }
        // A stripped executable has no symbol for its entry point, the root of every
        // main-thread stack: it is `_start` (the C runtime's, the same few dozen bytes in every
        // program), named so that reports trim it. Only where no symbol covers the entry.
        let entry = object.entry();
        let covered = candidates
            .iter()
            .any(|c| (c.address..c.address + c.size.max(1)).contains(&entry));
        if entry != 0 && !covered {
            candidates.push(Candidate {
                address: entry,
                size: START_SIZE,
                rank: (u8::MAX, u8::MAX, std::cmp::Reverse(0)),
                name: "_start",
            });
        }
        ElfSymbols::from_candidates(candidates)
    }

    /// Merges aliases and sorts: see the module's rules.
    fn from_candidates(mut candidates: Vec<Candidate<'_>>) -> ElfSymbols {
        candidates.sort_unstable_by_key(|c| (c.address, c.rank));
        let mut table = ElfSymbols::default();
        for c in candidates {
            if let Some(last) = table.functions.last_mut() {
                if last.address == c.address {
                    // An alias of a better name already kept: only its size can add.
                    last.size = last.size.max(c.size);
                    table.max_size = table.max_size.max(last.size);
                    continue;
                }
            }
            let (Ok(name_start), Ok(name_len)) = (
                u32::try_from(table.names.len()),
                u32::try_from(c.name.len()),
            ) else {
                break; // 4 GiB of names: not a real binary; what is kept so far still holds
            };
            table.names.push_str(c.name);
            table.functions.push(Function {
                address: c.address,
                size: c.size,
                name_start,
                name_len,
            });
            table.max_size = table.max_size.max(c.size);
        }
        table
    }

    /// The raw (mangled) name of the function whose bytes hold `address`, if one does.
    pub fn find(&self, address: u64) -> Option<&str> {
        let after = self.functions.partition_point(|f| f.address <= address);
        // A size-0 symbol covers its own address: one byte, for the comparisons below.
        let reach = self.max_size.max(1);
        for f in self.functions[..after].iter().rev() {
            let into = address - f.address;
            if into >= reach {
                break; // every function before this one starts too far back to reach
            }
            if into < f.size.max(1) {
                let start = f.name_start as usize;
                return self.names.get(start..start + f.name_len as usize);
            }
        }
        None
    }

    /// How many functions the table holds (aliases counted once).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.functions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    /// A table from `(address, size, name)` triples, all global symbols of one table, in
    /// table order.
    fn table(symbols: &[(u64, u64, &'static str)]) -> ElfSymbols {
        let candidates = symbols
            .iter()
            .enumerate()
            .map(|(i, &(address, size, name))| Candidate {
                address,
                size,
                rank: (0, 0, Reverse(i)),
                name,
            })
            .collect();
        ElfSymbols::from_candidates(candidates)
    }

    #[test]
    fn a_symbol_names_only_the_bytes_its_size_covers() {
        let t = table(&[(0x1000, 0x20, "first"), (0x1100, 0x10, "second")]);
        assert_eq!(t.find(0xfff), None);
        assert_eq!(t.find(0x1000), Some("first"));
        assert_eq!(t.find(0x101f), Some("first"));
        // Past the end of `first` and before `second`: the gap has no name.
        assert_eq!(t.find(0x1020), None);
        assert_eq!(t.find(0x10ff), None);
        assert_eq!(t.find(0x1100), Some("second"));
        assert_eq!(t.find(0x110f), Some("second"));
        assert_eq!(t.find(0x1110), None);
        assert_eq!(t.find(u64::MAX), None);
    }

    #[test]
    fn a_size_zero_symbol_names_its_own_address_only() {
        let t = table(&[(0x1000, 0x100, "big"), (0x2000, 0, "label")]);
        assert_eq!(t.find(0x2000), Some("label"));
        assert_eq!(t.find(0x2001), None);
        assert_eq!(t.find(0x1fff), None);
    }

    #[test]
    fn the_innermost_of_nested_symbols_names_an_address() {
        let t = table(&[(0x1000, 0x100, "outer"), (0x1040, 0x10, "inner")]);
        assert_eq!(t.find(0x103f), Some("outer"));
        assert_eq!(t.find(0x1040), Some("inner"));
        assert_eq!(t.find(0x104f), Some("inner"));
        // After the inner one ends, the outer one still holds the address.
        assert_eq!(t.find(0x1050), Some("outer"));
        assert_eq!(t.find(0x10ff), Some("outer"));
        assert_eq!(t.find(0x1100), None);
    }

    #[test]
    fn aliases_keep_the_best_name_and_the_largest_size() {
        let candidates = vec![
            Candidate {
                address: 0x1000,
                size: 0,
                rank: (2, 0, Reverse(5)),
                name: "local_alias",
            },
            Candidate {
                address: 0x1000,
                size: 0x30,
                rank: (0, 1, Reverse(1)),
                name: "global_in_dynsym",
            },
            Candidate {
                address: 0x1000,
                size: 0x30,
                rank: (0, 0, Reverse(7)),
                name: "global_in_symtab",
            },
        ];
        let t = ElfSymbols::from_candidates(candidates);
        assert_eq!(t.len(), 1);
        assert_eq!(t.find(0x1000), Some("global_in_symtab"));
        assert_eq!(t.find(0x102f), Some("global_in_symtab"));
        assert_eq!(t.find(0x1030), None);
    }

    #[test]
    fn an_unreadable_file_has_no_symbols() {
        assert!(ElfSymbols::load(Path::new("/no/such/file")).is_empty());
        assert!(ElfSymbols::load(Path::new("/proc/self/status")).is_empty());
    }
}
