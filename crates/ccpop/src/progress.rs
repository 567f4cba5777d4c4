//! A progress bar on stderr, drawn with `\r` while the driver populates.

use std::io::{IsTerminal, Write};

use cc_populate::Observer;

const WIDTH: u64 = 30;

/// Draws `populating [#####.....]  45%  28.8/64.1 MiB` on stderr, redrawing only when the
/// percentage changes. Draws nothing when stderr is not a terminal (logs stay clean).
pub struct ProgressBar {
    enabled: bool,
    last: Option<u64>,
}

impl ProgressBar {
    /// A bar that draws when stderr is a terminal.
    pub fn new() -> ProgressBar {
        ProgressBar {
            enabled: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Ends the bar's line (if anything was drawn).
    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            eprintln!();
        }
        self.last = None;
    }
}

/// The bar's text for `done` of `total` bytes.
pub fn render(done: u64, total: u64) -> String {
    let pct = percent(done, total);
    let filled = (pct * WIDTH / 100) as usize;
    format!(
        "populating [{}{}] {:>3}% {:>8.1}/{:.1} MiB",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        pct,
        done as f64 / (1u64 << 20) as f64,
        total as f64 / (1u64 << 20) as f64
    )
}

fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
    }
}

impl Observer for ProgressBar {
    fn on_progress(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let pct = percent(done, total);
        if self.last == Some(pct) {
            return;
        }
        self.last = Some(pct);
        let mut err = std::io::stderr().lock();
        // A progress bar that cannot be drawn is not worth failing for.
        let _ = write!(err, "\r{}", render(done, total));
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(
            render(0, 4 << 20),
            format!("populating [{}]   0%      0.0/4.0 MiB", ".".repeat(30))
        );
        assert_eq!(
            render(2 << 20, 4 << 20),
            format!(
                "populating [{}{}]  50%      2.0/4.0 MiB",
                "#".repeat(15),
                ".".repeat(15)
            )
        );
        assert!(render(5, 4).contains("[##############################] 100%"));
        assert!(render(0, 0).contains("100%"));
    }
}
