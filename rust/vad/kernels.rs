//! The arithmetic of the native Silero engine: matrix products over strided
//! columns and the LSTM cell, in portable Rust and with AVX2 + FMA.
//!
//! Every layer of the network is one product `y = act(W x + b)` where the
//! columns of `x` are slices of a buffer at regular offsets: STFT frames are
//! overlapping windows of the signal, and with activations stored frame by
//! frame (channels contiguous, one zero frame on each side) the input of a
//! kernel-3 convolution at output frame `t` is the contiguous run of three
//! frames starting at `t * stride`. So no layer copies its input.

/// Output rows of a [`Dense`] are padded to a multiple of this (the row block
/// of the kernels).
pub(crate) const ROWS: usize = 8;
/// f32 lanes of an AVX2 register; the inner dimension of a [`Dense`] is
/// padded to a multiple of this.
pub(crate) const LANES: usize = 8;
/// Columns handled per pass over a layer's weights: their inputs (at most
/// 16 x 1.6 KB) stay in L1 while every row block of the weights streams by.
const COLUMN_TILE: usize = 16;

/// Round `n` up to a multiple of `m`.
pub(crate) const fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// Four rows of a weight matrix at one block of [`LANES`] columns.
type Quad = [[f32; LANES]; 4];

/// A weight matrix and its bias, zero-padded: `rows` is a multiple of
/// [`ROWS`], `k` of [`LANES`]. The weights are stored in blocks of four rows,
/// interleaved lane block by lane block, so that a kernel reads each block
/// front to back.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    rows: usize,
    k: usize,
    /// `weights[b * k / LANES + j][r][l]` is row `4 b + r`, column `j * LANES + l`.
    weights: Vec<Quad>,
    bias: Vec<f32>,
}

impl Dense {
    /// A `rows x k` matrix (padded up) with entries `weight(row, col)` and
    /// bias `bias(row)`.
    pub fn new(
        rows: usize,
        k: usize,
        weight: impl Fn(usize, usize) -> f32,
        bias: impl Fn(usize) -> f32,
    ) -> Self {
        let (padded_rows, padded_k) = (round_up(rows, ROWS), round_up(k, LANES));
        let lane_blocks = padded_k / LANES;
        let mut weights = vec![[[0.0; LANES]; 4]; padded_rows / 4 * lane_blocks];
        for (i, quad) in weights.iter_mut().enumerate() {
            let (block, j) = (i / lane_blocks, i % lane_blocks);
            for (r, lanes) in quad.iter_mut().enumerate() {
                let row = 4 * block + r;
                for (l, w) in lanes.iter_mut().enumerate() {
                    let col = j * LANES + l;
                    if row < rows && col < k {
                        *w = weight(row, col);
                    }
                }
            }
        }
        let b = (0..padded_rows)
            .map(|r| if r < rows { bias(r) } else { 0.0 })
            .collect();
        Self {
            rows: padded_rows,
            k: padded_k,
            weights,
            bias: b,
        }
    }

    /// Output rows, padding included: the stride between output columns.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inner dimension, padding included: the length of an input column.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// Where the columns of a product live. Column `j` of group `g` reads
/// `x[g * x_group + j * x_step..][..k]` and writes
/// `y[g * y_group + y_base + j * y_step..][..rows]`; a group is one stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Columns {
    pub groups: usize,
    pub per_group: usize,
    pub x_group: usize,
    pub x_step: usize,
    pub y_group: usize,
    pub y_step: usize,
    pub y_base: usize,
}

impl Columns {
    fn count(&self) -> usize {
        self.groups * self.per_group
    }

    fn x(&self, c: usize) -> usize {
        (c / self.per_group) * self.x_group + (c % self.per_group) * self.x_step
    }

    fn y(&self, c: usize) -> usize {
        (c / self.per_group) * self.y_group + self.y_base + (c % self.per_group) * self.y_step
    }

    /// Whether every column lies inside buffers of these lengths. Offsets
    /// grow with both indices, so the last column is the one to check.
    fn fits(&self, k: usize, rows: usize, x_len: usize, y_len: usize) -> bool {
        let Some(last) = self.count().checked_sub(1) else {
            return true;
        };
        self.x(last) + k <= x_len && self.y(last) + rows <= y_len
    }
}

