//! Safe AVX2 loads and stores of one register's worth of f32s, shared by the SIMD kernels.

use std::arch::x86_64::{__m256, _mm256_loadu_ps, _mm256_storeu_ps};

/// f32 lanes of an AVX2 register.
pub(crate) const LANES: usize = 8;

/// One unaligned load.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn load(x: &[f32; LANES]) -> __m256 {
    // SAFETY: `x` is LANES = 8 readable f32s, exactly one unaligned load.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

/// One unaligned store.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn store(out: &mut [f32; LANES], v: __m256) {
    // SAFETY: `out` is LANES = 8 writable f32s, exactly one unaligned store.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}
