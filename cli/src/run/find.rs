//! Finding the program (like `execvp`) and the preload library (without the user setting
//! paths).

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The library's file name.
pub const PRELOAD_NAME: &str = "libtidemark_preload.so";

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `prog` as `execvp` would find it: a path when it has a `/`, else the first executable of
/// that name in `path` (the `PATH` value).
pub fn in_path(prog: &OsStr, path: Option<OsString>) -> Option<PathBuf> {
    let p = Path::new(prog);
    if prog.as_encoded_bytes().contains(&b'/') {
        return is_executable_file(p).then(|| p.to_path_buf());
    }
    let path = path.unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(p)
            } else {
                dir.join(p)
            }
        })
        .find(|c| is_executable_file(c))
}

/// Where the preload library is looked for, in order: `TIDEMARK_PRELOAD_LIB` when set, then
/// beside the `tidemark` executable (`target/<profile>/` after `cargo build`), then
/// `../lib/` from it (an install prefix: `bin/tidemark`, `lib/libtidemark_preload.so`).
pub fn preload_candidates(exe: Option<&Path>, overridden: Option<OsString>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(o) = overridden.filter(|o| !o.is_empty()) {
        out.push(PathBuf::from(o));
    }
    if let Some(dir) = exe.and_then(Path::parent) {
        out.push(dir.join(PRELOAD_NAME));
        if let Some(prefix) = dir.parent() {
            out.push(prefix.join("lib").join(PRELOAD_NAME));
        }
    }
    out
}

/// The preload library, or the one-line error saying where it was looked for and how to
/// build it.
pub fn preload_library() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().ok();
    let exe = exe.map(|e| e.canonicalize().unwrap_or(e));
    let overridden = std::env::var_os("TIDEMARK_PRELOAD_LIB");
    if let Some(o) = overridden.as_ref().filter(|o| !o.is_empty()) {
        let p = PathBuf::from(o);
        return if p.is_file() {
            Ok(p.canonicalize().unwrap_or(p))
        } else {
            Err(format!(
                "TIDEMARK_PRELOAD_LIB={}: no such file",
                p.display()
            ))
        };
    }
    let candidates = preload_candidates(exe.as_deref(), None);
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let looked = candidates
        .iter()
        .map(|c| c.display().to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    Err(format!(
        "the preload library was not found at {looked}: build it with `cargo build --release -p tidemark-preload` (or set TIDEMARK_PRELOAD_LIB)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_like_execvp() {
        let sh = in_path(OsStr::new("sh"), std::env::var_os("PATH")).unwrap();
        assert!(sh.is_absolute() || sh.starts_with("."));
        assert!(in_path(
            OsStr::new("no-such-program-tidemark"),
            std::env::var_os("PATH")
        )
        .is_none());
        assert!(in_path(OsStr::new("/no/such/file"), None).is_none());
        assert_eq!(
            in_path(OsStr::new("/bin/sh"), None),
            Some(PathBuf::from("/bin/sh"))
        );
    }

    #[test]
    fn library_candidates() {
        let c = preload_candidates(Some(Path::new("/opt/tm/bin/tidemark")), None);
        assert_eq!(
            c,
            vec![
                PathBuf::from("/opt/tm/bin/libtidemark_preload.so"),
                PathBuf::from("/opt/tm/lib/libtidemark_preload.so"),
            ]
        );
        let c = preload_candidates(
            Some(Path::new("/x/target/release/tidemark")),
            Some("/y/lib.so".into()),
        );
        assert_eq!(c[0], PathBuf::from("/y/lib.so"));
        assert_eq!(
            c[1],
            PathBuf::from("/x/target/release/libtidemark_preload.so")
        );
    }
}
