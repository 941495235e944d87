//! Integration tests of mtrec-train: one binary, a module per area.

mod bundle;
mod common;
mod degenerate;
mod experiments;
mod quality;
mod strategies;
mod training;
mod windows;
