//! Keeping the children fresh. `cargo run` builds only the driver, so when the driver runs
//! under cargo (it sets `CARGO` and `CARGO_MANIFEST_DIR`), it first builds all the bench
//! binaries with the same profile, features and target directory as itself. Otherwise a
//! stale `bench-tidemark` would be measured after an allocator change.

use std::path::Path;
use std::process::Command;

/// Cargo features this driver was built with (the children are built with the same).
pub fn enabled_features() -> Vec<&'static str> {
    let mut features = Vec::new();
    if cfg!(feature = "peers") {
        features.push("peers");
    }
    if cfg!(feature = "dhat") {
        features.push("dhat");
    }
    features
}

/// The `cargo build` command that builds every child binary next to the driver in `bin_dir`.
pub fn build_command(cargo: &str, manifest_dir: &Path, bin_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .args(["-p", "tidemark-bench", "--bins"]);
    match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => cmd.args(["--profile", "dev"]),
        Some("release") | None => cmd.arg("--release"),
        Some(profile) => cmd.args(["--profile", profile]),
    };
    let features = enabled_features();
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    // target/<profile>/ → target/ (only when that is plainly a cargo target dir).
    if let Some(target_dir) = bin_dir.parent() {
        if target_dir.join("CACHEDIR.TAG").exists() {
            cmd.arg("--target-dir").arg(target_dir);
        }
    }
    cmd
}

/// Builds the children if running under cargo. Returns an error message if the build failed.
pub fn build_children_if_under_cargo(bin_dir: &Path) -> Result<(), String> {
    let (Ok(cargo), Ok(manifest_dir)) =
        (std::env::var("CARGO"), std::env::var("CARGO_MANIFEST_DIR"))
    else {
        return Ok(());
    };
    let mut cmd = build_command(&cargo, Path::new(&manifest_dir), bin_dir);
    let shown: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    eprintln!(
        "tidemark-bench: building the allocator binaries: {}",
        shown.join(" ")
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the allocator binaries failed ({status})"))
    }
}
