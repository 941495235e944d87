//! Integration tests of mtrec-model: one binary, a module per area.

mod common;
mod gradients;
mod init;
mod packed;
mod product;
mod scopes;
mod sharing;
mod weights;
