//! `tidemark`: profile programs (`run`), render reports from capture files, and run the bundled
//! demo.
//!
//! ```text
//! tidemark demo                          record a sample workload, write its flamegraph
//! tidemark flamegraph CAPTURE [-o HTML]  memory at the high-water mark (--leaks, --temporal)
//! tidemark stats CAPTURE [--json]        totals, peak, leaks, histogram, top sites
//! tidemark summary CAPTURE               per function own/total at the peak
//! tidemark tree CAPTURE                  biggest allocation paths at the peak
//! tidemark diff OLD NEW [-o HTML]        what grew and shrank (captures or snapshot JSON)
//! tidemark export CAPTURE --format folded|dhat [-o FILE]
//! tidemark run [-o FILE] [--allocator pymalloc] [--debug] -- PROG ARGS...
//! ```
//!
//! Every failure prints one line (`tidemark: error: ...`) and exits with status 2.

/// `eprintln!` that ignores a failed write: stderr may be a pipe whose reader has gone
/// (`2>&1 | head`), and `eprintln!` panics then, inside the panic hook too, which aborts.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod demo;
mod run;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use tidemark_tracer::capture::CaptureReader;
use tidemark_tracer::report::{self, Analysis, AnalyzeOptions, Moment, Symbols};

#[global_allocator]
static GLOBAL: tidemark_tracer::Traced<tidemark_alloc::Pymalloc> =
    tidemark_tracer::Traced::new(tidemark_alloc::Pymalloc::new());

/// The user's `TIDEMARK_RECORD`, `TIDEMARK_TRACE` or `TIDEMARK_MALLOCSTATS` is meant for their
/// program, not for this command (`TIDEMARK_RECORD=x.tdm tidemark stats x.tdm` recorded the
/// command over the very capture it read; `TIDEMARK_MALLOCSTATS=1 tidemark run ...` printed
/// the command's statistics after the program's): opted out in a constructor, before the
/// first allocation.
#[used]
#[link_section = ".init_array"]
static IGNORE_TRACER_ENVIRONMENT: extern "C" fn() = {
    extern "C" fn ignore() {
        tidemark_tracer::ignore_environment();
        tidemark_alloc::ignore_stats_environment();
    }
    ignore
};

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Memory profiler reports for tidemark captures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTML flamegraph of the memory live at the high-water mark (or at exit, or in a window).
    Flamegraph(FlamegraphArgs),
    /// Totals, peak, leaks, size histogram, API mix, temporary allocations, top sites.
    Stats(StatsArgs),
    /// Per function: own and total bytes and blocks at the peak.
    Summary(SummaryArgs),
    /// The biggest allocation paths at the peak, as a tree.
    Tree(TreeArgs),
    /// What grew and shrank between two captures or two snapshot JSON files.
    Diff(DiffArgs),
    /// Folded stacks or DHAT JSON (for dh_view.html).
    Export(ExportArgs),
    /// Record a bundled sample workload and render its flamegraph and stats.
    Demo(DemoArgs),
    /// Run a program with the preload library: record its allocations, or serve them with
    /// tidemark's allocator (--allocator pymalloc, --debug).
    Run(run::RunArgs),
}

#[derive(Args)]
struct Common {
    /// The capture file.
    capture: PathBuf,
    /// Memory live at exit (the leaks) instead of at the high-water mark.
    #[arg(long)]
    leaks: bool,
    /// The high-water mark inside a time window, e.g. `1.5s..3s`, `200ms..`, `..2s`.
    #[arg(
        long,
        value_name = "FROM..TO",
        conflicts_with = "leaks",
        allow_hyphen_values = true
    )]
    temporal: Option<String>,
    /// Keep Rust runtime and tidemark frames at the top of stacks.
    #[arg(long)]
    keep_runtime_frames: bool,
}

#[derive(Args)]
struct FlamegraphArgs {
    #[command(flatten)]
    common: Common,
    /// Output HTML file (default: next to the capture).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Allocation sites at the root.
    #[arg(long)]
    inverted: bool,
    /// One flamegraph per thread.
    #[arg(long)]
    threads: bool,
}

