//! Acoustic echo cancellation: WebRTC's AEC3 (the pure-Rust `aec3` port) for one mono stream.
//!
//! [`EchoCanceller`] takes the far-end reference (what the speaker plays)
//! and the near-end capture (the microphone) in 10 ms frames at 16, 32 or
//! 48 kHz and removes the part of the capture that is the speaker's signal
//! coming back through the room.
//!
//! # Which AEC3
//!
//! Two maintained implementations of AEC3 exist for Rust:
//!
//! * the `aec3` crate, a port of WebRTC's AEC3 to Rust (MIT/BSD-3, releases
//!   through 2026): no C++ toolchain, nothing to install, builds with the
//!   rest of the crate on every platform the wheel targets, and its
//!   internals (block processor, band splitting) are public, so we drive
//!   them directly (below);
//! * `webrtc-audio-processing` 2.x, bindings to the PulseAudio project's
//!   packaging of the C++ library. It needs `webrtc-audio-processing-2`
//!   2.1 or later from the system, and Debian 12 only has 0.3 (2016, the
//!   old AEC, no AEC3); its `bundled` build compiles the C++ source with meson and
//!   fetches abseil 20240722 at build time (Debian 12 has 20220623), which
//!   cannot work offline and costs minutes of C++ compilation per build.
//!
//! Quality is the same algorithm on both sides (the port follows the
//! reference module by module). Measured here on a synthetic room (40 ms
//! delay, RT60 250 ms, echo 6 dB below the far end): 42 dB of ERLE on the
//! shared speech (`benches/audio_frontend.py`), 26 dB on formant-shaped
//! noise (`tests/audio_frontend.rs`), against the 25 dB target; a near-end
//! talker over the echo keeps its level within 3 dB. Cost: about 0.1 ms per
//! 10 ms frame at 16 kHz on one core. So the pure-Rust crate wins on build,
//! portability and maintenance, at no cost in quality.
//!
//! # Allocation
//!
//! `aec3::EchoCanceller3` clones its render frame into a queue on every
//! render call and is not `Send`. We drive the same `BlockProcessor` it
//! drives, with our own framing: the 10 ms frame is split into bands, cut
//! into two 80-sample sub-frames and re-blocked into the 64-sample blocks
//! AEC3 runs on, all in buffers allocated in [`EchoCanceller::new`]. The
//! block processor itself still builds small temporaries (about 43 per
//! 10 ms frame, measured and bounded by `tests/audio_alloc.rs`): the echo
//! canceller belongs on a processing thread, never in a device callback.
//!
//! # Alignment
//!
//! Feed the far end as it is *played* (the playback callback's reference
//! tap), not as it is queued: AEC3 estimates the remaining delay between the
//! two streams (up to about half a second with the default config), but it
//! cannot find an echo whose reference arrived seconds early.

use aec3::api::config::EchoCanceller3Config;
use aec3::audio_processing::aec3::block::Block;
use aec3::audio_processing::aec3::block_framer::BlockFramer;
use aec3::audio_processing::aec3::block_processor::BlockProcessor;
use aec3::audio_processing::aec3::frame_blocker::FrameBlocker;
use aec3::audio_processing::audio_buffer::AudioBuffer;
use aec3::audio_processing::stream_config::StreamConfig;
use thiserror::Error;

/// Sample rates (Hz) an [`EchoCanceller`] runs at.
pub const AEC_RATES: [u32; 3] = [16000, 32000, 48000];

/// Samples per band in one sub-frame (AEC3's 80-sample half of a 10 ms band).
const SUB_FRAME: usize = 80;
/// Samples per band in one 10 ms frame once split into bands.
const BAND_FRAME: usize = AudioBuffer::SPLIT_BAND_SIZE;
/// Capture samples at or beyond this (in 16-bit units) mean a clipped mic.
const SATURATION_S16: f32 = 32700.0;

