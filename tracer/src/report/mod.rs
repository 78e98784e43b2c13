//! Reports rendered from captures: each one a module with its own `Options`, all reading the
//! same [`Analysis`] (one streaming pass over a capture, see [`analysis`]).
//!
//! ```no_run
//! use tidemark_tracer::report::{self, analysis::AnalyzeOptions, symbols::Symbols};
//! let a = report::analysis::analyze("run.tdm", &AnalyzeOptions::default()).unwrap();
//! let mut syms = Symbols::new(&a);
//! let mut html = Vec::new();
//! report::flamegraph::write_html(&a, &mut syms, &Default::default(), &mut html).unwrap();
//! print!("{}", report::stats::render_text(&a, &mut syms, &Default::default()));
//! ```

pub mod analysis;
pub mod diff;
pub mod export;
pub mod flamegraph;
mod folded;
mod live;
mod prune;
mod read_ahead;
pub mod replay;
pub mod stats;
pub mod summary;
pub mod symbols;
pub mod text;
pub mod tree;

pub use analysis::{analyze, Analysis, AnalyzeOptions};
pub use symbols::Symbols;

use replay::Site;

/// Which moment of the run a report shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Moment {
    /// The high-water mark (of the analysis window, when one was given).
    #[default]
    Peak,
    /// The end of the run: what was never freed.
    End,
}

impl Moment {
    /// Bytes and blocks of `site` at this moment.
    pub fn value(self, site: &Site) -> (u64, u64) {
        match self {
            Moment::Peak => (site.peak_bytes, site.peak_count),
            Moment::End => (site.cur_bytes, site.cur_count),
        }
    }
}