#[derive(Args)]
struct StatsArgs {
    #[command(flatten)]
    common: Common,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Rows in the top-N lists.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = parse_rows)]
    top: usize,
}

#[derive(Args)]
struct SummaryArgs {
    #[command(flatten)]
    common: Common,
    /// Functions shown.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true, value_parser = parse_rows)]
    rows: usize,
}

#[derive(Args)]
struct TreeArgs {
    #[command(flatten)]
    common: Common,
    /// Children shown per node.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    max_children: usize,
    /// Hide branches smaller than this percentage of the total (0 to 100).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true, value_parser = parse_percent)]
    min_percent: f64,
}

#[derive(Args)]
struct DiffArgs {
    /// The old capture (or snapshot JSON).
    old: PathBuf,
    /// The new capture (or snapshot JSON).
    new: PathBuf,
    /// Also write the HTML report (differential flamegraph + table) here.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Compare memory live at exit instead of at the high-water marks.
    #[arg(long)]
    leaks: bool,
    /// Rows of the table.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = parse_rows)]
    rows: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// `frame;frame;frame bytes` lines, for any flamegraph tool.
    Folded,
    /// DHAT's JSON, for Valgrind's dh_view.html (a capture with events, not --aggregate;
    /// lifetimes are dated by the 10 ms memory samples).
    Dhat,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Output file (default, or `-`: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Folded: allocation sites first.
    #[arg(long)]
    inverted: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Directory for the capture and the report.
    #[arg(short, long, default_value = ".")]
    output_dir: PathBuf,
}

type Result<T> = std::result::Result<T, String>;

fn main() {
    // One line, exit status 2, never a backtrace: even for a bug of ours.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        say!("tidemark: internal error: {msg}{at}");
        std::process::exit(2);
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                std::process::exit(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            say!("tidemark: error: {}", usage_error(&e.to_string()));
            std::process::exit(2);
        }
    };
    let command = match cli.command {
        Command::Run(a) => std::process::exit(run::main(a)),
        other => other,
    };
    if let Err(e) = run(command) {
        say!("tidemark: error: {e}");
        std::process::exit(2);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Flamegraph(a) => flamegraph(a),
        Command::Stats(a) => {
            let (analysis, mut syms) = load(&a.common)?;
            let opts = report::stats::Options {
                top: a.top,
                leaks: a.common.leaks,
            };
            if a.json {
                let v = report::stats::render_json(&analysis, &mut syms, &opts);
                print_out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
                ))
            } else {
                print_out(&report::stats::render_text(&analysis, &mut syms, &opts))
            }
        }
        Command::Summary(a) => {
            let (analysis, mut syms) = load(&a.common)?;
            let opts = report::summary::Options {
                moment: moment(&a.common),
                max_rows: a.rows,
            };
            print_out(&report::summary::render_text(&analysis, &mut syms, &opts))
        }
        Command::Tree(a) => {
            let (analysis, mut syms) = load(&a.common)?;
            let opts = report::tree::Options {
                moment: moment(&a.common),
                max_children: a.max_children,
                min_fraction: a.min_percent / 100.0,
                ..Default::default()
            };
            print_out(&report::tree::render_text(&analysis, &mut syms, &opts))
        }
        Command::Diff(a) => diff(a),
        Command::Export(a) => {
            if let Some(out) = &a.output {
                refuse_overwriting(out, &[&a.common.capture])?;
            }
            // DHAT reads the capture twice (see `report::export::dhat`): a pipe, which can be
            // read once, is read into memory first.
            let dhat = matches!(a.format, ExportFormat::Dhat);
            let bytes = if dhat && !std::fs::metadata(&a.common.capture).is_ok_and(|m| m.is_file())
            {
                let path = &a.common.capture;
                Some(
                    std::fs::read(path)
                        .map_err(|e| format!("{}: {}", path.display(), io_reason(&e)))?,
                )
            } else {
                None
            };
            let (analysis, mut syms) = load_from(&a.common, bytes.as_deref())?;
            let text = match a.format {
                ExportFormat::Folded => report::export::folded(
                    &analysis,
                    &mut syms,
                    &report::export::Options {
                        moment: moment(&a.common),
                        inverted: a.inverted,
                    },
                ),
                ExportFormat::Dhat => {
                    if analysis.meta.aggregate {
                        return Err(format!(
                            "export --format dhat: {} is an aggregate capture (run \
                             --aggregate): it keeps peak, end and total bytes per site, not \
                             the maxima and lifetimes DHAT shows; record without --aggregate",
                            analysis.path
                        ));
                    }
                    let path = &a.common.capture;
                    let src: Box<dyn std::io::Read> = match &bytes {
                        Some(b) => Box::new(b.as_slice()),
                        None => Box::new(open_input(path)?),
                    };
                    let capture = CaptureReader::new(src, path.display().to_string())
                        .map_err(|e| e.to_string())?;
                    let v = report::export::dhat(&analysis, &mut syms, capture)
                        .map_err(|e| e.to_string())?;
                    serde_json::to_string(&v).map_err(|e| e.to_string())? + "\n"
                }
            };
            match a.output {
                // `-o -` is standard output, as for most tools that take a file name.
                Some(p) if p.as_os_str() != "-" => write_file(&p, text.as_bytes()),
                _ => print_out(&text),
            }
        }
        Command::Demo(a) => demo::run(&a.output_dir),
        Command::Run(_) => unreachable!("`run` is handled in main"),
    }
}

