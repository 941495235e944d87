//! Student's t distribution: the two-sided p-value of a t statistic, through the regularised
//! incomplete beta function `P(|T| ≥ |t|) = I_{ν/(ν+t²)}(ν/2, 1/2)`, evaluated by its continued
//! fraction (modified Lentz), with `ln Γ` from `libm`.

/// `P(|T| ≥ |t|)` for `T` with `df` degrees of freedom (`df > 0`); `NaN` for a `NaN` t or a
/// non-positive `df`.
pub fn student_t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// `I_x(a, b)` for `a, b > 0`.
fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast below the mean of the distribution; above it, use
    // the symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=500 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((qam + 2.0 * m) * (a + 2.0 * m));
        d = 1.0 / guard(1.0 + even * d);
        c = guard(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (qab + m) * x / ((a + 2.0 * m) * (qap + 2.0 * m));
        d = 1.0 / guard(1.0 + odd * d);
        c = guard(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_and_tables() {
        for t in [0.1, 0.7, 1.5, 3.0, 12.706, 40.0] {
            // One degree of freedom is the Cauchy distribution: p = 1 - (2/π) atan|t|.
            let cauchy = 1.0 - 2.0 / std::f64::consts::PI * f64::atan(t);
            assert!((student_t_two_sided_p(t, 1.0) - cauchy).abs() < 1e-13, "df 1, t {t}");
            // Two: p = 1 - |t| / sqrt(2 + t²).
            let two = 1.0 - t / (2.0 + t * t).sqrt();
            assert!((student_t_two_sided_p(-t, 2.0) - two).abs() < 1e-13, "df 2, t {t}");
            // Four: p = 1 - s (1 + c² / 2) with s = t / sqrt(t² + 4), c² = 4 / (t² + 4).
            let (s, c2) = (t / (t * t + 4.0).sqrt(), 4.0 / (t * t + 4.0));
            assert!((student_t_two_sided_p(t, 4.0) - (1.0 - s * (1.0 + c2 / 2.0))).abs() < 1e-13, "df 4, t {t}");
        }
        // t tables' 0.975 quantiles give p = 0.05 (tables round to 3 decimals, hence 1e-4).
        for (df, t) in [(9.0, 2.262), (29.0, 2.045)] {
            assert!((student_t_two_sided_p(t, df) - 0.05).abs() < 1e-4, "df {df}");
        }
        assert_eq!(student_t_two_sided_p(0.0, 4.0), 1.0);
        assert_eq!(student_t_two_sided_p(f64::INFINITY, 4.0), 0.0);
        assert!(student_t_two_sided_p(1.0, 0.0).is_nan());
        // Many degrees of freedom: the normal's 0.05 at 1.959964.
        assert!((student_t_two_sided_p(1.959964, 1e7) - 0.05).abs() < 1e-6);
    }
}