/// The code to run: portable, or compiled for AVX2 + FMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Self::Avx2Fma;
        }
        Self::Portable
    }

    /// `y = W x + b` over `columns`, clamped at zero if `relu`. Returns false
    /// (and writes nothing) if a column falls outside `x` or `y`.
    pub fn matmul(self, w: &Dense, relu: bool, x: &[f32], y: &mut [f32], columns: Columns) -> bool {
        if !columns.fits(w.k, w.rows, x.len(), y.len()) {
            return false;
        }
        match self {
            Self::Portable => matmul_with(w, relu, x, y, columns, pair_portable, single_portable),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` chose this variant only after checking at run
            // time that the CPU has AVX2 and FMA.
            Self::Avx2Fma => unsafe { avx2::matmul(w, relu, x, y, columns) },
        }
        true
    }

    /// One LSTM step: `gates` holds the pre-activations of the input,
    /// forget, cell and output gates (in the order of torch's `LSTMCell`),
    /// `h.len()` each; `h` and `c` are updated in place.
    pub fn lstm_cell(self, gates: &[f32], h: &mut [f32], c: &mut [f32]) {
        match self {
            Self::Portable => lstm_cell_portable(gates, h, c),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `matmul`.
            Self::Avx2Fma => unsafe { avx2::lstm_cell(gates, h, c) },
        }
    }
}

// Always inlined so that each caller compiles it, and its kernels, for its
// own target features.
#[expect(
    clippy::inline_always,
    reason = "must inherit the caller's target features"
)]
#[inline(always)]
fn matmul_with(
    dense: &Dense,
    relu: bool,
    input: &[f32],
    output: &mut [f32],
    columns: Columns,
    pair: impl Fn(&[Quad], &[[f32; LANES]], &[[f32; LANES]]) -> [[f32; 4]; 2],
    single: impl Fn(&[Quad], &[Quad], &[[f32; LANES]]) -> [f32; 8],
) {
    let (k, blocks) = (dense.k, dense.k / LANES);
    let count = columns.count();
    let column = |c: usize| input[columns.x(c)..][..k].as_chunks::<LANES>().0;
    let mut store = |c: usize, row: usize, sums: &[f32]| {
        let out = &mut output[columns.y(c) + row..][..sums.len()];
        for ((out, &sum), &bias) in out.iter_mut().zip(sums).zip(&dense.bias[row..]) {
            let v = sum + bias;
            *out = if relu { v.max(0.0) } else { v };
        }
    };
    let mut start = 0;
    while start < count {
        let end = (start + COLUMN_TILE).min(count);
        let paired = start + (end - start) / 2 * 2;
        for (block, quads) in dense.weights.chunks_exact(blocks).enumerate() {
            for c in (start..paired).step_by(2) {
                let [first, second] = pair(quads, column(c), column(c + 1));
                store(c, 4 * block, &first);
                store(c + 1, 4 * block, &second);
            }
        }
        if paired < end {
            let last = column(paired);
            for (block, quads) in dense.weights.chunks_exact(2 * blocks).enumerate() {
                let (lo, hi) = quads.split_at(blocks);
                store(paired, 8 * block, &single(lo, hi, last));
            }
        }
        start = end;
    }
}

/// Sum of the lanes of `acc`.
fn lane_sum(acc: [f32; LANES]) -> f32 {
    let half: [f32; 4] = std::array::from_fn(|l| acc[l] + acc[l + 4]);
    (half[0] + half[1]) + (half[2] + half[3])
}

/// Dot products of four weight rows with one column.
fn quad_portable(quads: &[Quad], x: &[[f32; LANES]]) -> [f32; 4] {
    // Lane-wise partial sums: the compiler may not reorder a float sum
    // itself, so this shape is what lets it vectorise.
    let mut acc = [[0.0_f32; LANES]; 4];
    for (q, v) in quads.iter().zip(x) {
        for (s, w) in acc.iter_mut().zip(q) {
            for l in 0..LANES {
                s[l] += w[l] * v[l];
            }
        }
    }
    acc.map(lane_sum)
}

fn pair_portable(quads: &[Quad], a: &[[f32; LANES]], b: &[[f32; LANES]]) -> [[f32; 4]; 2] {
    [quad_portable(quads, a), quad_portable(quads, b)]
}

fn single_portable(lo: &[Quad], hi: &[Quad], x: &[[f32; LANES]]) -> [f32; 8] {
    let (lo, hi) = (quad_portable(lo, x), quad_portable(hi, x));
    std::array::from_fn(|r| if r < 4 { lo[r] } else { hi[r - 4] })
}

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody and Waite): the high part has few enough bits
/// that `n * LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Beyond this `exp` would leave the normal range; sigmoid and tanh are
/// flat there anyway.
const EXP_LIMIT: f32 = 87.0;
/// Taylor coefficients of e^r, highest first: on |r| <= ln2 / 2 the error of
/// the degree-7 polynomial is below 1e-8, under float precision.
const EXP_TAYLOR: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// e^x to about 2 ulp, without a libm call: x = n ln2 + r, e^r by its Taylor
/// polynomial, and 2^n through the exponent bits.
fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-EXP_LIMIT, EXP_LIMIT);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = EXP_TAYLOR.iter().fold(0.0, |p, &c| p * r + c);
    // |n| <= 126, so the biased exponent is in 1..=253.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (1.0 + exp(2.0 * x))
}

