//! Benchmark programs for mtrec; see `benches/README.md` for how to run them and the figures.
