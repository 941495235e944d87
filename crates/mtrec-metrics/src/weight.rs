//! Row weights: plain, fractional, or bootstrap multiplicities.

/// A row weight: anything that converts to a non-negative `f64`.
pub trait Weight: Copy + Send + Sync {
    fn value(self) -> f64;
}

impl Weight for f32 {
    fn value(self) -> f64 {
        f64::from(self)
    }
}

impl Weight for f64 {
    fn value(self) -> f64 {
        self
    }
}

impl Weight for u32 {
    fn value(self) -> f64 {
        f64::from(self)
    }
}

/// `None` weights with a concrete type, for calls without weights.
pub const UNWEIGHTED: Option<&[f32]> = None;
