//! Programs nobody here wrote (and one we did, in C) run on tidemark through the preload
//! library and must behave exactly as on glibc.

use std::process::Command;
use tidemark_tests::{assert_same, compile_c, preload_library, run_both, scratch_dir};

#[global_allocator]
static GLOBAL: tidemark_alloc::Tidemark = tidemark_alloc::Tidemark::new();

#[test]
fn c_malloc_family_threads_and_fork() {
    let dir = scratch_dir("malloc-family");
    let exe = compile_c("malloc_family.c", &dir, &["-pthread"]);
    let (glibc, tidemark) = run_both(|| Command::new(&exe));
    assert_same("malloc_family", &glibc, &tidemark);
    let out = String::from_utf8_lossy(&tidemark.stdout);
    assert!(out.contains("threads corrupt blocks: 0\n"), "{out}");
    assert!(out.contains("handoff corrupt blocks: 0\n"), "{out}");
    assert!(
        out.contains("fork children ok: 1, parent thread corrupt blocks: 0\n"),
        "{out}"
    );
    assert!(
        out.contains("alignments ok: 1, posix_memalign(3) = EINVAL: 1\n"),
        "{out}"
    );
    assert!(
        out.contains("memalign 0: 1, 24 -> 32: 1, 100 -> 128: 1, SIZE_MAX: null 1 einval 1\n"),
        "{out}"
    );
}

#[test]
fn blocks_really_come_from_tidemark() {
    // The allocator's own statistics, printed at exit, show the program's small blocks.
    let out = Command::new("sh")
        .args(["-c", "x=$(seq 1 2000 | sort -r | head -c 100); echo done"])
        .env("LD_PRELOAD", preload_library())
        .env("TIDEMARK_MALLOCSTATS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Small block threshold = 512, in 32 size classes."),
        "{stderr}"
    );
    assert!(stderr.contains("# arenas allocated current"), "{stderr}");
    // Each program of the pipeline that exits (sort may die of SIGPIPE when head has its
    // 100 bytes) prints its own, named.
    for program in ["seq", "head"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("tidemark allocator statistics of pid ")
                    && l.ends_with(&format!(" ({program}):"))),
            "{program}: {stderr}"
        );
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");

    // Through `tidemark run`, the program's statistics only: the command ignores the variable.
    let out = Command::new(tidemark_tests::tidemark_cli())
        .args(["run", "--allocator", "pymalloc", "--", "seq", "3"])
        .env("TIDEMARK_MALLOCSTATS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("tidemark allocator statistics of pid "))
        .collect();
    assert_eq!(named.len(), 1, "{stderr}");
    assert!(named[0].ends_with(" (seq):"), "{stderr}");
}

#[test]
fn sort_of_a_large_file() {
    let dir = scratch_dir("sort");
    let input = dir.join("input.txt");
    let mut text = String::new();
    let mut x: u64 = 12345;
    for i in 0..300_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!(
            "{:x} line {} {}\n",
            x % 1_000_003,
            i,
            "w".repeat((x % 40) as usize)
        ));
    }
    std::fs::write(&input, text).unwrap();
    let (glibc, tidemark) = run_both(|| {
        let mut c = Command::new("sort");
        c.arg("-S").arg("10M").arg(&input).env("LC_ALL", "C");
        c
    });
    assert_same("sort", &glibc, &tidemark);
    assert_eq!(
        tidemark.stdout.iter().filter(|&&b| b == b'\n').count(),
        300_000
    );
}

#[test]
fn python_with_every_object_on_malloc() {
    let script = r#"
import json, collections, re, threading
data = [{"id": i, "name": "item%d" % i, "tags": ["t%d" % (i % 7)] * (i % 5)} for i in range(60000)]
text = json.dumps(data)
back = json.loads(text)
counts = collections.Counter(t for d in back for t in d["tags"])
words = re.findall(r"item(\d+)", text)
out = []
def work(n):
    out.append(sum(len(str(x)) for x in range(n)))
ts = [threading.Thread(target=work, args=(20000 * (k + 1),)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(len(text), sorted(counts.items()), len(words), sorted(out))
"#;
    let (glibc, tidemark) = run_both(|| {
        let mut c = Command::new("python3");
        c.args(["-c", script]).env("PYTHONMALLOC", "malloc");
        c
    });
    assert_same("python3", &glibc, &tidemark);
    assert!(tidemark.status.success());
}

#[test]
fn git_on_a_repository() {
    let dir = scratch_dir("git");
    let script = r#"set -e
git init -q repo && cd repo
git config user.email t@example.com && git config user.name t
for i in $(seq 1 40); do seq 1 $((i * 50)) > file$i.txt; git add file$i.txt; git commit -qm "commit $i"; done
git log --oneline | wc -l
git diff HEAD~10 --stat | tail -1
git gc -q
git fsck --full 2>&1 | wc -l
git rev-list --all | wc -l
"#;
    let (glibc, tidemark) = run_both(|| {
        let mut c = Command::new("sh");
        let sub = dir.join(format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&sub).unwrap();
        c.args(["-c", script])
            .current_dir(sub)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &dir)
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
        c
    });
    assert_same("git", &glibc, &tidemark);
    assert!(String::from_utf8_lossy(&tidemark.stdout).starts_with("40\n"));
}