/// clap's error as one line: its message and the lines that detail it (the missing
/// arguments, the possible values, a tip), without the usage block that follows; then where
/// to read more.
fn usage_error(text: &str) -> String {
    let mut parts = Vec::new();
    for line in text.lines() {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        let line = line.trim();
        if !line.is_empty() {
            parts.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let mut out = String::new();
    for part in parts {
        if !out.is_empty() {
            out.push_str(if part.starts_with("tip:") { "; " } else { " " });
        }
        out.push_str(part);
    }
    if out.is_empty() {
        out = "invalid arguments".into();
    }
    out + " (see tidemark --help)"
}

fn moment(c: &Common) -> Moment {
    if c.leaks {
        Moment::End
    } else {
        Moment::Peak
    }
}

/// A number of rows, at least 1: 0 printed a headed, empty section. (clap's own range check
/// says "0 is not in 1..18446744073709551615".)
fn parse_rows(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("the value must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A percentage, 0 to 100.
fn parse_percent(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err("a percentage from 0 to 100 is expected".into()),
    }
}

/// `1.5s`, `200ms`, `3` (seconds), `500us`, `10ns` → nanoseconds.
fn parse_time(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e9)
    } else {
        (t, 1e9)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * scale) as u64),
        _ => Err(format!(
            "--temporal: cannot read the time {text:?} (examples: 1.5s, 200ms)"
        )),
    }
}

fn parse_window(text: &str) -> Result<(u64, u64)> {
    let (from, to) = text
        .split_once("..")
        .ok_or_else(|| format!("--temporal: expected FROM..TO (like 1s..2.5s), got {text:?}"))?;
    let from = if from.trim().is_empty() {
        0
    } else {
        parse_time(from)?
    };
    let to = if to.trim().is_empty() {
        u64::MAX
    } else {
        parse_time(to)?
    };
    if to <= from {
        return Err(format!("--temporal: the window {text:?} is empty"));
    }
    Ok((from, to))
}

fn analyze(path: &Path, window_ns: Option<(u64, u64)>) -> Result<Analysis> {
    let src = open_input(path)?;
    let len = src.get_ref().metadata().map_or(0, |m| m.len());
    analyze_from(src, len, path, window_ns)
}

