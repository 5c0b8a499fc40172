//! Decode progress on stderr: a bar (stage, call, rate, ETA) when stderr is a terminal, plain
//! lines otherwise (logs, pipes), nothing with --quiet. Work is measured in FLOPs, so the ETA
//! holds although the last level costs far more than the first.

use indicatif::{ProgressBar, ProgressStyle};
use movq::model::{Progress, Stage};
use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct DecodeProgress {
    bar: Option<ProgressBar>,
    lines: bool,
    start: Instant,
    last_line: Cell<Instant>,
}

/// Plain-mode lines come at the end of each decoder call, or after a stage when this much time
/// passed since the last line.
const LINE_EVERY: Duration = Duration::from_secs(10);

fn stage_name(s: Stage) -> String {
    match s {
        Stage::Mid => "mid".into(),
        Stage::Level(i) => format!("level {i}"),
        Stage::Out => "out".into(),
    }
}

impl DecodeProgress {
    pub fn new(quiet: bool) -> Self {
        let now = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let bar = ProgressBar::new(1);
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {percent:>3}% {msg}, ETA {eta}",
            )
            .expect("static template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        DecodeProgress { bar, lines: !quiet && !tty, start: now, last_line: Cell::new(now) }
    }

    pub fn update(&self, p: &Progress) {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = p.flop_done as f64 / secs.max(1e-9) / 1e9;
        if let Some(bar) = &self.bar {
            // MFLOP units keep the bar's u64 position far from overflow.
            bar.set_length((p.flop_total / 1_000_000).max(1) as u64);
            bar.set_position((p.flop_done / 1_000_000) as u64);
            bar.set_message(format!(
                "call {}/{} {} ({rate:.0} GFLOP/s)",
                p.call,
                p.calls,
                stage_name(p.stage)
            ));
        } else if self.lines && (p.stage == Stage::Out || self.last_line.get().elapsed() >= LINE_EVERY) {
            self.last_line.set(Instant::now());
            let frac = p.flop_done as f64 / (p.flop_total as f64).max(1.0);
            let eta = if frac > 0.0 { secs / frac * (1.0 - frac) } else { f64::NAN };
            eprintln!(
                "  [{:5.1}%] call {}/{} {} done; {secs:.1} s elapsed, about {eta:.0} s left ({rate:.0} GFLOP/s)",
                100.0 * frac,
                p.call,
                p.calls,
                stage_name(p.stage)
            );
        }
    }

    /// A line that does not break the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.lines => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