/// Errors from building or running an [`EchoCanceller`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AecError {
    /// Construction: AEC3 runs at 16, 32 or 48 kHz only. Resample the
    /// streams to one of them (`crate::audio::resample::Resampler`).
    #[error("unsupported echo canceller rate {rate} Hz; use 16000, 32000 or 48000 Hz")]
    UnsupportedRate {
        /// The rate asked for.
        rate: u32,
    },
    /// Processing: the capture is not a whole number of 10 ms frames. Nothing
    /// was processed; buffer the capture into frames of `frame` samples.
    #[error("capture of {got} samples is not a whole number of {frame}-sample (10 ms) frames")]
    FrameLength {
        /// Samples given.
        got: usize,
        /// Samples in one 10 ms frame at this rate.
        frame: usize,
    },
    /// Processing: the output is not the length of the capture. Nothing was
    /// processed; pass an output as long as the input.
    #[error("output holds {got} samples but the capture has {needed}")]
    OutputLength {
        /// Samples the output must hold.
        needed: usize,
        /// Samples it holds.
        got: usize,
    },
}

/// Echo statistics AEC3 keeps about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AecMetrics {
    /// Echo return loss: how much quieter the echo is than the far end, dB.
    pub echo_return_loss_db: f64,
    /// AEC3's own estimate of the echo return loss enhancement, dB.
    pub erle_db: f64,
    /// The delay AEC3 found between reference and capture, ms.
    pub delay_ms: i32,
}

/// One 10 ms mono frame in AEC3's band-split form, and the blocking state
/// that turns its sub-frames into 64-sample blocks.
struct BandPath {
    buffer: AudioBuffer,
    /// `[band][channel][sample]`: the layout the blockers take.
    sub_frame: Vec<Vec<Vec<f32>>>,
    block: Block,
    blocker: FrameBlocker,
}

impl BandPath {
    fn new(rate: usize, bands: usize) -> Self {
        Self {
            buffer: AudioBuffer::from_sample_rates(rate, 1, rate, 1, rate),
            sub_frame: (0..bands).map(|_| vec![vec![0.0; SUB_FRAME]]).collect(),
            block: Block::new(bands, 1),
            blocker: FrameBlocker::new(bands, 1),
        }
    }

    /// Load one 10 ms frame (floats in [-1, 1]) and split it into bands.
    fn load(&mut self, frame: &[f32], config: &StreamConfig) {
        self.buffer.copy_from(&[frame], config);
        self.buffer.split_into_frequency_bands();
    }

    /// Copy sub-frame `index` (0 or 1) of every band out of the buffer.
    fn take_sub_frame(&mut self, index: usize) {
        let range = index * SUB_FRAME..(index + 1) * SUB_FRAME;
        for (band, dst) in self.sub_frame.iter_mut().enumerate() {
            dst[0].copy_from_slice(&self.buffer.split_band(0, band)[range.clone()]);
        }
    }

    /// Write the sub-frame back into the buffer as sub-frame `index`.
    fn put_sub_frame(&mut self, index: usize) {
        let range = index * SUB_FRAME..(index + 1) * SUB_FRAME;
        for (band, src) in self.sub_frame.iter().enumerate() {
            self.buffer.split_band_mut(0, band)[range.clone()].copy_from_slice(&src[0]);
        }
    }
}

/// A per-stream acoustic echo canceller (mono, 10 ms frames).
///
/// Feed the far end with [`push_far_end`](Self::push_far_end) as it is
/// played, and run each captured frame through
/// [`process_into`](Self::process_into). Both take any number of whole or
/// partial frames of far end and whole frames of capture; nothing allocates
/// after [`new`](Self::new).
pub struct EchoCanceller {
    rate: u32,
    frame: usize,
    config: StreamConfig,
    processor: BlockProcessor,
    render: BandPath,
    capture: BandPath,
    framer: BlockFramer,
    /// Far-end samples that do not yet make a whole frame.
    pending: Box<[f32]>,
    pending_len: usize,
    far_frames: u64,
    near_frames: u64,
}

impl std::fmt::Debug for EchoCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoCanceller")
            .field("rate", &self.rate)
            .field("far_frames", &self.far_frames)
            .field("near_frames", &self.near_frames)
            .finish_non_exhaustive()
    }
}

