//! One audio stream through the VAD: chunking, model state, turn events and
//! utterance audio; and [`feed_batch`], which runs many streams as one batch.

use super::error::VadError;
use super::rate::SampleRate;
use super::silero::SileroVad;
use super::state::SileroState;
use super::turn::{TurnConfig, TurnDetector, TurnEvent};

/// How far back (in chunks) the end of a turn may be moved by
/// [`VadStream::refine_end`]: Silero's probability falls one to three chunks
/// after the speech does.
const REFINE_CHUNKS: u64 = 4;
/// A 10 ms frame counts as speech when its energy is this many times the
/// noise floor measured in the closing silence (6 dB).
const REFINE_RATIO: f64 = 4.0;

/// Drop consumed audio only once this much has piled up, so that trimming
/// (a memmove) happens about once a second, not once a chunk.
const TRIM_SAMPLES: u64 = 16_384;

/// Converts input audio to a rate the model runs at (8 or 16 kHz).
///
/// The streaming resampler implements this through a small adapter; the VAD
/// needs nothing more than `process_into`.
pub trait FrameResampler: Send + Sync {
    /// The rate of the audio given to [`VadStream::feed`].
    fn input_rate(&self) -> u32;
    /// The rate written to `output`; must be 8000 or 16000.
    fn output_rate(&self) -> u32;
    /// Largest output `process_into` may write for `input_len` samples.
    fn max_output_len(&self, input_len: usize) -> usize;
    /// Resample `input` into `output`, returning how many samples were written.
    fn process_into(&mut self, input: &[f32], output: &mut [f32]) -> Result<usize, VadError>;
    /// Output samples the resampler holds back (its filter's look-ahead).
    fn delay(&self) -> usize {
        0
    }
}

impl FrameResampler for crate::audio::resample::Resampler {
    fn input_rate(&self) -> u32 {
        crate::audio::resample::Resampler::input_rate(self)
    }
    fn output_rate(&self) -> u32 {
        crate::audio::resample::Resampler::output_rate(self)
    }
    fn max_output_len(&self, input_len: usize) -> usize {
        self.output_len_max(input_len)
    }
    fn process_into(&mut self, input: &[f32], output: &mut [f32]) -> Result<usize, VadError> {
        crate::audio::resample::Resampler::process_into(self, input, output)
            .map_err(|e| VadError::InvalidInput(e.to_string()))
    }
    fn delay(&self) -> usize {
        crate::audio::resample::Resampler::delay(self).ceil() as usize
    }
}

/// What a stream reports. Times are milliseconds of input audio since the
/// stream began (or was reset).
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// A turn began. As in the Realtime API, `audio_start_ms` includes the
    /// prefix padding; `speech_start_ms` is where speech was detected.
    SpeechStarted {
        /// Start of the audio that belongs to the turn (padding included).
        audio_start_ms: u64,
        /// Start of the speech itself.
        speech_start_ms: u64,
    },
    /// Silence for `soft_end_ms`: the turn may be over; STT may start.
    SoftEnd {
        /// Where the silence began.
        audio_ms: u64,
    },
    /// Speech came back after a soft end: speculative work is stale.
    SpeechResumed {
        /// Where the speech came back.
        audio_ms: u64,
    },
    /// The turn ended. As in the Realtime API, `audio_end_ms` is the audio
    /// consumed when the end was decided (it includes the closing silence);
    /// `speech_end_ms` is where speech ended.
    SpeechStopped {
        /// Audio consumed when the turn ended.
        audio_end_ms: u64,
        /// End of the speech itself.
        speech_end_ms: u64,
        /// True when `max_speech_ms` cut the turn.
        forced: bool,
    },
    /// The committed audio of a turn, padding included; follows `SpeechStopped`.
    Utterance {
        /// Samples at the model rate.
        audio: Vec<f32>,
        /// Where `audio` starts.
        start_ms: u64,
        /// Where `audio` ends.
        end_ms: u64,
    },
}

