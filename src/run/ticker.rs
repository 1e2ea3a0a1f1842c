//! The once-a-second sample of a run's progress (`throughput.series`), and the progress line on
//! stderr.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::faults::Faults;
use crate::results::SeriesPoint;

/// What the once-a-second ticker reads and where it writes the series.
pub(super) struct Ticker {
    pub quiet: bool,
    pub progress: Arc<crate::processor::Progress>,
    pub acked: Arc<std::sync::atomic::AtomicU64>,
    pub series: Arc<std::sync::Mutex<Vec<SeriesPoint>>>,
    pub faults: Arc<Faults>,
    /// End-to-end p99 so far (µs), kept current by the supervision loop; 0 = not known.
    pub p99_us: Arc<std::sync::atomic::AtomicU64>,
    /// The p99 of the last second's messages (µs), taken by each sample; 0 = none.
    pub second_p99_us: Arc<std::sync::atomic::AtomicU64>,
    pub planned: u64,
    pub rate: f64,
}

/// Messages the open-loop schedule has due `t_s` seconds in (all of them when unthrottled).
pub(super) fn offered(rate: f64, t_s: f64, planned: u64) -> u64 {
    if rate > 0.0 {
        ((rate * t_s) as u64).min(planned)
    } else {
        planned
    }
}

impl Ticker {
    /// Samples the run once a second into the series, and shows progress on stderr unless
    /// quiet: one line redrawn in place on a terminal, a plain line every 5 s otherwise.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        use std::io::IsTerminal;
        use std::sync::atomic::Ordering::Relaxed;
        let terminal = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            let mut previous: Option<SeriesPoint> = None;
            loop {
                interval.tick().await;
                let t_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                let point = SeriesPoint {
                    t_s,
                    offered: offered(self.rate, t_s, self.planned),
                    processed: self.progress.completed(),
                    produced: self.acked.load(Relaxed),
                    committed: self.progress.committed_total().max(0) as u64,
                    p99_us: Some(self.second_p99_us.swap(0, Relaxed)).filter(|us| *us > 0),
                };
                self.series.lock().expect("series lock").push(point);
                let rate = previous.map_or(0.0, |p| {
                    point.committed.saturating_sub(p.committed) as f64
                        / (point.t_s - p.t_s).max(1e-3)
                });
                previous = Some(point);
                let whole_seconds = point.t_s.round() as u64;
                if self.quiet || point.t_s < 0.5 || (!terminal && !whole_seconds.is_multiple_of(5))
                {
                    continue;
                }
                let p99 = match self.p99_us.load(Relaxed) {
                    0 => "-".to_string(),
                    us => crate::results::ms(us),
                };
                let line = format!(
                    "[idembench] {:>6.1}s  {:>7.0} msg/s  produced {:>8}  committed {:>8}/{}  lag {:>6}  p99 {:>9}  faults {}",
                    point.t_s,
                    rate,
                    point.produced,
                    point.committed,
                    self.planned,
                    point.produced.saturating_sub(point.committed),
                    p99,
                    self.faults.log().len(),
                );
                if terminal {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
            }
        })
    }
}
