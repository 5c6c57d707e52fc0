//! Which vector instructions this build uses, and which the CPU it runs on offers.
//!
//! `wide` chooses its instructions at compile time (`cfg(target_feature)`): without target
//! flags an `f32x8` on x86-64 is two SSE halves and `mul_add` is an unfused multiply and add.
//! The workspace's `.cargo/config.toml` builds for x86-64-v3 (AVX2, FMA); a dependent crate must
//! set the same flags itself (see the README).

use std::fmt;

/// An instruction-set level, in increasing order of capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// No vector instructions known to this crate (not x86-64, not AArch64).
    Portable,
    /// AArch64 NEON (always present there).
    Neon,
    /// x86-64 baseline: SSE2, no FMA.
    X86_64,
    /// x86-64-v3: AVX2, FMA, BMI, F16C.
    X86_64V3,
    /// x86-64-v4: x86-64-v3 plus AVX-512 F, BW, CD, DQ, VL.
    X86_64V4,
}

impl SimdLevel {
    /// A short human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Neon => "aarch64 NEON",
            SimdLevel::X86_64 => "x86-64 (SSE2, no FMA)",
            SimdLevel::X86_64V3 => "x86-64-v3 (AVX2, FMA)",
            SimdLevel::X86_64V4 => "x86-64-v4 (AVX-512)",
        }
    }
}

impl fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the build targets and what the CPU offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimdSupport {
    /// The level this crate was compiled for.
    pub compiled: SimdLevel,
    /// The highest level the running CPU supports.
    pub cpu: SimdLevel,
}

impl SimdSupport {
    /// A one-line warning when the CPU could run a more capable build, else `None`.
    pub fn warning(&self) -> Option<String> {
        (self.cpu > self.compiled).then(|| {
            format!(
                "warning: this CPU supports {} but this build uses {}; see the README on build flags",
                self.cpu, self.compiled
            )
        })
    }
}

/// The level this crate was compiled for.
pub const fn compiled_level() -> SimdLevel {
    if cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx512f",
        target_feature = "avx512bw",
        target_feature = "avx512cd",
        target_feature = "avx512dq",
        target_feature = "avx512vl",
        target_feature = "avx2",
        target_feature = "fma"
    )) {
        SimdLevel::X86_64V4
    } else if cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )) {
        SimdLevel::X86_64V3
    } else if cfg!(target_arch = "x86_64") {
        SimdLevel::X86_64
    } else if cfg!(target_arch = "aarch64") {
        SimdLevel::Neon
    } else {
        SimdLevel::Portable
    }
}

/// The highest level the running CPU supports.
pub fn cpu_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v3 = has!("avx2") && has!("fma") && has!("bmi1") && has!("bmi2") && has!("f16c");
        let v4 = v3
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl");
        if v4 {
            SimdLevel::X86_64V4
        } else if v3 {
            SimdLevel::X86_64V3
        } else {
            SimdLevel::X86_64
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        compiled_level()
    }
}

/// The compiled and the available instruction-set levels.
///
/// ```
/// let support = gru_simd::simd_level();
/// println!("built for {}, CPU offers {}", support.compiled, support.cpu);
/// ```
pub fn simd_level() -> SimdSupport {
    SimdSupport {
        compiled: compiled_level(),
        cpu: cpu_level(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_runs_what_the_build_uses() {
        // A binary built for more than the CPU has would not get this far.
        let s = simd_level();
        assert!(s.cpu >= s.compiled, "{s:?}");
        assert_eq!(s.warning().is_some(), s.cpu > s.compiled);
        println!("compiled for {}, CPU offers {}", s.compiled, s.cpu);
    }
}
