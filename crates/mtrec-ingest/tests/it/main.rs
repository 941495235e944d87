//! Integration tests of mtrec-ingest: one binary, a module per area.

mod bad_input;
mod common;
mod degenerate;
mod outputs;
mod parity;
mod shards;
mod side_tables;
mod twins;
