//! Which vector instructions this build uses, and which the CPU it runs on offers.
//!
//! `wide` chooses its instructions at compile time (`cfg(target_feature)`): without target
//! flags an `f32x8` on x86-64 is two SSE halves and `mul_add` is an unfused multiply and add.
//! The workspace's `.cargo/config.toml` builds for x86-64-v3 (AVX2, FMA); a dependent crate must
//! set the same flags itself (see the README).

use std::fmt;

use crate::packing::PanelLayout;

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
    ///
    /// An x86-64-v3 build on an AVX-512 CPU gets none: the tiles, where the time goes, use
    /// AVX-512 at run time whatever the build ([`PanelLayout::best`]).
    pub fn warning(&self) -> Option<String> {
        let tiles_use_the_cpu =
            self.compiled == SimdLevel::X86_64V3 && self.cpu == SimdLevel::X86_64V4;
        (self.cpu > self.compiled && !tiles_use_the_cpu).then(|| {
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

/// Independent FMA chains in [`fma_chains`]: enough to cover the latency of both FMA pipes.
pub const FMA_CHAINS: usize = 12;

/// Runs [`FMA_CHAINS`] independent chains of `rounds` FMAs each in the vector width of
/// `layout`'s tiles (8 lanes, or 16 for [`PanelLayout::Pairs`]) and returns a value that
/// depends on all of them: the core of an FMA-peak measurement,
/// `rounds · FMA_CHAINS · lanes · 2` FLOPs, lanes being `8 · layout.panels_per_row()`.
/// `None` when this CPU cannot run `layout`'s tiles.
///
/// ```
/// use gru_simd::packing::PanelLayout;
/// assert!(gru_simd::simd_level::fma_chains(PanelLayout::Contiguous, 1000).is_some());
/// ```
pub fn fma_chains(layout: PanelLayout, rounds: u64) -> Option<f32> {
    match layout {
        PanelLayout::Contiguous => Some(fma_chains_8(rounds)),
        #[cfg(target_arch = "x86_64")]
        PanelLayout::Pairs if layout.is_supported() => {
            // SAFETY: this CPU supports AVX-512F, checked just above.
            Some(unsafe { fma_chains_16(rounds) })
        }
        PanelLayout::Pairs => None,
    }
}

fn fma_chains_8(rounds: u64) -> f32 {
    use wide::f32x8;
    let mut acc = [f32x8::splat(1.0); FMA_CHAINS];
    let m = std::hint::black_box(f32x8::splat(0.999_999));
    let a = std::hint::black_box(f32x8::splat(1e-7));
    for _ in 0..rounds {
        for v in &mut acc {
            *v = v.mul_add(m, a);
        }
    }
    acc.iter().map(|v| v.reduce_add()).sum()
}

/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_16(rounds: u64) -> f32 {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_reduce_add_ps, _mm512_set1_ps};
    let mut acc = [_mm512_set1_ps(1.0); FMA_CHAINS];
    let m = std::hint::black_box(_mm512_set1_ps(0.999_999));
    let a = std::hint::black_box(_mm512_set1_ps(1e-7));
    for _ in 0..rounds {
        for v in &mut acc {
            *v = _mm512_fmadd_ps(*v, m, a);
        }
    }
    acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_runs_what_the_build_uses() {
        // A binary built for more than the CPU has would not get this far.
        let s = simd_level();
        assert!(s.cpu >= s.compiled, "{s:?}");
        let runtime_avx512 = s.compiled == SimdLevel::X86_64V3 && s.cpu == SimdLevel::X86_64V4;
        assert_eq!(s.warning().is_some(), s.cpu > s.compiled && !runtime_avx512);
        println!("compiled for {}, CPU offers {}", s.compiled, s.cpu);
    }
}
