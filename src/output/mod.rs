//! Outputs: the block message, the JSON report, the log line. Outputs never decide anything.

pub mod log;
pub mod message;
pub mod report;
