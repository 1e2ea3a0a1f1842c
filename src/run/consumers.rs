//! The processors of a run: one inside this process, or a fleet of processor processes. The
//! supervision loop drives either through this one enum.

use crate::processor::fleet::Fleet;
use crate::processor::{Processor, ProcessorReport};

use super::RunError;

pub(super) enum Consumers {
    InProcess(Processor),
    Processes(Box<Fleet>),
}

pub(super) struct Stopped {
    pub report: ProcessorReport,
    /// Why the processor failed, if it did (its report keeps what it measured).
    pub error: Option<RunError>,
    /// Processor processes that ran (0 in-process).
    pub processes: u64,
    /// Killed processes whose last second of measurements died with them.
    pub killed_measurement_windows: u64,
}

impl Consumers {
    pub async fn stop(self) -> Stopped {
        match self {
            Consumers::InProcess(processor) => {
                let (report, error) = processor.stop_keeping_report().await;
                Stopped {
                    report,
                    error: error.map(RunError::from),
                    processes: 0,
                    killed_measurement_windows: 0,
                }
            }
            Consumers::Processes(fleet) => {
                let fleet = fleet.stop().await;
                Stopped {
                    report: fleet.report,
                    error: None,
                    processes: fleet.processes,
                    killed_measurement_windows: fleet.killed_measurement_windows,
                }
            }
        }
    }
}
