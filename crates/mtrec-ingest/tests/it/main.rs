//! Integration tests of mtrec-ingest: one binary, a module per area.

mod bad_input;
mod common;
mod outputs;
mod parity;
