//! Whisper-style log-mel features of the last 8 s of 16 kHz audio: the input of Smart Turn v3.
//!
//! The model was trained on features made this way, so every step matters:
//!
//! 1. keep the last [`WINDOW_SAMPLES`] samples, or zero-pad at the *start*
//!    (the turn's end is always the last frame);
//! 2. normalise the whole 8 s buffer, padding included, to zero mean and unit
//!    variance (`var + 1e-7` under the root);
//! 3. a centred STFT: reflect-pad [`N_FFT`]` / 2` samples at both ends, a
//!    periodic Hann window of [`N_FFT`] samples, a hop of [`HOP`] samples,
//!    power spectrum `|X|^2` (801 frames);
//! 4. 80 triangular mel filters on the Slaney scale (linear below 1 kHz,
//!    logarithmic above), 0 Hz to 8 kHz, each scaled to unit area;
//! 5. `log10(max(mel, 1e-10))`, the last frame dropped (800 remain), every
//!    value raised to at least the global maximum minus 8, then `(x + 4) / 4`.
//!
//! The spectrum is computed in `f64`: values eight decades below the loudest
//! bin survive the clamp in step 5, and `f32` rounding in the FFT would move
//! those by more than the 1e-4 the features are checked to.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::error::VadError;

/// Sample rate the features are defined at.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples the features cover: 8 s at 16 kHz.
pub const WINDOW_SAMPLES: usize = 8 * SAMPLE_RATE as usize;
/// FFT size and window length (25 ms).
pub const N_FFT: usize = 400;
/// Hop between frames (10 ms).
pub const HOP: usize = 160;
/// Mel bands.
pub const N_MELS: usize = 80;
/// Frames in the output.
pub const N_FRAMES: usize = WINDOW_SAMPLES / HOP;
/// Values in one feature matrix (`[N_MELS, N_FRAMES]`, row-major).
pub const FEATURES_LEN: usize = N_MELS * N_FRAMES;

const BINS: usize = N_FFT / 2 + 1;
const PAD: usize = N_FFT / 2;
const MEL_FLOOR: f64 = 1e-10;
const VARIANCE_EPS: f32 = 1e-7;
/// Dynamic range kept below the loudest value, in decades (log10 units).
const DYNAMIC_RANGE: f64 = 8.0;

/// One triangular filter: its weights over FFT bins `first..first + weights.len()`.
#[derive(Debug, Clone)]
struct MelFilter {
    first: usize,
    weights: Vec<f64>,
}

