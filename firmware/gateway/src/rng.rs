//! A small deterministic PRNG (SplitMix64), so that the simulator and the reconnect jitter
//! are reproducible from a seed on every target, without `rand` or an entropy source.

/// SplitMix64: one `u64` of state, passes BigCrush, and its output function doubles as a
/// good 64-bit mixer for [`hash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        unit(self.next_u64())
    }

    /// Uniform in `[0, bound)`; 0 for a bound of 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            // Multiply-shift keeps the bias below 2^-64 * bound, far below anything that matters here.
            let wide = u128::from(self.next_u64()) * u128::from(bound);
            u64::try_from(wide >> 64).unwrap_or(0)
        }
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random-access hash of `(seed, a, b)`: the simulator draws the noise of a given second
/// from it, so a value at time `t` does not depend on which times were looked at before.
#[must_use]
pub fn hash(seed: u64, a: u64, b: u64) -> u64 {
    mix(mix(mix(seed ^ 0x5851_F42D_4C95_7F2D).wrapping_add(a)).wrapping_add(b))
}

/// The top 53 bits of `x` as a float in `[0, 1)`.
#[must_use]
pub fn unit(x: u64) -> f64 {
    // 2^53 fits exactly in an f64.
    (x >> 11) as f64 / (1_u64 << 53) as f64
}

/// `hash` mapped to `[-1, 1)`.
#[must_use]
pub fn signed_noise(seed: u64, a: u64, b: u64) -> f64 {
    unit(hash(seed, a, b)) * 2.0 - 1.0
}
