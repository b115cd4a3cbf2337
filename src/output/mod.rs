//! Outputs: the block message, the JSON report, the log line, the metrics file. Outputs never decide anything.

pub mod log;
pub mod message;
pub mod metrics;
pub mod report;