/// The log-mel front end, with its window, filterbank, FFT plan and buffers
/// made once: [`LogMel::compute`] allocates nothing.
pub struct LogMel {
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    filters: Vec<MelFilter>,
    /// The normalised, reflect-padded signal: `WINDOW_SAMPLES + N_FFT` values.
    padded: Vec<f64>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    power: Vec<f64>,
    scratch: Vec<Complex<f64>>,
    /// `log10` mel energies, `[N_MELS, N_FRAMES]`.
    log_energies: Vec<f64>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel").finish_non_exhaustive()
    }
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMel {
    /// Plan the FFT and build the window and filterbank.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let scratch = fft.make_scratch_vec();
        let spectrum = fft.make_output_vec();
        Self {
            fft,
            window: periodic_hann(N_FFT),
            filters: slaney_filterbank(),
            padded: vec![0.0; WINDOW_SAMPLES + N_FFT],
            frame: vec![0.0; N_FFT],
            spectrum,
            power: vec![0.0; BINS],
            scratch,
            log_energies: vec![0.0; FEATURES_LEN],
        }
    }

    /// Features of the last 8 s of `audio` (16 kHz, any length) into `out`,
    /// `[N_MELS, N_FRAMES]` row-major: `out[mel * N_FRAMES + frame]`. An
    /// `out` that is not [`FEATURES_LEN`] long is refused.
    pub fn compute(&mut self, audio: &[f32], out: &mut [f32]) -> Result<(), VadError> {
        if out.len() != FEATURES_LEN {
            return Err(VadError::InvalidInput(format!(
                "the features buffer must hold {N_MELS} x {N_FRAMES} = {FEATURES_LEN} values, \
                 got {}",
                out.len()
            )));
        }
        let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
        let lead = WINDOW_SAMPLES - tail.len();
        self.normalise_into_padded(tail, lead);

        // Frames whose whole window (reflection included) lies in the leading
        // zero padding all see the same constant, so their spectrum is
        // computed once: most of the work for a short turn.
        let constant_frames = if lead > PAD {
            (lead - PAD) / HOP + 1
        } else {
            0
        };
        let mut max = f64::NEG_INFINITY;
        for t in 0..N_FRAMES {
            if t > 0 && t < constant_frames {
                for m in 0..N_MELS {
                    self.log_energies[m * N_FRAMES + t] = self.log_energies[m * N_FRAMES];
                }
                continue;
            }
            max = max.max(self.frame_log_mel(t));
        }
        let floor = max - DYNAMIC_RANGE;
        for (o, &v) in out.iter_mut().zip(&self.log_energies) {
            *o = ((v.max(floor) + 4.0) / 4.0) as f32;
        }
        Ok(())
    }

    /// Write the normalised signal, with `lead` zeros (normalised too) before
    /// `tail` and `PAD` reflected samples at each end, into `self.padded`.
    fn normalise_into_padded(&mut self, tail: &[f32], lead: usize) {
        // Mean and variance over the whole window; the zero padding counts.
        let n = WINDOW_SAMPLES as f64;
        let sum: f64 = tail.iter().map(|&x| f64::from(x)).sum();
        let mean = sum / n;
        let centred: f64 = tail
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            + lead as f64 * mean * mean;
        let variance = centred / n;
        // The normalisation itself is done in f32, as the model's reference does.
        let (mean, std) = (mean as f32, (variance as f32 + VARIANCE_EPS).sqrt());
        let body = &mut self.padded[PAD..PAD + WINDOW_SAMPLES];
        body[..lead].fill(f64::from(-mean / std));
        for (dst, &x) in body[lead..].iter_mut().zip(tail) {
            *dst = f64::from((x - mean) / std);
        }
        // numpy's "reflect": the edge sample itself is not repeated.
        for i in 0..PAD {
            self.padded[PAD - 1 - i] = self.padded[PAD + 1 + i];
            let end = PAD + WINDOW_SAMPLES;
            self.padded[end + i] = self.padded[end - 2 - i];
        }
    }

    /// `log10` mel energies of frame `t` into `self.log_energies`; returns their maximum.
    fn frame_log_mel(&mut self, t: usize) -> f64 {
        let start = t * HOP;
        for ((f, &x), &w) in self
            .frame
            .iter_mut()
            .zip(&self.padded[start..start + N_FFT])
            .zip(&self.window)
        {
            *f = x * w;
        }
        // Lengths are fixed at construction, so the FFT cannot fail.
        let _ =
            self.fft
                .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch);
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
        let mut max = f64::NEG_INFINITY;
        for (m, filter) in self.filters.iter().enumerate() {
            let energy: f64 = filter
                .weights
                .iter()
                .zip(&self.power[filter.first..])
                .map(|(w, p)| w * p)
                .sum();
            let v = energy.max(MEL_FLOOR).log10();
            self.log_energies[m * N_FRAMES + t] = v;
            max = max.max(v);
        }
        max
    }
}

/// `w[n] = 0.5 - 0.5 cos(2 pi n / len)`: the periodic Hann window.
fn periodic_hann(len: usize) -> Vec<f64> {
    (0..len)
        .map(|n| 0.5 - 0.5 * (std::f64::consts::TAU * n as f64 / len as f64).cos())
        .collect()
}