/// The sigmoid, for the network's output.
pub(crate) fn sigmoid_scalar(x: f32) -> f32 {
    sigmoid(x)
}

#[expect(clippy::many_single_char_names, reason = "the LSTM's own notation")]
fn lstm_cell_portable(gates: &[f32], h: &mut [f32], c: &mut [f32]) {
    let n = h.len();
    let (i, rest) = gates.split_at(n);
    let (f, rest) = rest.split_at(n);
    let (g, o) = rest.split_at(n);
    lstm_cell_scalar([i, f, g, o], h, c);
}

/// One LSTM step on gate pre-activations given one slice per gate.
#[expect(clippy::many_single_char_names, reason = "the LSTM's own notation")]
fn lstm_cell_scalar([i, f, g, o]: [&[f32]; 4], h: &mut [f32], c: &mut [f32]) {
    for (j, (h, c)) in h.iter_mut().zip(c.iter_mut()).enumerate() {
        *c = sigmoid(f[j]) * *c + sigmoid(i[j]) * tanh(g[j]);
        *h = sigmoid(o[j]) * tanh(*c);
    }
}

/// The kernels with AVX2 + FMA intrinsics: the compiler's own vectorisation
/// of the portable code does not use FMA and reduces each row on its own.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m128, __m256, _MM_FROUND_NO_EXC, _MM_FROUND_TO_NEAREST_INT, _mm_add_ps, _mm_storeu_ps,
        _mm256_add_epi32, _mm256_add_ps, _mm256_castps256_ps128, _mm256_castsi256_ps,
        _mm256_cvtps_epi32, _mm256_div_ps, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_fnmadd_ps, _mm256_hadd_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps,
        _mm256_permute2f128_ps, _mm256_round_ps, _mm256_set1_epi32, _mm256_set1_ps,
        _mm256_setzero_ps, _mm256_slli_epi32, _mm256_sub_ps,
    };

    use super::{
        Columns, Dense, EXP_LIMIT, EXP_TAYLOR, LANES, LN2_HI, LN2_LO, LOG2_E, Quad,
        lstm_cell_scalar, matmul_with,
    };
    use crate::simd::{load, store};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn matmul(w: &Dense, relu: bool, x: &[f32], y: &mut [f32], columns: Columns) {
        matmul_with(
            w,
            relu,
            x,
            y,
            columns,
            |quads, a, b| pair(quads, a, b),
            |lo, hi, x| single(lo, hi, x),
        );
    }

    /// The four lane sums of `a, b, c, d` as one vector: two rounds of
    /// pairwise adds, then the two 128-bit halves added.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn sum4([r0, r1, r2, r3]: [__m256; 4]) -> __m128 {
        let pairs = _mm256_hadd_ps(_mm256_hadd_ps(r0, r1), _mm256_hadd_ps(r2, r3));
        _mm_add_ps(
            _mm256_castps256_ps128(pairs),
            _mm256_extractf128_ps::<1>(pairs),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn to_array(v: __m128) -> [f32; 4] {
        let mut out = [0.0; 4];
        // SAFETY: `out` is four writable f32s.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), v) };
        out
    }

    /// Four rows by two columns: eight independent FMA chains, six loads for
    /// eight FMAs.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn pair(quads: &[Quad], a: &[[f32; LANES]], b: &[[f32; LANES]]) -> [[f32; 4]; 2] {
        let mut acc = [_mm256_setzero_ps(); 8];
        for ((q, xa), xb) in quads.iter().zip(a).zip(b) {
            let (xa, xb) = (load(xa), load(xb));
            for r in 0..4 {
                let w = load(&q[r]);
                acc[r] = _mm256_fmadd_ps(w, xa, acc[r]);
                acc[r + 4] = _mm256_fmadd_ps(w, xb, acc[r + 4]);
            }
        }
        [
            to_array(sum4([acc[0], acc[1], acc[2], acc[3]])),
            to_array(sum4([acc[4], acc[5], acc[6], acc[7]])),
        ]
    }

    /// Eight rows (two blocks of four) by one column: eight FMA chains,
    /// nine loads for eight FMAs.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn single(lo: &[Quad], hi: &[Quad], x: &[[f32; LANES]]) -> [f32; 8] {
        let mut acc = [_mm256_setzero_ps(); 8];
        for ((l, h), v) in lo.iter().zip(hi).zip(x) {
            let v = load(v);
            for r in 0..4 {
                acc[r] = _mm256_fmadd_ps(load(&l[r]), v, acc[r]);
                acc[r + 4] = _mm256_fmadd_ps(load(&h[r]), v, acc[r + 4]);
            }
        }
        let lo = _mm256_hadd_ps(
            _mm256_hadd_ps(acc[0], acc[1]),
            _mm256_hadd_ps(acc[2], acc[3]),
        );
        let hi = _mm256_hadd_ps(
            _mm256_hadd_ps(acc[4], acc[5]),
            _mm256_hadd_ps(acc[6], acc[7]),
        );
        // Lanes 0-3 of `lo` and `hi` hold the low-half sums of rows 0-3 and
        // 4-7, lanes 4-7 the high-half sums.
        let sums = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(lo, hi),
            _mm256_permute2f128_ps::<0x31>(lo, hi),
        );
        let mut out = [0.0; 8];
        store(&mut out, sums);
        out
    }

    /// [`super::exp`] on eight lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-EXP_LIMIT)),
            _mm256_set1_ps(EXP_LIMIT),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_setzero_ps();
        for c in EXP_TAYLOR {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn sigmoid(x: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_div_ps(one, _mm256_add_ps(one, e))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn tanh(x: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        let e = exp(_mm256_add_ps(x, x));
        _mm256_sub_ps(
            one,
            _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(one, e)),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    #[expect(clippy::many_single_char_names, reason = "the LSTM's own notation")]
    pub(super) fn lstm_cell(gates: &[f32], h: &mut [f32], c: &mut [f32]) {
        let n = h.len();
        let gate = |q: usize| gates[q * n..(q + 1) * n].as_chunks::<LANES>();
        let ((i, i_rest), (f, f_rest), (g, g_rest), (o, o_rest)) =
            (gate(0), gate(1), gate(2), gate(3));
        let (h, h_rest) = h.as_chunks_mut::<LANES>();
        let (c, c_rest) = c.as_chunks_mut::<LANES>();
        for (((((i, f), g), o), h), c) in i.iter().zip(f).zip(g).zip(o).zip(h).zip(c) {
            let (i, f, g, o) = (
                sigmoid(load(i)),
                sigmoid(load(f)),
                tanh(load(g)),
                sigmoid(load(o)),
            );
            let c_new = _mm256_fmadd_ps(f, load(c), _mm256_mul_ps(i, g));
            store(c, c_new);
            store(h, _mm256_mul_ps(o, tanh(c_new)));
        }
        // A width that is not whole lanes: the rest, one by one.
        lstm_cell_scalar([i_rest, f_rest, g_rest, o_rest], h_rest, c_rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u32) -> impl FnMut() -> f32 {
        let mut x = seed;
        move || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1 << 24) as f32 - 0.5
        }
    }

    fn kernels() -> Vec<Kernel> {
        let mut k = vec![Kernel::Portable];
        if Kernel::detect() != Kernel::Portable {
            k.push(Kernel::detect());
        }
        k
    }

    #[test]
    fn exp_sigmoid_tanh_are_accurate() {
        let mut worst = 0.0_f64;
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let want = f64::from(x).exp();
            worst = worst.max(((f64::from(exp(x)) - want) / want).abs());
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6, "{x}");
            assert!((tanh(x) - x.tanh()).abs() < 1e-6, "{x}");
        }
        assert!(worst < 3e-7, "{worst}");
        // Saturated, not NaN or infinite, far out.
        assert!(sigmoid(-1000.0) < 1e-37 && sigmoid(-1000.0) >= 0.0);
        for (x, want) in [(1000.0, 1.0), (-1000.0, -1.0)] {
            assert!((tanh(x) - want).abs() < f32::EPSILON);
        }
        assert!((sigmoid(1000.0) - 1.0).abs() < f32::EPSILON);
    }

    #[test]
    fn matmul_matches_a_plain_product() {
        let mut rnd = lcg(7);
        let (rows, k) = (21, 37);
        let wv: Vec<f32> = (0..rows * k).map(|_| rnd()).collect();
        let bv: Vec<f32> = (0..rows).map(|_| rnd()).collect();
        let w = Dense::new(rows, k, |r, c| wv[r * k + c], |r| bv[r]);
        assert_eq!((w.rows(), w.k()), (24, 40));
        // Three groups of five overlapping columns (odd counts exercise the
        // single-column kernel); outputs land one column in from the start.
        let cols = Columns {
            groups: 3,
            per_group: 5,
            x_group: 200,
            x_step: 9,
            y_group: 7 * w.rows(),
            y_step: w.rows(),
            y_base: w.rows(),
        };
        let x: Vec<f32> = (0..600).map(|_| rnd()).collect();
        for relu in [false, true] {
            for kernel in kernels() {
                let mut y = vec![f32::NAN; 21 * w.rows()];
                assert!(kernel.matmul(&w, relu, &x, &mut y, cols));
                for g in 0..3 {
                    for j in 0..5 {
                        let xo = g * 200 + j * 9;
                        let yo = g * 7 * w.rows() + (j + 1) * w.rows();
                        for r in 0..w.rows() {
                            let mut want = if r < rows { bv[r] } else { 0.0 };
                            for c in 0..k.min(if r < rows { k } else { 0 }) {
                                want += wv[r * k + c] * x[xo + c];
                            }
                            if relu {
                                want = want.max(0.0);
                            }
                            let got = y[yo + r];
                            assert!((got - want).abs() < 1e-5, "{kernel:?} {g} {j} {r}");
                        }
                    }
                }
            }
        }
        let mut small = vec![0.0; 10];
        assert!(!Kernel::Portable.matmul(&w, false, &x, &mut small, cols));
    }

    #[test]
    fn lstm_cell_kernels_agree() {
        let mut rnd = lcg(3);
        for n in [16, 12] {
            let gates: Vec<f32> = (0..4 * n).map(|_| 8.0 * rnd()).collect();
            let h0: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let c0: Vec<f32> = (0..n).map(|_| 20.0 * rnd()).collect();
            let (mut h, mut c) = (h0.clone(), c0.clone());
            lstm_cell_portable(&gates, &mut h, &mut c);
            for j in 0..n {
                let s = |v: f32| 1.0 / (1.0 + (-v).exp());
                let want_c = s(gates[n + j]) * c0[j] + s(gates[j]) * gates[2 * n + j].tanh();
                assert!((c[j] - want_c).abs() < 1e-5);
                assert!((h[j] - s(gates[3 * n + j]) * want_c.tanh()).abs() < 1e-5);
            }
            for kernel in kernels() {
                let (mut h2, mut c2) = (h0.clone(), c0.clone());
                kernel.lstm_cell(&gates, &mut h2, &mut c2);
                for j in 0..n {
                    assert!((h2[j] - h[j]).abs() < 1e-6 && (c2[j] - c[j]).abs() < 1e-5);
                }
            }
        }
    }
}
