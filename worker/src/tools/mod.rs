//! Tools around the worker: `replay` (CSV → topics), `tail` (topic → JSON
//! lines) and `demo` (everything in one command).

pub mod demo;
pub mod passthrough;
pub mod replay;
pub mod tail;