impl EchoCanceller {
    /// An echo canceller for one mono stream at `sample_rate` (16, 32 or
    /// 48 kHz), with AEC3's default configuration.
    pub fn new(sample_rate: u32) -> Result<Self, AecError> {
        if !AEC_RATES.contains(&sample_rate) {
            return Err(AecError::UnsupportedRate { rate: sample_rate });
        }
        let rate = sample_rate as usize;
        let bands = rate / 16000;
        let frame = rate / 100;
        Ok(Self {
            rate: sample_rate,
            frame,
            config: StreamConfig::new(rate, 1, false),
            processor: BlockProcessor::new(
                EchoCanceller3Config::default(),
                sample_rate as i32,
                1,
                1,
            ),
            render: BandPath::new(rate, bands),
            capture: BandPath::new(rate, bands),
            framer: BlockFramer::new(bands, 1),
            pending: vec![0.0; frame].into_boxed_slice(),
            pending_len: 0,
            far_frames: 0,
            near_frames: 0,
        })
    }

    /// The sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    /// Samples in one 10 ms frame.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// How many samples the output lags the capture. AEC3 works on 64-sample
    /// blocks, and re-framing them into the 80-sample halves of a 10 ms band
    /// holds back 128 samples per band; above 16 kHz the band-splitting
    /// filters add their group delay (measured by
    /// `tests/audio_frontend.rs`: 4 samples at 32 kHz, 47 at 48 kHz).
    pub fn latency(&self) -> usize {
        match self.rate {
            16000 => 128,
            32000 => 260,
            _ => 431,
        }
    }

    /// Whole far-end frames analysed so far.
    pub fn far_frames(&self) -> u64 {
        self.far_frames
    }

    /// Capture frames processed so far.
    pub fn near_frames(&self) -> u64 {
        self.near_frames
    }

    /// Give the far-end reference (floats in [-1, 1], what the speaker
    /// played), any length: whole 10 ms frames are analysed now, a partial
    /// frame waits for the rest.
    pub fn push_far_end(&mut self, mut samples: &[f32]) {
        while !samples.is_empty() {
            let take = (self.frame - self.pending_len).min(samples.len());
            self.pending[self.pending_len..self.pending_len + take]
                .copy_from_slice(&samples[..take]);
            self.pending_len += take;
            samples = &samples[take..];
            if self.pending_len == self.frame {
                self.pending_len = 0;
                self.analyze_far_frame();
            }
        }
    }

    /// Feed `n` samples of silence as speaker output (what a stalled
    /// speaker played), without a buffer of zeros.
    pub fn push_far_end_silence(&mut self, mut n: usize) {
        while n > 0 {
            let take = (self.frame - self.pending_len).min(n);
            self.pending[self.pending_len..self.pending_len + take].fill(0.0);
            self.pending_len += take;
            n -= take;
            if self.pending_len == self.frame {
                self.pending_len = 0;
                self.analyze_far_frame();
            }
        }
    }

    fn analyze_far_frame(&mut self) {
        let Self {
            render,
            pending,
            config,
            processor,
            ..
        } = self;
        render.load(pending, config);
        for index in 0..BAND_FRAME / SUB_FRAME {
            render.take_sub_frame(index);
            render
                .blocker
                .insert_sub_frame_and_extract_block(&render.sub_frame, &mut render.block);
            processor.buffer_render(&render.block);
        }
        // Two 80-sample sub-frames make 2.5 blocks: every other frame has an
        // extra one.
        if render.blocker.is_block_available() {
            render.blocker.extract_block(&mut render.block);
            processor.buffer_render(&render.block);
        }
        self.far_frames += 1;
    }

