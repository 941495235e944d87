//! Integration tests of mtrec-serve: one binary, a module per area. The router is exercised in
//! process (`tower::ServiceExt::oneshot`), without a socket.

mod common;
mod errors;
mod exposure;
mod fuzz;
mod parity;
mod reload;
mod repository;
mod tables;