/// The VAD state of one stream. The model is shared and passed in per call.
pub struct VadStream {
    rate: SampleRate,
    silero: SileroState,
    turn: TurnDetector,
    /// Audio from sample `history_start` on: what a coming utterance may
    /// still need, plus what has not been run through the model yet.
    history: Vec<f32>,
    history_start: u64,
    /// Start (with padding) of the open turn.
    utterance_start: u64,
    /// End of the last utterance: the next one never overlaps it.
    last_utterance_end: u64,
    last_probability: f32,
    resampler: Option<Box<dyn FrameResampler>>,
    resampled: Vec<f32>,
    turn_events: Vec<TurnEvent>,
}

impl std::fmt::Debug for VadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VadStream")
            .field("rate", &self.rate)
            .field("position", &self.turn.position())
            .field("in_speech", &self.turn.in_speech())
            .finish_non_exhaustive()
    }
}

impl VadStream {
    /// A stream of audio at `sample_rate` (8000 or 16000).
    pub fn new(sample_rate: u32, config: &TurnConfig) -> Result<Self, VadError> {
        let rate = SampleRate::from_hz(sample_rate)?;
        let turn = TurnDetector::new(config, rate)?;
        let capacity = (turn.pad_samples() as usize + rate.chunk_len()) * 2 + TRIM_SAMPLES as usize;
        Ok(Self {
            rate,
            silero: SileroState::new(rate),
            turn,
            history: Vec::with_capacity(capacity),
            history_start: 0,
            utterance_start: 0,
            last_utterance_end: 0,
            last_probability: 0.0,
            resampler: None,
            resampled: Vec::new(),
            turn_events: Vec::with_capacity(4),
        })
    }

    /// A stream of audio at any supported rate: 8 and 16 kHz run natively,
    /// the others (22.05, 24, 44.1, 48 kHz) through the streaming resampler
    /// to 16 kHz.
    pub fn for_rate(sample_rate: u32, config: &TurnConfig) -> Result<Self, VadError> {
        if SampleRate::from_hz(sample_rate).is_ok() {
            return Self::new(sample_rate, config);
        }
        let resampler = crate::audio::resample::Resampler::new(sample_rate, 16_000)
            .map_err(|_| VadError::UnsupportedSampleRate { rate: sample_rate })?;
        Self::with_resampler(Box::new(resampler), config)
    }

    /// A stream whose input is converted by `resampler` first.
    ///
    /// The resampler holds back the last few samples of every call until
    /// more input comes (2.8 ms from 24 kHz). The stream starts with that
    /// many samples of silence, so a window is complete as soon as the input
    /// covering its time has arrived: without them, a window ending where a
    /// 20 ms append ends would wait for the next append (20 ms later). The
    /// audio the model sees is late by that delay; the times reported are
    /// those of the input consumed.
    pub fn with_resampler(
        resampler: Box<dyn FrameResampler>,
        config: &TurnConfig,
    ) -> Result<Self, VadError> {
        let mut stream = Self::new(resampler.output_rate(), config)?;
        stream.history.resize(resampler.delay(), 0.0);
        stream.resampler = Some(resampler);
        Ok(stream)
    }

    /// The rate the model sees.
    pub fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    /// Milliseconds of audio run through the model.
    pub fn position_ms(&self) -> u64 {
        self.rate.samples_to_ms(self.turn.position())
    }

    /// True inside a turn.
    pub fn in_speech(&self) -> bool {
        self.turn.in_speech()
    }

    /// Speech must last `ms` before it starts a turn (0: only
    /// `min_speech_ms`); see [`TurnDetector::set_speech_guard`].
    pub fn set_speech_guard_ms(&mut self, ms: f64) {
        self.turn.set_speech_guard(self.rate.ms_to_samples(ms));
    }

    /// Bursts the speech guard dropped (that would have been turns without
    /// it), and how long the last one was, ms.
    pub fn guarded_bursts(&self) -> (u64, u64) {
        let (n, last) = self.turn.guarded_bursts();
        (n, self.rate.samples_to_ms(last))
    }