    /// Remove the echo from `mic` (whole 10 ms frames, floats in [-1, 1])
    /// into `out` (the same length). Fails, processing nothing, on a partial
    /// frame or a wrong-sized output.
    pub fn process_into(&mut self, mic: &[f32], out: &mut [f32]) -> Result<(), AecError> {
        if !mic.len().is_multiple_of(self.frame) {
            return Err(AecError::FrameLength {
                got: mic.len(),
                frame: self.frame,
            });
        }
        if out.len() != mic.len() {
            return Err(AecError::OutputLength {
                needed: mic.len(),
                got: out.len(),
            });
        }
        for (frame, dst) in mic
            .chunks_exact(self.frame)
            .zip(out.chunks_exact_mut(self.frame))
        {
            self.process_frame(frame, dst);
        }
        Ok(())
    }

    fn process_frame(&mut self, mic: &[f32], out: &mut [f32]) {
        let Self {
            capture,
            config,
            processor,
            framer,
            ..
        } = self;
        capture.buffer.copy_from(&[mic], config);
        let saturated = capture
            .buffer
            .channel(0)
            .iter()
            .any(|s| s.abs() >= SATURATION_S16);
        capture.buffer.split_into_frequency_bands();
        for index in 0..BAND_FRAME / SUB_FRAME {
            capture.take_sub_frame(index);
            capture
                .blocker
                .insert_sub_frame_and_extract_block(&capture.sub_frame, &mut capture.block);
            processor.process_capture(false, saturated, None, &mut capture.block);
            framer.insert_block_and_extract_sub_frame(&capture.block, &mut capture.sub_frame);
            capture.put_sub_frame(index);
        }
        if capture.blocker.is_block_available() {
            capture.blocker.extract_block(&mut capture.block);
            processor.process_capture(false, saturated, None, &mut capture.block);
            framer.insert_block(&capture.block);
        }
        capture.buffer.merge_frequency_bands();
        capture.buffer.copy_to_stream(config, &mut [out]);
        self.near_frames += 1;
    }

    /// AEC3's estimates for this stream so far.
    pub fn metrics(&self) -> AecMetrics {
        let m = self.processor.get_metrics();
        AecMetrics {
            echo_return_loss_db: m.echo_return_loss,
            erle_db: m.echo_return_loss_enhancement,
            delay_ms: m.delay_ms,
        }
    }
}

/// Keeps the far end on the capture's clock when the speaker stalls.
///
/// The reference comes from the playback callback, the capture from the
/// microphone's; both run at the same rate, so the capture's lead over the
/// reference stays within a band set by the two devices' periods (about
/// 100 ms through PulseAudio's ALSA plugin). When the output stalls (a
/// suspended or starved sink, a scheduling hiccup of the audio server) its
/// callback stops while the capture goes on, and the lead jumps by the
/// stall's length, for good: nothing was played then, and nothing is
/// replayed after. AEC3 sees a capture with no render behind it, loses the
/// delay it had found and takes up to a second to find it again, letting
/// the echo through meanwhile (measured through PulseAudio with the sink
/// suspended for 150 ms: the delay estimate gone for 0.5 to 1 s, bursts of
/// 250 to 450 ms of echo). What the speaker played during the stall is
/// silence, so [`FarEndClock::gap`] says how much silence to give the far
/// end to keep the two streams where they were. The band is the highest lead
/// of the last `window`; a stall is a lead beyond it by more than
/// `tolerance`, and is filled back to it from then until the reference
/// flows again, so up to `tolerance` of a stall goes unfilled.
#[derive(Debug, Clone)]
pub struct FarEndClock {
    /// Capture samples minus reference samples (zeros given included).
    lead: i64,
    /// The highest lead of the window under way, and of the last whole one.
    window_max: i64,
    last_max: Option<i64>,
    window_left: usize,
    window: usize,
    tolerance: i64,
    /// In a stall: no reference since one was detected.
    stalled: bool,
    /// Silence given in the stall under way, and in the one that just ended.
    stall_filled: u64,
    ended: Option<u64>,
    /// Capture samples since silence was last given.
    since_fill: usize,
    filled: u64,
}

