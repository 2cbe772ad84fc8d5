//! Noise suppression in front of the VAD: RNNoise (the pure-Rust `nnnoiseless`) at any rate.
//!
//! RNNoise runs on 480-sample (10 ms) frames at 48 kHz. A [`NoiseSuppressor`]
//! takes mono f32 audio at any rate of [`SUPPORTED_RATES`](super::resample::SUPPORTED_RATES), resamples it to
//! 48 kHz, denoises it frame by frame and resamples it back, so the caller
//! gets the same rate and the same number of samples it gave. The output is
//! the denoised input delayed by a fixed [`NoiseSuppressor::latency`]: the
//! two resamplers' held-back windows, a frame of buffering and RNNoise's own
//! 10 ms overlap-add delay (about 25 ms at 16 kHz).
//!
//! # Presets
//!
//! The Realtime API names two (`audio.input.noise_reduction.type`):
//!
//! * [`NsPreset::NearField`] (headsets, laptop mics at arm's length): speech
//!   is loud and dry, RNNoise's own gains are right, and the residual noise
//!   may go as low as [`NEAR_FIELD_FLOOR_DB`].
//! * [`NsPreset::FarField`] (a conference mic across the room): speech
//!   arrives quieter and reverberant, and RNNoise, trained mostly on
//!   close-talk speech, takes reverberant tails and distant syllables for
//!   noise. Its attenuation is limited to [`FAR_FIELD_FLOOR_DB`], so a
//!   wrong decision costs a little noise instead of a lost word.
//!
//! The limit is a gain floor applied as a mix: `out = (1 - f) * rnnoise +
//! f * dry`, with the dry signal delayed to line up with RNNoise's output.
//! Where RNNoise passes a band unchanged the mix is the input itself; where
//! it removes everything the output is the input scaled by `f`.
//!
//! # What it does not do
//!
//! RNNoise removes hiss and hum under and between words (30-40 dB on white
//! noise up to about -30 dBFS), but it keeps what sounds like speech:
//! babble passes, cleaned of the hiss around it, and a VAD behind it stays
//! in "speech" longer (`benches/audio_frontend.py` measures both). Much
//! louder white noise (-26 dBFS and up) it mostly leaves in place.

use nnnoiseless::DenoiseState;
use thiserror::Error;

use super::fifo::Fifo;
use super::resample::{ResampleError, Resampler};

/// RNNoise's rate.
const RNN_RATE: u32 = 48000;
/// RNNoise's frame, 10 ms at 48 kHz.
const RNN_FRAME: usize = DenoiseState::FRAME_SIZE;
/// RNNoise works on floats in 16-bit units.
const S16: f32 = 32768.0;
/// Input samples processed per inner pass; larger inputs are split, so the
/// scratch buffers never grow.
const CHUNK: usize = 960;
/// Residual noise floor of the near-field preset, dB (a mix of 1%).
pub const NEAR_FIELD_FLOOR_DB: f32 = -40.0;
/// Residual noise floor of the far-field preset, dB.
pub const FAR_FIELD_FLOOR_DB: f32 = -12.0;

/// How hard to suppress: the Realtime API's `noise_reduction.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum NsPreset {
    /// Close-talking microphone: full RNNoise suppression.
    #[default]
    NearField,
    /// Distant microphone: suppression limited to a milder floor.
    FarField,
}

impl NsPreset {
    /// The name used by the Realtime API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NearField => "near_field",
            Self::FarField => "far_field",
        }
    }

    /// The lowest gain the preset applies, in dB.
    pub fn floor_db(self) -> f32 {
        match self {
            Self::NearField => NEAR_FIELD_FLOOR_DB,
            Self::FarField => FAR_FIELD_FLOOR_DB,
        }
    }
}

impl std::str::FromStr for NsPreset {
    type Err = NsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "near_field" => Ok(Self::NearField),
            "far_field" => Ok(Self::FarField),
            other => Err(NsError::UnknownPreset(other.to_owned())),
        }
    }
}

/// Errors from building or running a [`NoiseSuppressor`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NsError {
    /// Construction: the rate is not one the resampler converts. Use one of
    /// 8000, 16000, 22050, 24000, 44100 or 48000 Hz.
    #[error(transparent)]
    Rate(#[from] ResampleError),
    /// Construction: the preset name is not `near_field` or `far_field`.
    #[error("unknown noise reduction type {0:?}: expected near_field or far_field")]
    UnknownPreset(String),
    /// Processing: the output is not the length of the input. Nothing was
    /// processed; pass an output as long as the input.
    #[error("output holds {got} samples but the input has {needed}")]
    OutputLength {
        /// Samples the output must hold.
        needed: usize,
        /// Samples it holds.
        got: usize,
    },
}

