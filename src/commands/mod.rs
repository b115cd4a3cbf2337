//! Commands: argv has been parsed; each `run` gathers, judges and prints, and returns the exit
//! code. `anyhow` lives here and in `main`, typed errors below.

pub mod facts;