impl FarEndClock {
    /// `window` samples (about a second) set the normal band; a lead more
    /// than `tolerance` samples above it is a stall.
    pub fn new(window: usize, tolerance: usize) -> Self {
        Self {
            lead: 0,
            window_max: i64::MIN,
            last_max: None,
            window_left: window.max(1),
            window: window.max(1),
            tolerance: i64::try_from(tolerance).unwrap_or(i64::MAX),
            stalled: false,
            stall_filled: 0,
            ended: None,
            since_fill: 0,
            filled: 0,
        }
    }

    /// Account for `reference` samples fed and then `capture` samples about to
    /// be processed; returns the silence (samples) to push into the far end
    /// first: 0 unless the output stalled.
    pub fn gap(&mut self, reference: usize, capture: usize) -> usize {
        self.lead += i64::try_from(capture).unwrap_or(i64::MAX)
            - i64::try_from(reference).unwrap_or(i64::MAX);
        let mut fill = 0;
        if reference > 0 {
            self.stalled = false;
        }
        // The band is the last whole window's: a stall's rise must not move
        // it. Once stalled, every frame without a reference is silence played.
        let tolerance = if self.stalled { 0 } else { self.tolerance };
        if let Some(band) = self.last_max
            && self.lead > band + tolerance
        {
            fill = self.lead - band;
            self.lead = band;
            self.filled += fill.unsigned_abs();
            self.stall_filled += fill.unsigned_abs();
            self.stalled = true;
        }
        // A stall is over (and reported) once a quarter window has passed
        // without silence given: the reads' granularity may leave a remainder
        // that tops the band once more after the reference is back.
        self.since_fill = if fill > 0 {
            0
        } else {
            self.since_fill + capture
        };
        if !self.stalled && self.stall_filled > 0 && self.since_fill >= self.window / 4 {
            self.ended = Some(std::mem::take(&mut self.stall_filled));
        }
        self.window_max = self.window_max.max(self.lead);
        self.window_left = self.window_left.saturating_sub(capture);
        if self.window_left == 0 {
            self.last_max = Some(self.window_max);
            self.window_max = i64::MIN;
            self.window_left = self.window;
        }
        usize::try_from(fill).unwrap_or(0)
    }

    /// Once per stall, a quarter window after the reference flows again: how
    /// long the speaker stalled beyond its usual band, in ms at `rate` (the silence given).
    pub fn take_stall_ms(&mut self, rate: u32) -> Option<u64> {
        self.ended.take().map(|n| n * 1000 / u64::from(rate.max(1)))
    }