/// `path` opened for reading, with room to look at its start without consuming it.
fn open_input(path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{}: {}", path.display(), io_reason(&e)))?;
    if meta.is_dir() {
        return Err(format!(
            "{}: is a directory, not a capture file",
            path.display()
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("{}: {}", path.display(), io_reason(&e)))?;
    Ok(std::io::BufReader::with_capacity(1 << 16, file))
}

/// Analyzes the capture `src` (`len` bytes, 0 if unknown), opened from `path`.
fn analyze_from(
    src: impl std::io::Read + Send,
    len: u64,
    path: &Path,
    window_ns: Option<(u64, u64)>,
) -> Result<Analysis> {
    // A progress bar only when someone watches and the file is big enough to take a while.
    let bar = (std::io::stderr().is_terminal() && len > 32 << 20).then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("reading {}", path.display()));
        bar
    });
    let progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let options = AnalyzeOptions {
        window_ns,
        progress: bar.as_ref().map(|_| &progress as &dyn Fn(u64)),
    };
    let result = CaptureReader::new(src, path.display().to_string())
        .and_then(|r| report::analysis::analyze_reader(r, &options))
        .map_err(|e| e.to_string());
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let a = result?;
    if let Some(why) = &a.truncated {
        // With its end marker read, the capture is whole and only what follows is amiss.
        let state = if a.end.is_some() {
            "damaged"
        } else {
            "incomplete"
        };
        say!(
            "tidemark: warning: {}: capture {state} ({why}); reporting what was recorded",
            path.display()
        );
    } else if a.end.is_none() && a.exec.is_none() {
        say!(
            "tidemark: warning: {}: the capture has no end marker (the run was killed, or is \
             still recording); reporting what was recorded",
            path.display()
        );
    }
    Ok(a)
}

fn load(c: &Common) -> Result<(Analysis, Symbols)> {
    load_from(c, None)
}

/// [`load`], from the capture's bytes when they were read already.
fn load_from(c: &Common, bytes: Option<&[u8]>) -> Result<(Analysis, Symbols)> {
    let window = c.temporal.as_deref().map(parse_window).transpose()?;
    let a = match bytes {
        Some(b) => analyze_from(b, b.len() as u64, &c.capture, window)?,
        None => analyze(&c.capture, window)?,
    };
    if let (Some(w), Some(text)) = (window, &c.temporal) {
        check_window(&a, w, text)?;
    }
    let syms = Symbols::new(&a).keep_runtime_frames(c.keep_runtime_frames);
    for w in syms.warnings() {
        say!("tidemark: warning: {w}");
    }
    Ok((a, syms))
}

/// A `--temporal` window must hold one of the capture's memory samples (every 10 ms): events
/// are dated by the samples around them, so a window between two samples holds no peak of its
/// own, and an aggregate capture has no events to date.
fn check_window(a: &Analysis, (from, to): (u64, u64), text: &str) -> Result<()> {
    if a.meta.aggregate {
        return Err(format!(
            "--temporal: {} is an aggregate capture (run --aggregate): it keeps totals per \
             site, not when they happened; record without --aggregate for time windows",
            a.path
        ));
    }
    if a.timeline.iter().any(|p| (from..to).contains(&p.time_ns)) {
        return Ok(());
    }
    let length = report::text::duration(a.duration_ns);
    Err(if from >= a.duration_ns {
        format!("--temporal {text}: the window starts after the capture ends (at {length})")
    } else {
        format!(
            "--temporal {text}: no memory sample falls in the window (one is taken every \
             10 ms; the capture lasts {length}): widen it"
        )
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory, not a capture file".into(),
        _ => e.to_string(),
    }
}

fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("writing to stdout: {e}")),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| {
        use std::io::ErrorKind;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let reason = match e.kind() {
            ErrorKind::NotFound if parent.is_some_and(|p| !p.is_dir()) => format!(
                "the directory {} does not exist",
                parent.unwrap_or(Path::new(".")).display()
            ),
            ErrorKind::IsADirectory => "it is a directory (-o names the output file)".into(),
            ErrorKind::PermissionDenied => "permission denied (-o FILE writes elsewhere)".into(),
            _ => io_reason(&e),
        };
        format!("{}: cannot write: {reason}", path.display())
    })
}

/// An output that is one of the inputs would replace it (`flamegraph run.tdm -o run.tdm`):
/// refused before anything is read.
fn refuse_overwriting(out: &Path, inputs: &[&Path]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(o) = std::fs::metadata(out) else {
        return Ok(());
    };
    for input in inputs {
        if std::fs::metadata(input).is_ok_and(|i| (i.dev(), i.ino()) == (o.dev(), o.ino())) {
            return Err(format!(
                "{}: that is the input ({}): the output would replace it; name another file \
                 with -o",
                out.display(),
                input.display()
            ));
        }
    }
    Ok(())
}

