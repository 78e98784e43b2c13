//! Reports of a stripped program (`tests/programs/run_stripped.c`): its static functions, which no
//! symbol table holds, read as `run_stripped+0x<offset>`, never as the exported function laid
//! out before them; the C library's entry frames (static in libc, so unnamed too) are still
//! trimmed from the stacks.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use tidemark_tests::{compile_c, scratch_dir, text, tidemark_cli, tidemark_run};

/// Functions in source order, so the static `tm_hidden_alloc` follows `tm_exported_before`;
/// exported (`-rdynamic`) so that `.dynsym` names the others.
const FLAGS: [&str; 4] = [
    "-fno-toplevel-reorder",
    "-fno-optimize-sibling-calls",
    "-rdynamic",
    "-pthread",
];

/// (address, size) of each function of `exe`, from `nm -S` (its `.symtab`).
fn functions(exe: &Path) -> HashMap<String, (u64, u64)> {
    let out = Command::new("nm")
        .arg("-S")
        .arg(exe)
        .output()
        .expect("nm runs (install binutils)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [address, size, kind, name] = f[..] else {
                return None;
            };
            if !kind.eq_ignore_ascii_case("t") {
                return None;
            }
            let hex = |s| u64::from_str_radix(s, 16).ok();
            Some((name.to_string(), (hex(address)?, hex(size)?)))
        })
        .collect()
}

/// The offset of a `run_stripped+0x…` frame.
fn offset(frame: &str) -> u64 {
    let hex = frame
        .strip_prefix("run_stripped+0x")
        .unwrap_or_else(|| panic!("{frame} is not an unnamed frame of run_stripped"));
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn static_functions_of_a_stripped_program_read_as_module_and_offset() {
    let dir = scratch_dir("run-stripped");
    let full_dir = dir.join("full");
    std::fs::create_dir_all(&full_dir).unwrap();
    let full = compile_c("run_stripped.c", &full_dir, &FLAGS);
    let exe = compile_c("run_stripped.c", &dir, &[&FLAGS[..], &["-s"]].concat());
    let functions = functions(&full);
    let range = |name: &str| {
        let (address, size) = functions[name];
        address..address + size
    };
    // The layout the test is about: nothing but the exported function before tm_hidden_alloc.
    assert_eq!(
        range("tm_exported_before").end,
        range("tm_hidden_alloc").start,
        "{functions:?}"
    );

    let out = tidemark_run(&dir, &["-q", "-o", "s.tdm", "--", exe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 4\n");
    let out = Command::new(tidemark_cli())
        .args(["export", "--format", "folded", "--leaks", "s.tdm"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let folded = text(&out.stdout);

    // main's block and the two workers' blocks (one stack, merged), each through
    // tm_entry -> tm_hidden_alloc. The offsets are return addresses: the byte before each is
    // the call instruction, inside the function that no symbol names.
    let main_line = folded
        .lines()
        .find(|l| l.starts_with("tm_entry;"))
        .unwrap_or_else(|| panic!("no stack of main's tm_entry in\n{folded}"));
    let hidden = main_line
        .strip_prefix("tm_entry;")
        .and_then(|l| l.strip_suffix(" 2000"))
        .unwrap_or_else(|| panic!("{main_line}"));
    assert!(
        range("tm_hidden_alloc").contains(&(offset(hidden) - 1)),
        "{hidden} is in tm_hidden_alloc: {functions:?}"
    );
    let worker_line = folded
        .lines()
        .find(|l| l.ends_with(&format!(";tm_entry;{hidden} 2000")) && l != &main_line)
        .unwrap_or_else(|| panic!("no stack of the workers' tm_entry in\n{folded}"));
    let worker = worker_line.split(';').next().unwrap();
    assert_eq!(worker_line, format!("{worker};tm_entry;{hidden} 2000"));
    assert!(
        range("worker").contains(&(offset(worker) - 1)),
        "{worker} is in worker: {functions:?}"
    );

    // No frame is named by a symbol that does not cover it, and the entry frames are trimmed:
    // libc's (unnamed) and the program's exported `_start` and `main`.
    for line in folded.lines() {
        let (stack, _) = line.rsplit_once(' ').unwrap();
        for frame in stack.split(';') {
            assert!(
                !["tm_exported_before", "_start", "main"].contains(&frame)
                    && !frame.starts_with("libc.so")
                    && !frame.starts_with("ld-linux"),
                "{frame} in\n{folded}"
            );
        }
    }

    // The allocation sites of stats are the same frames.
    let out = Command::new(tidemark_cli())
        .args(["stats", "s.tdm"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stats = text(&out.stdout);
    assert!(
        stats.contains(&format!("\t- {hidden} -> 3 allocations (3.9 KiB)\n")),
        "{stats}"
    );
    assert!(!stats.contains("tm_exported_before"), "{stats}");
}
