//! Prometheus metrics (`GET /metrics`): requests and latency by route and status; scoring
//! requests, pairs and latency by model, version and arm; the versions served and those that
//! failed (with the reason); reloads by outcome; and the exposure log's records.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::exposure::ExposureCounters;
use crate::repository::{Catalog, VersionState};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModelLabels {
    pub name: String,
    pub version: String,
}

/// A version that is not served, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailedLabels {
    pub name: String,
    pub version: String,
    pub reason: String,
}

/// Who scored a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ScoreLabels {
    pub model: String,
    pub version: String,
    /// `stable`, `candidate` or `pinned`.
    pub arm: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `rejected`.
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily<RequestLabels>,
    pub pairs_scored: Counter,
    pub scored_requests: Family<ScoreLabels, Counter>,
    pub scored_pairs: Family<ScoreLabels, Counter>,
    pub scoring_latency: HistogramFamily<ScoreLabels>,
    pub model: Family<ModelLabels, Gauge>,
    pub failed_versions: Family<FailedLabels, Gauge>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub exposure: ExposureCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mtrec");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = HistogramFamily::new_with_constructor(latency_histogram);
        let pairs_scored = Counter::default();
        let scored_requests = Family::<ScoreLabels, Counter>::default();
        let scored_pairs = Family::<ScoreLabels, Counter>::default();
        let scoring_latency = HistogramFamily::new_with_constructor(latency_histogram);
        let model = Family::<ModelLabels, Gauge>::default();
        let failed_versions = Family::<FailedLabels, Gauge>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let exposure = ExposureCounters::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            latency.clone(),
        );
        registry.register("pairs_scored", "User-item pairs scored", pairs_scored.clone());
        registry.register("scored_requests", "Scoring requests by model, version and arm", scored_requests.clone());
        registry.register("scored_pairs", "User-item pairs scored by model, version and arm", scored_pairs.clone());
        registry.register(
            "scoring_duration_seconds",
            "Scoring latency (parse, score, encode) by model, version and arm",
            scoring_latency.clone(),
        );
        registry.register("model_info", "The model versions being served (value 1 each)", model.clone());
        registry.register(
            "model_version_failed",
            "Versions that are not served, with the reason (value 1 each)",
            failed_versions.clone(),
        );
        registry.register("reloads", "Model reloads by outcome", reloads.clone());
        registry.register("exposure_records_queued", "Exposure records handed to the writer", exposure.queued.clone());
        registry.register(
            "exposure_records_dropped",
            "Exposure records dropped because the queue was full",
            exposure.dropped.clone(),
        );
        registry.register("exposure_records_written", "Exposure records written to files", exposure.written.clone());
        registry.register(
            "exposure_write_errors",
            "Exposure batches or files lost to a write error",
            exposure.write_errors.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            pairs_scored,
            scored_requests,
            scored_pairs,
            scoring_latency,
            model,
            failed_versions,
            reloads,
            exposure,
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, labels: RequestLabels, seconds: f64) {
        self.latency.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// Marks the catalog's ready versions as served and its failed ones as failed (and no other).
    pub fn set_catalog(&self, catalog: &Catalog) {
        self.model.clear();
        self.failed_versions.clear();
        for served in catalog.models.values() {
            for (version, state) in &served.versions {
                let (name, version) = (served.name.clone(), version.0.clone());
                match state {
                    VersionState::Ready(_) => self.model.get_or_create(&ModelLabels { name, version }).set(1),
                    VersionState::Failed { reason, .. } => {
                        // The first line, bounded: a label value, not a log.
                        let reason: String = reason.lines().next().unwrap_or("").chars().take(200).collect();
                        self.failed_versions.get_or_create(&FailedLabels { name, version, reason }).set(1)
                    }
                };
            }
        }
    }

    /// One scoring request answered.
    pub fn scored(&self, labels: &ScoreLabels, pairs: u64, seconds: f64) {
        self.pairs_scored.inc_by(pairs);
        self.scored_requests.get_or_create(labels).inc();
        self.scored_pairs.get_or_create(labels).inc_by(pairs);
        self.scoring_latency.get_or_create(labels).observe(seconds);
    }

    pub fn reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&ReloadLabels { outcome: outcome.to_owned() }).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