/// `CAPTURE.SUFFIX.html` beside the capture, or in the current directory when the capture is
/// read through `/dev` or `/proc` (`/dev/stdin`, `/proc/self/fd/3`) or is not a regular file
/// (a pipe): such a directory is no place for reports.
fn default_output(capture: &Path, suffix: &str) -> PathBuf {
    let stem = capture
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capture".into());
    let name = format!("{stem}.{suffix}.html");
    let special = capture.starts_with("/dev") || capture.starts_with("/proc");
    if !special && std::fs::metadata(capture).is_ok_and(|m| m.is_file()) {
        capture.with_file_name(name)
    } else {
        PathBuf::from(name)
    }
}

fn flamegraph(a: FlamegraphArgs) -> Result<()> {
    if let Some(out) = &a.output {
        refuse_overwriting(out, &[&a.common.capture])?;
    }
    let (analysis, mut syms) = load(&a.common)?;
    let opts = report::flamegraph::Options {
        moment: moment(&a.common),
        inverted: a.inverted,
        per_thread: a.threads,
        ..Default::default()
    };
    let suffix = match (a.common.leaks, a.common.temporal.is_some()) {
        (true, _) => "leaks",
        (false, true) => "temporal",
        _ => "flamegraph",
    };
    let out = a
        .output
        .unwrap_or_else(|| default_output(&a.common.capture, suffix));
    let mut html = Vec::new();
    report::flamegraph::write_html(&analysis, &mut syms, &opts, &mut html)
        .map_err(|e| e.to_string())?;
    write_file(&out, &html)?;
    print_out(&format!("Wrote {}\n", out.display()))
}

fn load_profile(path: &Path, moment: Moment) -> Result<report::diff::Profile> {
    // The start is looked at in the buffer, not read off: a pipe (`/dev/stdin`, `<(...)`)
    // cannot be opened again to be read from its start.
    let mut src = open_input(path)?;
    let head = std::io::BufRead::fill_buf(&mut src)
        .map_err(|e| format!("{}: {}", path.display(), io_reason(&e)))?;
    if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let snap = tidemark_tracer::Snapshot::load_from(src, path).map_err(|e| e.to_string())?;
        return Ok(report::diff::Profile::from_snapshot(
            &path.display().to_string(),
            &snap,
        ));
    }
    let len = src.get_ref().metadata().map_or(0, |m| m.len());
    let a = analyze_from(src, len, path, None)?;
    let mut syms = Symbols::new(&a);
    Ok(report::diff::Profile::from_analysis(&a, &mut syms, moment))
}

fn diff(a: DiffArgs) -> Result<()> {
    let moment = if a.leaks { Moment::End } else { Moment::Peak };
    if let Some(out) = &a.output {
        refuse_overwriting(out, &[&a.old, &a.new])?;
    }
    let old = load_profile(&a.old, moment)?;
    let new = load_profile(&a.new, moment)?;
    let changes = report::diff::compare(&old, &new);
    let mut text = format!("{} → {}\n", old.name, new.name);
    text.push_str(&report::diff::render_table(&changes, a.rows));
    print_out(&text)?;
    if let Some(out) = a.output {
        let mut html = Vec::new();
        report::diff::write_html(
            &old,
            &new,
            &report::diff::Options { rows: a.rows },
            &mut html,
        )
        .map_err(|e| e.to_string())?;
        write_file(&out, &html)?;
        print_out(&format!("Wrote {}\n", out.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("1s..2.5s"), Ok((1_000_000_000, 2_500_000_000)));
        assert_eq!(parse_window("200ms.."), Ok((200_000_000, u64::MAX)));
        assert_eq!(parse_window("..3"), Ok((0, 3_000_000_000)));
        assert!(parse_window("3s..1s").is_err());
        assert!(parse_window("abc").is_err());
        assert!(parse_window("xs..1s").is_err());
    }
}