    /// Probability of the last chunk run through the model.
    pub fn last_probability(&self) -> f32 {
        self.last_probability
    }

    /// The open turn's audio so far, from its padded start to the last sample
    /// the model has seen, at the model rate (empty outside a turn). The
    /// engine transcribes it speculatively at a soft end.
    pub fn turn_audio(&self) -> &[f32] {
        if !self.turn.in_speech() {
            return &[];
        }
        let from = self.utterance_start.max(self.history_start) - self.history_start;
        let to = self.turn.position().saturating_sub(self.history_start);
        let to = (to as usize).min(self.history.len());
        self.history.get(from as usize..to).unwrap_or(&[])
    }

    /// Forget all audio and state; times start again at 0.
    pub fn reset(&mut self) {
        self.silero.reset();
        self.turn.reset();
        self.history.clear();
        self.history_start = 0;
        self.utterance_start = 0;
        self.last_utterance_end = 0;
        self.last_probability = 0.0;
    }

    /// Feed audio; run every full chunk through `vad`; push the events.
    pub fn feed(
        &mut self,
        vad: &mut SileroVad,
        samples: &[f32],
        events: &mut Vec<VadEvent>,
    ) -> Result<(), VadError> {
        self.append(samples)?;
        while self.ready() {
            let n = self.rate.chunk_len();
            let (state, chunk) = self.next_chunk();
            let prob = vad.process(state, chunk)?;
            self.apply(prob, n, events);
        }
        Ok(())
    }

    /// End the open turn now (an end-of-turn decision made outside the
    /// VAD): `SpeechStopped` and the `Utterance` follow as if its silence had
    /// run out. The model state and the audio history stay, so the next turn
    /// starts as it would have. Nothing happens outside a turn.
    pub fn end_turn(&mut self, events: &mut Vec<VadEvent>) {
        self.turn.finish(&mut self.turn_events);
        self.emit(events);
    }

    /// End of input: run what is buffered (zero-padded to a chunk) and close
    /// an open turn.
    pub fn flush(
        &mut self,
        vad: &mut SileroVad,
        events: &mut Vec<VadEvent>,
    ) -> Result<(), VadError> {
        let n = self.rate.chunk_len();
        let left = self.buffered();
        if left > 0 {
            let off = (self.turn.position() - self.history_start) as usize;
            let mut chunk = vec![0.0; n];
            chunk[..left].copy_from_slice(&self.history[off..off + left]);
            let prob = vad.process(&mut self.silero, &chunk)?;
            self.apply(prob, left, events);
        }
        self.turn.finish(&mut self.turn_events);
        self.emit(events);
        Ok(())
    }

    fn append(&mut self, samples: &[f32]) -> Result<(), VadError> {
        if let Some(resampler) = self.resampler.as_mut() {
            let max = resampler.max_output_len(samples.len());
            if self.resampled.len() < max {
                self.resampled.resize(max, 0.0);
            }
            let written = resampler.process_into(samples, &mut self.resampled[..max])?;
            self.history.extend_from_slice(&self.resampled[..written]);
        } else {
            self.history.extend_from_slice(samples);
        }
        Ok(())
    }

    /// Samples fed but not yet run through the model.
    fn buffered(&self) -> usize {
        (self.history_start + self.history.len() as u64 - self.turn.position()) as usize
    }

    fn ready(&self) -> bool {
        self.buffered() >= self.rate.chunk_len()
    }

    /// The model state and the next full chunk (call only when `ready`).
    fn next_chunk(&mut self) -> (&mut SileroState, &[f32]) {
        let off = (self.turn.position() - self.history_start) as usize;
        let n = self.rate.chunk_len();
        (&mut self.silero, &self.history[off..off + n])
    }

    /// Take the model's verdict on the next `len` samples.
    fn apply(&mut self, prob: f32, len: usize, events: &mut Vec<VadEvent>) {
        self.last_probability = prob;
        self.turn.push(prob, len, &mut self.turn_events);
        self.emit(events);
        let keep = self.turn.keep_from().max(self.last_utterance_end);
        if keep >= self.history_start + TRIM_SAMPLES {
            self.history.drain(..(keep - self.history_start) as usize);
            self.history_start = keep;
        }
    }

