//! # mtrec-eval
//!
//! `mtrec eval` and `mtrec ab`: score one split of an ingest directory with one or two bundles
//! (and optionally a single-task baseline) with the model packed for inference
//! ([`mtrec_model::predict_all`]), hand the scores, labels, masks and ids to
//! [`mtrec_report`], and write `report.html`, `report.md` and `report.json` into a directory,
//! atomically (a temporary sibling renamed into place). [`predict`] is `mtrec predict`: the
//! same scores written per row as Parquet or Arrow.
//!
//! Every bundle must have been trained on the ingest's feature pipeline, so all models score
//! the very same encoded rows. This crate reads bundles; it does not depend on the trainer.
//!
//! - [`reports`]: [`eval`] and [`ab`], and the report files;
//! - [`scores`]: the split a bundle reads and its outputs for the reports;
//! - [`online`]: `mtrec ab --exposures --outcomes`, the report of an online experiment from the
//!   server's exposure log and the outcomes recorded later;
//! - [`predict`]: the scores per row as a table;
//! - [`error`]: what can go wrong ([`EvalError`]).

pub mod error;
pub mod online;
pub mod predict;
pub mod reports;
pub mod scores;

pub use error::EvalError;
pub use online::{ab_online, OnlineOptions};
pub use reports::{ab, eval, files, EvalOptions};
pub use scores::{load_bundle_split, open_bundle_split};