/// Hertz to mels on the Slaney scale: linear (3 mels per 200 Hz) below
/// 1 kHz, logarithmic (27 mels per factor 6.4) above.
fn hz_to_mel(hz: f64) -> f64 {
    if hz < 1000.0 {
        3.0 * hz / 200.0
    } else {
        15.0 + (hz / 1000.0).ln() * 27.0 / 6.4_f64.ln()
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel < 15.0 {
        200.0 * mel / 3.0
    } else {
        1000.0 * ((mel - 15.0) * 6.4_f64.ln() / 27.0).exp()
    }
}

/// Triangular filters with corners evenly spaced in mels from 0 Hz to the
/// Nyquist frequency, each weighted by `2 / (right - left)` (unit area).
fn slaney_filterbank() -> Vec<MelFilter> {
    let nyquist = f64::from(SAMPLE_RATE) / 2.0;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let corners: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    let bin_hz = |k: usize| nyquist * k as f64 / (BINS - 1) as f64;
    corners
        .windows(3)
        .map(|c| {
            let (left, centre, right) = (c[0], c[1], c[2]);
            let area = 2.0 / (right - left);
            let weight = |k: usize| {
                let f = bin_hz(k);
                let rising = (f - left) / (centre - left);
                let falling = (right - f) / (right - centre);
                rising.min(falling).max(0.0) * area
            };
            let first = (0..BINS).find(|&k| weight(k) > 0.0).unwrap_or(0);
            let last = (0..BINS).rfind(|&k| weight(k) > 0.0).unwrap_or(0);
            MelFilter {
                first,
                weights: (first..=last.max(first)).map(weight).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filterbank_is_slaney_shaped() {
        let filters = slaney_filterbank();
        assert_eq!(filters.len(), N_MELS);
        // Equal areas: the narrow low filters are tall, the wide high ones low.
        let peak = |f: &MelFilter| f.weights.iter().copied().fold(0.0, f64::max);
        assert!(peak(&filters[0]) > peak(&filters[N_MELS - 1]) * 5.0);
        for f in &filters {
            // Integrated over frequency (40 Hz bins), each filter has about unit area
            // when it spans several bins.
            if f.weights.len() >= 8 {
                let area: f64 = f.weights.iter().sum::<f64>() * 40.0;
                assert!((area - 1.0).abs() < 0.05, "{area}");
            }
            assert!(f.first + f.weights.len() <= BINS);
        }
        // Monotonic centres.
        for pair in filters.windows(2) {
            assert!(pair[0].first <= pair[1].first);
        }
    }

    #[test]
    fn mel_scale_round_trips_and_bends_at_1khz() {
        for hz in [0.0, 100.0, 999.0, 1000.0, 2500.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(6400.0) - 42.0).abs() < 1e-9);
    }

    #[test]
    fn silence_gives_the_floor_everywhere() {
        let mut mel = LogMel::new();
        let mut out = vec![0.0; FEATURES_LEN];
        mel.compute(&[0.0; 1000], &mut out).unwrap();
        // log10(1e-10) = -10, unclamped (the max is -10 too), (-10 + 4) / 4.
        assert!(out.iter().all(|&v| (v + 1.5).abs() < 1e-6));
    }

    #[test]
    fn a_tone_peaks_in_its_band_and_only_at_the_end() {
        // 0.5 s of a 1 kHz tone, left-padded to 8 s: the last 50 frames hold it.
        let tone: Vec<f32> = (0..8000)
            .map(|i| (std::f32::consts::TAU * 1000.0 * i as f32 / 16_000.0).sin() * 0.5)
            .collect();
        let mut mel = LogMel::new();
        let mut out = vec![0.0; FEATURES_LEN];
        mel.compute(&tone, &mut out).unwrap();
        let at = |m: usize, t: usize| out[m * N_FRAMES + t];
        let band = (0..N_MELS)
            .max_by(|&a, &b| at(a, N_FRAMES - 10).total_cmp(&at(b, N_FRAMES - 10)))
            .unwrap();
        let centre = mel_to_hz(hz_to_mel(8000.0) * (band + 1) as f64 / 81.0);
        assert!(
            (centre - 1000.0).abs() < 100.0,
            "band {band} at {centre} Hz"
        );
        // The padding frames are all the same and far below the tone.
        assert!((at(band, 0) - at(band, 500)).abs() < f32::EPSILON);
        assert!(at(band, N_FRAMES - 10) > at(band, 0) + 1.0);
        // Everything is within the 8-decade range after scaling: (x + 4) / 4 spans 2.
        let (lo, hi) = out
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo <= 2.0 + 1e-6);
    }

    #[test]
    fn only_the_last_eight_seconds_count() {
        let noise = |n: usize, seed: u32| -> Vec<f32> {
            let mut x = seed | 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as f32 / u32::MAX as f32 - 0.5
                })
                .collect()
        };
        let tail = noise(WINDOW_SAMPLES, 7);
        let mut long = noise(20_000, 3);
        long.extend_from_slice(&tail);
        let mut mel = LogMel::new();
        let (mut a, mut b) = (vec![0.0; FEATURES_LEN], vec![0.0; FEATURES_LEN]);
        mel.compute(&long, &mut a).unwrap();
        mel.compute(&tail, &mut b).unwrap();
        assert!(mel.compute(&tail, &mut b[1..]).is_err());
        assert_eq!(a, b);
    }
}