/// A per-stream RNNoise noise suppressor at any supported rate (mono f32).
pub struct NoiseSuppressor {
    rate: u32,
    preset: NsPreset,
    /// Weight of the dry signal in the output (the gain floor, linear).
    floor: f32,
    rnn: Box<DenoiseState<'static>>,
    up: Resampler,
    down: Resampler,
    /// Input resampled to 48 kHz, until it fills a frame.
    frame: Box<[f32]>,
    frame_len: usize,
    /// The previous 48 kHz input frame: RNNoise's output lags by one frame,
    /// so this is the dry signal that lines up with it.
    dry: Box<[f32]>,
    denoised: Box<[f32]>,
    up_out: Box<[f32]>,
    down_out: Box<[f32]>,
    out: Fifo,
    latency: usize,
    last_vad: f32,
    frames: u64,
    underflows: u64,
}

impl std::fmt::Debug for NoiseSuppressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseSuppressor")
            .field("rate", &self.rate)
            .field("preset", &self.preset)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl NoiseSuppressor {
    /// A suppressor for one mono stream at `sample_rate` (any of
    /// [`SUPPORTED_RATES`](super::resample::SUPPORTED_RATES)).
    pub fn new(sample_rate: u32, preset: NsPreset) -> Result<Self, NsError> {
        let up = Resampler::new(sample_rate, RNN_RATE)?;
        let down = Resampler::new(RNN_RATE, sample_rate)?;
        let ratio = f64::from(sample_rate) / f64::from(RNN_RATE);
        // What the chain can hold back, in output samples: the upsampler's
        // window, a partial frame, the downsampler's window, and a sample of
        // rounding at each step. The output FIFO starts with that many zeros
        // so that every call can return as many samples as it was given.
        let held_48k = up.delay().ceil() + 1.0 + (RNN_FRAME - 1) as f64;
        let latency = (held_48k * ratio).ceil() as usize + down.delay().ceil() as usize + 3;
        let chunk_48k = up.output_len_max(CHUNK) + RNN_FRAME;
        let mut out = Fifo::new(latency + CHUNK + down.output_len_max(chunk_48k) + 8);
        out.reset_to_zeros(latency);
        Ok(Self {
            rate: sample_rate,
            preset,
            floor: 10f32.powf(preset.floor_db() / 20.0),
            rnn: DenoiseState::new(),
            down_out: vec![0.0; down.output_len_max(RNN_FRAME)].into_boxed_slice(),
            up_out: vec![0.0; up.output_len_max(CHUNK)].into_boxed_slice(),
            up,
            down,
            frame: vec![0.0; RNN_FRAME].into_boxed_slice(),
            frame_len: 0,
            dry: vec![0.0; RNN_FRAME].into_boxed_slice(),
            denoised: vec![0.0; RNN_FRAME].into_boxed_slice(),
            out,
            latency,
            last_vad: 0.0,
            frames: 0,
            underflows: 0,
        })
    }

    /// The sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    /// The preset chosen at construction.
    pub fn preset(&self) -> NsPreset {
        self.preset
    }

    /// How many samples the output lags the input, on top of RNNoise's own
    /// 10 ms (which is part of the signal, not of the buffering).
    pub fn latency(&self) -> usize {
        self.latency
    }

    /// RNNoise's speech probability for the last 10 ms frame (0 to 1).
    pub fn speech_probability(&self) -> f32 {
        self.last_vad
    }

    /// 48 kHz frames denoised so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Output samples that had to be zeros because the chain held more back
    /// than [`latency`](Self::latency) allows. Zero unless there is a bug.
    pub fn underflows(&self) -> u64 {
        self.underflows
    }

    /// Denoise `input` into `output` (the same length): `output` is the
    /// denoised signal [`latency`](Self::latency) samples behind the input.
    pub fn process_into(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), NsError> {
        if output.len() != input.len() {
            return Err(NsError::OutputLength {
                needed: input.len(),
                got: output.len(),
            });
        }
        for (src, dst) in input.chunks(CHUNK).zip(output.chunks_mut(CHUNK)) {
            self.process_chunk(src)?;
            let got = self.out.pop(dst);
            dst[got..].fill(0.0);
            self.underflows += (dst.len() - got) as u64;
        }
        Ok(())
    }

    fn process_chunk(&mut self, src: &[f32]) -> Result<(), NsError> {
        let n = self.up.process_into(src, &mut self.up_out)?;
        let mut rest = 0..n;
        while !rest.is_empty() {
            let take = (RNN_FRAME - self.frame_len).min(rest.len());
            let from = rest.start;
            self.frame[self.frame_len..self.frame_len + take]
                .copy_from_slice(&self.up_out[from..from + take]);
            self.frame_len += take;
            rest.start += take;
            if self.frame_len == RNN_FRAME {
                self.frame_len = 0;
                self.denoise_frame()?;
            }
        }
        Ok(())
    }

    fn denoise_frame(&mut self) -> Result<(), NsError> {
        for s in &mut self.frame {
            *s *= S16;
        }
        self.last_vad = self.rnn.process_frame(&mut self.denoised, &self.frame);
        let (floor, wet) = (self.floor, 1.0 - self.floor);
        for (d, &x) in self.denoised.iter_mut().zip(self.dry.iter()) {
            *d = (wet * *d + floor * x) / S16;
        }
        self.dry.copy_from_slice(&self.frame);
        let m = self.down.process_into(&self.denoised, &mut self.down_out)?;
        // The FIFO is sized for the most one chunk can add (see `new`).
        self.out.push(&self.down_out[..m]);
        self.frames += 1;
        Ok(())
    }

    /// Forget the stream: as after [`new`](Self::new).
    pub fn reset(&mut self) {
        self.rnn = DenoiseState::new();
        self.up.reset();
        self.down.reset();
        self.frame_len = 0;
        self.dry.fill(0.0);
        self.out.reset_to_zeros(self.latency);
        self.last_vad = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::resample::SUPPORTED_RATES;
    use super::*;

    fn noise(n: usize, amp: f32, seed: u32) -> Vec<f32> {
        let mut x = seed.max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    #[test]
    fn presets_parse_and_order_their_floors() {
        assert_eq!("near_field".parse::<NsPreset>(), Ok(NsPreset::NearField));
        assert_eq!("far_field".parse::<NsPreset>(), Ok(NsPreset::FarField));
        assert!(matches!(
            "loud".parse::<NsPreset>(),
            Err(NsError::UnknownPreset(_))
        ));
        assert!(NsPreset::NearField.floor_db() < NsPreset::FarField.floor_db());
    }

    #[test]
    fn bad_rates_and_lengths_are_refused() {
        assert!(matches!(
            NoiseSuppressor::new(11025, NsPreset::NearField),
            Err(NsError::Rate(ResampleError::UnsupportedRate {
                rate: 11025
            }))
        ));
        let mut ns = NoiseSuppressor::new(16000, NsPreset::NearField).unwrap();
        let mut out = vec![0.0; 10];
        assert_eq!(
            ns.process_into(&[0.0; 20], &mut out),
            Err(NsError::OutputLength {
                needed: 20,
                got: 10
            })
        );
    }

    #[test]
    fn output_length_matches_input_for_any_chunking_and_never_underflows() {
        for rate in SUPPORTED_RATES {
            let mut ns = NoiseSuppressor::new(rate, NsPreset::NearField).unwrap();
            let input = noise(rate as usize, 0.1, 7);
            let mut out = vec![0.0; input.len()];
            let mut pos = 0;
            for (k, size) in [1usize, 7, 160, 3000, 33].iter().cycle().enumerate() {
                if pos >= input.len() || k > 10_000 {
                    break;
                }
                let end = (pos + size).min(input.len());
                ns.process_into(&input[pos..end], &mut out[pos..end])
                    .unwrap();
                pos = end;
            }
            assert_eq!(ns.underflows(), 0, "{rate}");
            assert!(ns.frames() >= 95, "{rate}: {}", ns.frames());
        }
    }

    #[test]
    fn the_dry_path_is_delayed_by_latency_plus_one_rnnoise_frame() {
        // Far below RNNoise's silence threshold it applies no gain, so the
        // output is the input, delayed: this pins down the alignment of the
        // dry mix and the latency we report.
        let mut ns = NoiseSuppressor::new(48000, NsPreset::FarField).unwrap();
        let input = noise(48000, 1e-7, 3);
        let mut out = vec![0.0; input.len()];
        ns.process_into(&input, &mut out).unwrap();
        let lag = ns.latency() + RNN_FRAME;
        let mismatch = |lag: usize| {
            let span = 4800..40000;
            let err: f32 = input[span.clone()]
                .iter()
                .zip(&out[span.start + lag..span.end + lag])
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            let energy: f32 = input[span].iter().map(|a| a * a).sum();
            err / energy
        };
        let (err, energy) = (mismatch(lag), 1.0);
        // One sample off is far worse: the lag is exact.
        assert!(mismatch(lag + 1) > 0.1 && mismatch(lag - 1) > 0.1);
        assert!(err < energy * 1e-2, "err {err} energy {energy}");
    }

    #[test]
    fn white_noise_is_attenuated_by_both_presets_near_more_than_far() {
        let input = noise(48000 * 2, 0.05, 11);
        let e_in: f32 = input[48000..].iter().map(|a| a * a).sum();
        let level = |preset| {
            let mut ns = NoiseSuppressor::new(16000, preset).unwrap();
            let mut out = vec![0.0; input.len()];
            ns.process_into(&input, &mut out).unwrap();
            let e: f32 = out[48000..].iter().map(|a| a * a).sum();
            10.0 * (e / e_in).log10()
        };
        let near = level(NsPreset::NearField);
        let far = level(NsPreset::FarField);
        assert!(near < -15.0, "near {near} dB");
        assert!(
            (FAR_FIELD_FLOOR_DB - 1.0..-6.0).contains(&far),
            "far {far} dB"
        );
        assert!(near < far - 3.0, "near {near} far {far}");
    }
}