    /// Silence given to the far end so far, samples.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// Capture samples since silence was last given (`None`: the speaker
    /// never stalled). A stall may have moved the echo's delay too, and
    /// AEC3 takes up to a second to find it again.
    pub fn since_stall(&self) -> Option<usize> {
        (self.filled > 0).then_some(self.since_fill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_frames_are_checked() {
        assert_eq!(
            EchoCanceller::new(44100).unwrap_err(),
            AecError::UnsupportedRate { rate: 44100 }
        );
        let mut aec = EchoCanceller::new(16000).unwrap();
        assert_eq!(aec.frame_len(), 160);
        let mut out = vec![0.0; 100];
        assert_eq!(
            aec.process_into(&[0.0; 100], &mut out),
            Err(AecError::FrameLength {
                got: 100,
                frame: 160
            })
        );
        let mut out = vec![0.0; 100];
        assert_eq!(
            aec.process_into(&[0.0; 320], &mut out),
            Err(AecError::OutputLength {
                needed: 320,
                got: 100
            })
        );
        assert_eq!(aec.near_frames(), 0);
    }

    #[test]
    fn partial_far_end_frames_wait_for_the_rest() {
        let mut aec = EchoCanceller::new(48000).unwrap();
        aec.push_far_end(&[0.1; 300]);
        assert_eq!(aec.far_frames(), 0);
        aec.push_far_end(&[0.1; 700]);
        assert_eq!(aec.far_frames(), 2);
    }

    #[test]
    fn far_end_silence_is_the_same_as_feeding_zeros() {
        // A stall's silence lands mid-frame, between two stretches of speech.
        let speech: Vec<f32> = (0..700).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let mic: Vec<f32> = (0..160).map(|i| (i as f32 * 0.05).sin() * 0.1).collect();
        let mut zeros = EchoCanceller::new(16000).unwrap();
        let mut silence = EchoCanceller::new(16000).unwrap();
        let (mut a, mut b) = (vec![0.0; 160], vec![0.0; 160]);
        for _ in 0..30 {
            zeros.push_far_end(&speech);
            zeros.push_far_end(&[0.0; 450]);
            silence.push_far_end(&speech);
            silence.push_far_end_silence(450);
            zeros.process_into(&mic, &mut a).unwrap();
            silence.process_into(&mic, &mut b).unwrap();
            assert_eq!(a, b);
        }
        assert_eq!(zeros.far_frames(), silence.far_frames());
        assert_eq!(silence.far_frames(), 30 * 1150 / 160);
    }

    #[test]
    fn silence_in_gives_silence_out_at_every_rate() {
        for rate in AEC_RATES {
            let mut aec = EchoCanceller::new(rate).unwrap();
            let frame = aec.frame_len();
            let zeros = vec![0.0; frame];
            let mut out = vec![1.0; frame];
            for _ in 0..50 {
                aec.push_far_end(&zeros);
                aec.process_into(&zeros, &mut out).unwrap();
            }
            assert!(out.iter().all(|s| s.abs() < 1e-3), "{rate}");
        }
    }

    /// PulseAudio's ALSA plugin as measured: the playback callback plays
    /// 85 ms at a time, the capture arrives as three 20 ms frames every
    /// 60 ms. The speaker stops for `stall` ms at 3 s (and `late` ms: one
    /// callback that late, then on time). Returns (silence given in ms,
    /// stalls reported).
    fn run_clock(stall: u64, late: u64) -> (u64, Vec<u64>) {
        const MS: usize = 16;
        let mut clock = FarEndClock::new(16_000, 30 * MS);
        let (mut played, mut next_callback, mut read) = (0usize, 0u64, 0usize);
        let mut reported = Vec::new();
        for t in 0..10_000u64 {
            if t == next_callback {
                played += 85 * MS;
                next_callback = t
                    + 85
                    + if t < 3_000 && t + 85 >= 3_000 {
                        stall + late
                    } else {
                        0
                    };
            }
            if t > 0 && t % 60 == 0 {
                for frame in 0..3 {
                    let reference = if frame == 0 { played - read } else { 0 };
                    read = played;
                    clock.gap(reference, 20 * MS);
                    reported.extend(clock.take_stall_ms(16_000));
                }
            }
        }
        (clock.filled() / MS as u64, reported)
    }

    #[test]
    fn the_time_since_a_stall_is_counted_in_capture_samples() {
        let mut clock = FarEndClock::new(16_000, 480);
        // Two windows of a steady speaker: 20 ms of reference per 20 ms frame.
        for _ in 0..100 {
            assert_eq!(clock.gap(320, 320), 0);
        }
        assert_eq!(clock.since_stall(), None);
        // The reference stops for 200 ms: from the third frame on, silence is given.
        let given: usize = (0..10).map(|_| clock.gap(0, 320)).sum();
        assert_eq!(given, 10 * 320);
        assert_eq!(clock.since_stall(), Some(0));
        for _ in 0..50 {
            assert_eq!(clock.gap(320, 320), 0);
        }
        assert_eq!(clock.since_stall(), Some(50 * 320));
    }

    #[test]
    fn a_steady_speaker_is_left_alone() {
        assert_eq!(run_clock(0, 0), (0, vec![]));
        // One callback 25 ms late is jitter, not a stall.
        assert_eq!(run_clock(0, 25), (0, vec![]));
    }

    #[test]
    fn a_stall_is_bridged_with_its_length_of_silence_once() {
        for stall in [100, 150, 400] {
            let (filled, reported) = run_clock(stall, 0);
            // What is left is under the tolerance (30 ms), never more than given.
            assert!(
                filled <= stall && stall - filled < 30,
                "{stall} ms stall: {filled} ms given"
            );
            assert_eq!(reported, vec![filled], "{stall}");
        }
    }
}