    fn emit(&mut self, events: &mut Vec<VadEvent>) {
        let rate = self.rate;
        let ms = |s: u64| rate.samples_to_ms(s);
        // Taken out and put back so its capacity is reused.
        let mut turn_events = std::mem::take(&mut self.turn_events);
        for ev in turn_events.drain(..) {
            match ev {
                TurnEvent::SpeechStarted { start } => {
                    let padded = start
                        .saturating_sub(self.turn.pad_samples())
                        .max(self.last_utterance_end)
                        .max(self.history_start);
                    self.utterance_start = padded;
                    events.push(VadEvent::SpeechStarted {
                        audio_start_ms: ms(padded),
                        speech_start_ms: ms(start),
                    });
                }
                TurnEvent::SoftEnd { at } => events.push(VadEvent::SoftEnd { audio_ms: ms(at) }),
                TurnEvent::SpeechResumed { at } => {
                    events.push(VadEvent::SpeechResumed { audio_ms: ms(at) });
                }
                TurnEvent::SpeechStopped { start, end, forced } => {
                    let pos = self.turn.position();
                    let end = if forced {
                        end
                    } else {
                        self.refine_end(start, end)
                    };
                    let until = if forced {
                        end
                    } else {
                        (end + self.turn.pad_samples()).min(pos)
                    };
                    let from = (self.utterance_start - self.history_start) as usize;
                    let to = (until - self.history_start) as usize;
                    events.push(VadEvent::SpeechStopped {
                        audio_end_ms: ms(pos),
                        speech_end_ms: ms(end),
                        forced,
                    });
                    events.push(VadEvent::Utterance {
                        audio: self.history[from..to].to_vec(),
                        start_ms: ms(self.utterance_start),
                        end_ms: ms(until),
                    });
                    self.last_utterance_end = until;
                }
            }
        }
        self.turn_events = turn_events;
    }
}

impl VadStream {
    /// Move the end of a turn back to the last 10 ms frame that stands out
    /// from the noise floor of the silence after it. The model's probability
    /// lags the end of speech by up to ~100 ms; the audio on both sides is at
    /// hand, so the boundary handed to STT can be sharper. Only ever moves
    /// the end earlier, by at most [`REFINE_CHUNKS`] chunks.
    fn refine_end(&self, start: u64, end: u64) -> u64 {
        let frame = u64::from(self.rate.hz() / 100);
        let pos = self.turn.position();
        let from = end
            .saturating_sub(REFINE_CHUNKS * self.rate.chunk_len() as u64)
            .max(start)
            .max(self.history_start);
        if pos < end + frame || end < from + frame {
            return end;
        }
        let energy = |a: u64| -> f64 {
            let i = (a - self.history_start) as usize;
            let f = &self.history[i..i + frame as usize];
            f.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / frame as f64
        };
        let mut floor: Vec<f64> = (0..(pos - end) / frame)
            .map(|k| energy(end + k * frame))
            .collect();
        floor.sort_by(f64::total_cmp);
        let limit = floor[floor.len() / 2] * REFINE_RATIO + 1e-10;
        let mut a = end - frame;
        loop {
            if energy(a) > limit {
                return a + frame;
            }
            if a < from + frame {
                return from.max(a);
            }
            a -= frame;
        }
    }
}

/// Feed `inputs[i]` to `streams[i]` and run every ready chunk, batching
/// across streams: each round runs one chunk of every stream that has one, in
/// one model call per sample rate. Events of stream `i` go to `events[i]`.
pub fn feed_batch(
    vad: &mut SileroVad,
    streams: &mut [&mut VadStream],
    inputs: &[&[f32]],
    events: &mut [Vec<VadEvent>],
) -> Result<(), VadError> {
    if inputs.len() != streams.len() || events.len() != streams.len() {
        return Err(VadError::InvalidInput(format!(
            "{} streams, {} inputs and {} event lists: they must match",
            streams.len(),
            inputs.len(),
            events.len()
        )));
    }
    for (stream, input) in streams.iter_mut().zip(inputs) {
        stream.append(input)?;
    }
    let mut probs = Vec::with_capacity(streams.len());
    let mut ready = Vec::with_capacity(streams.len());
    loop {
        let mut ran = false;
        for rate in [SampleRate::Hz16000, SampleRate::Hz8000] {
            ready.clear();
            ready.extend(
                streams
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.rate == rate && s.ready())
                    .map(|(i, _)| i),
            );
            if ready.is_empty() {
                continue;
            }
            ran = true;
            probs.clear();
            probs.resize(ready.len(), 0.0);
            {
                // Two small Vecs of borrows per batch (not per stream): the
                // borrows cannot outlive this round, so they cannot be kept.
                let mut states = Vec::with_capacity(ready.len());
                let mut chunks = Vec::with_capacity(ready.len());
                let mut want = ready.iter().peekable();
                for (i, stream) in streams.iter_mut().enumerate() {
                    if want.peek() == Some(&&i) {
                        want.next();
                        let (state, chunk) = stream.next_chunk();
                        states.push(state);
                        chunks.push(chunk);
                    }
                }
                vad.process_batch(&mut states, &chunks, &mut probs)?;
            }
            for (&i, &prob) in ready.iter().zip(&probs) {
                streams[i].apply(prob, rate.chunk_len(), &mut events[i]);
            }
        }
        if !ran {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Decimate2;

    impl FrameResampler for Decimate2 {
        fn input_rate(&self) -> u32 {
            32000
        }
        fn output_rate(&self) -> u32 {
            16000
        }
        fn max_output_len(&self, input_len: usize) -> usize {
            input_len / 2
        }
        fn process_into(&mut self, input: &[f32], output: &mut [f32]) -> Result<usize, VadError> {
            for (o, pair) in output.iter_mut().zip(input.chunks_exact(2)) {
                *o = pair[0];
            }
            Ok(input.len() / 2)
        }
    }

    #[test]
    fn end_is_refined_to_the_last_loud_frame() {
        // Speech until 4000 samples (250 ms), then quiet noise; the model is
        // told speech lasted until 4608 (a late drop, as Silero's can be).
        let mut s = VadStream::new(16000, &TurnConfig::default()).unwrap();
        let audio: Vec<f32> = (0..16_000)
            .map(|i| {
                if i < 4000 {
                    0.5
                } else {
                    0.001 * if i % 2 == 0 { 1.0 } else { -1.0 }
                }
            })
            .collect();
        s.append(&audio).unwrap();
        s.turn.push(0.9, 4608, &mut Vec::new());
        s.turn.push(0.0, 16_000 - 4608, &mut Vec::new());
        // Within one 10 ms frame of the true end.
        let end = s.refine_end(0, 4608);
        assert!((4000..4160).contains(&end), "{end}");
        // Never earlier than REFINE_CHUNKS chunks, never later than given.
        assert_eq!(s.refine_end(0, 3000), 3000);
        let flat = VadStream::new(16000, &TurnConfig::default()).unwrap();
        assert_eq!(flat.refine_end(0, 0), 0);
    }

    #[test]
    fn rejects_unsupported_rates() {
        for rate in [0, 11025, 22050, 44100, 48000] {
            let err = VadStream::new(rate, &TurnConfig::default()).unwrap_err();
            assert_eq!(err, VadError::UnsupportedSampleRate { rate });
            assert!(err.to_string().contains("8000 or 16000"));
        }
    }

    #[test]
    fn a_resampler_plugs_in_other_rates() {
        let mut s = VadStream::with_resampler(Box::new(Decimate2), &TurnConfig::default()).unwrap();
        assert_eq!(s.sample_rate(), SampleRate::Hz16000);
        s.append(&[0.5; 2048]).unwrap();
        assert_eq!(s.buffered(), 1024);
        assert!(s.ready());
    }

    #[test]
    fn a_window_is_ready_when_the_input_covering_it_has_come() {
        // 24 kHz in 20 ms appends: after k appends, 320 * k samples at 16 kHz
        // are due, so every window ending there must be ready, although the
        // resampler holds back the last 2.8 ms of each append.
        let r = crate::audio::resample::Resampler::new(24_000, 16_000).unwrap();
        let mut s = VadStream::with_resampler(Box::new(r), &TurnConfig::default()).unwrap();
        for k in 1..=64_u64 {
            s.append(&[0.1; 480]).unwrap();
            let due = 320 * k;
            let have = s.history_start + s.history.len() as u64;
            assert!(
                have >= due && have <= due + 1,
                "after {k} appends: {have} samples, {due} due"
            );
        }
    }

    #[test]
    fn end_turn_closes_the_open_turn_with_its_padded_audio() {
        let mut s = VadStream::new(16000, &TurnConfig::default()).unwrap();
        let n = 512;
        let mut events = Vec::new();
        // 0.5 s silence, 1 s speech, 0.25 s silence: a pause, not yet the end.
        for i in 0..55 {
            let speech = (16..47).contains(&i);
            s.append(&vec![if speech { 0.5 } else { 0.0 }; n]).unwrap();
            s.apply(if speech { 0.9 } else { 0.01 }, n, &mut events);
        }
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, VadEvent::SpeechStopped { .. }))
        );
        assert!(s.in_speech());
        events.clear();
        s.end_turn(&mut events);
        assert!(!s.in_speech());
        assert!(matches!(
            events[0],
            VadEvent::SpeechStopped { forced: false, .. }
        ));
        let VadEvent::Utterance { audio, .. } = &events[1] else {
            panic!("{events:?}")
        };
        // The speech and its padding, not the whole history.
        assert!(
            audio.len() > 31 * n && audio.len() < 50 * n,
            "{}",
            audio.len()
        );
        // Outside a turn it does nothing.
        events.clear();
        s.end_turn(&mut events);
        assert!(events.is_empty());
    }

    #[test]
    fn utterance_audio_covers_padding_and_trims_history() {
        // Drive the stream by hand with probabilities, no model needed.
        let mut s = VadStream::new(16000, &TurnConfig::default()).unwrap();
        let n = 512;
        let mut events = Vec::new();
        let mut sample = 0.0_f32;
        // Speech samples hold their 1-based index; silence is digital zero.
        let mut chunk = |speech: bool| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    sample += 1.0;
                    if speech { sample } else { 0.0 }
                })
                .collect()
        };
        for i in 0..200 {
            // 3.2 s silence, 1.6 s speech, then silence.
            let speech = (100..150).contains(&i);
            s.append(&chunk(speech)).unwrap();
            s.apply(if speech { 0.9 } else { 0.01 }, n, &mut events);
        }
        assert!(
            s.history.len() < 40_000,
            "history not trimmed: {}",
            s.history.len()
        );
        let utt = events
            .iter()
            .find_map(|e| match e {
                VadEvent::Utterance {
                    audio,
                    start_ms,
                    end_ms,
                } => Some((audio.clone(), *start_ms, *end_ms)),
                _ => None,
            })
            .unwrap();
        // Speech 100*32 = 3200 ms to 4800 ms, padded by 300 ms each side.
        assert_eq!((utt.1, utt.2), (2900, 5100));
        assert_eq!(utt.0.len(), 2200 * 16);
        // 300 ms of padding (zeros), then the speech from its first sample.
        assert!(utt.0[..300 * 16].iter().all(|&x| x.to_bits() == 0));
        assert_eq!(
            utt.0[300 * 16].to_bits(),
            ((3200 * 16 + 1) as f32).to_bits()
        );
        assert!(matches!(
            events[0],
            VadEvent::SpeechStarted {
                audio_start_ms: 2900,
                speech_start_ms: 3200
            }
        ));
    }
}
