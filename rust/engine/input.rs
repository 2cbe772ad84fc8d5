//! Input audio of a session: decode, resample to 16 kHz, VAD, turn events.
//!
//! All of it is Rust on the caller's thread (a tokio task or an audio
//! callback): no GIL, no allocation per frame once buffers have grown.
//!
//! With a learned end-of-turn model, the VAD's silence rule becomes the
//! ceiling and an [`EndOfTurnPolicy`] decides when a pause ends the turn:
//! once a pause is long enough it asks for a decision ([`TurnInput::Decide`],
//! which the session runs on the model's worker), and the turn ends as soon
//! as the verdict and the silence allow. The soft end, earlier in the pause,
//! starts the speculative STT and LLM.
//!
//! With noise reduction (`audio.input.noise_reduction`), RNNoise cleans the
//! input at its own rate before anything else sees it: the VAD, the turn
//! audio and the push-to-talk buffer all get the denoised signal.

use std::sync::{Arc, Mutex, PoisonError};

use crate::audio::ns::{NoiseSuppressor, NsPreset};
use crate::audio::resample::Resampler;
use crate::vad::{
    Action, CommitReason, EndOfTurnConfig, EndOfTurnPolicy, SileroVad, TurnConfig, VadError,
    VadEvent, VadStream,
};

/// The longest a transcript that sounds unfinished holds a turn the learned
/// model ended, from the end of its speech (ms). The hint is weaker than the
/// model's own "unfinished" (which may hold to the eagerness ceiling): a
/// speaker who stops on "... to the" and then says nothing is answered 1.5 s
/// after, not 4 s.
pub const HINT_HOLD_MS: u64 = 1_500;

/// Input audio rate of the STT stage and the VAD.
pub const STT_RATE: u32 = 16_000;

/// Most push-to-talk audio a session buffers before a commit (5 minutes).
pub const MAX_BUFFER_SAMPLES: usize = STT_RATE as usize * 300;

/// A turn event from the VAD (audio times in ms since the stream began).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnInput {
    /// Speech began.
    SpeechStarted {
        /// Where.
        audio_start_ms: u64,
    },
    /// A short silence: the turn may be ending. Carries the audio so far.
    SoftEnd {
        /// Where.
        audio_ms: u64,
        /// The turn's audio up to here, 16 kHz.
        audio: Vec<f32>,
    },
    /// Speech came back after a soft end.
    SpeechResumed {
        /// Where.
        audio_ms: u64,
    },
    /// The turn ended; carries the utterance.
    SpeechStopped {
        /// Where.
        audio_end_ms: u64,
        /// The utterance with its padding, 16 kHz.
        audio: Vec<f32>,
        /// Set when the learned end of turn ended it (not at its ceiling):
        /// a transcript that sounds unfinished may still hold the turn for
        /// more speech until this input position, ms.
        hold_until_ms: Option<f64>,
    },
    /// The end-of-turn model should judge the turn so far; its answer goes
    /// back through [`Session`](super::Session)'s verdict path with `decision`.
    Decide {
        /// Identifies the request.
        decision: u64,
        /// The turn's audio up to here, 16 kHz.
        audio: Vec<f32>,
    },
}

/// The input side of a session.
pub(crate) struct AudioInput {
    rate: u32,
    vad: Option<(Arc<Mutex<SileroVad>>, VadStream)>,
    /// To 16 kHz when there is no VAD (push-to-talk).
    resampler: Option<Resampler>,
    scratch: Vec<f32>,
    /// Push-to-talk buffer at 16 kHz, since the last commit or clear.
    buffer: Vec<f32>,
    events: Vec<VadEvent>,
    pending_stop: Option<u64>,
    /// Input audio seen, ms.
    position_ms: f64,
    /// The learned end of turn, when the session uses it.
    policy: Option<EndOfTurnPolicy>,
    /// How long a turn the policy ended may still be held, from the end of
    /// its speech (ms), while the turn ends.
    hold_for: Option<u64>,
    /// The hold deadline of the turn that just stopped.
    pending_hold: Option<f64>,
    /// Noise suppression in front of everything, when the session asks.
    ns: Option<NoiseSuppressor>,
    /// The denoised input of the current `feed`.
    denoised: Vec<f32>,
    /// Bursts of speech the guard dropped, as last reported.
    guarded_seen: u64,
}

impl AudioInput {
    /// Input at `rate`; with `vad`, turns are detected with `config`, and
    /// with `end_of_turn` a learned model decides when a pause ends one.
    pub(crate) fn new(
        rate: u32,
        vad: Option<(Arc<Mutex<SileroVad>>, &TurnConfig)>,
        end_of_turn: Option<EndOfTurnConfig>,
    ) -> Result<Self, VadError> {
        let mut turn_config;
        let (vad, policy) = match (vad, end_of_turn) {
            (Some((model, config)), Some(mut eot)) => {
                // The policy ends the turn; the VAD's own end of turn is only
                // the ceiling (the longest a held turn waits).
                eot.silence_ms = config.min_silence_ms as u64;
                eot.max_wait_ms = eot.max_wait_ms.max(eot.silence_ms);
                // The model answers before the silence rule would end the
                // turn, whatever silence the session sets.
                eot.decision_silence_ms = eot.decision_silence_ms.min(eot.silence_ms * 2 / 5);
                turn_config = config.clone();
                turn_config.min_silence_ms = eot.max_wait_ms as f64 + 100.0;
                let policy = EndOfTurnPolicy::new(eot, true)?;
                (Some((model, &turn_config)), Some(policy))
            }
            (vad, _) => (vad, None),
        };
        let resampler = if rate == STT_RATE {
            None
        } else {
            Some(
                Resampler::new(rate, STT_RATE)
                    .map_err(|e| VadError::InvalidInput(e.to_string()))?,
            )
        };
        let vad = match vad {
            Some((model, config)) => {
                // The VAD runs at 16 kHz so its utterances feed STT directly.
                let stream = if rate == STT_RATE {
                    VadStream::new(STT_RATE, config)?
                } else {
                    let r = Resampler::new(rate, STT_RATE)
                        .map_err(|e| VadError::InvalidInput(e.to_string()))?;
                    VadStream::with_resampler(Box::new(r), config)?
                };
                Some((model, stream))
            }
            None => None,
        };
        Ok(Self {
            rate,
            vad,
            resampler,
            scratch: Vec::new(),
            buffer: Vec::new(),
            events: Vec::new(),
            pending_stop: None,
            position_ms: 0.0,
            policy,
            hold_for: None,
            pending_hold: None,
            ns: None,
            denoised: Vec::new(),
            guarded_seen: 0,
        })
    }

    /// Run RNNoise with `preset` on the input from now on (`None`: no
    /// noise reduction). The same preset keeps its suppressor's state.
    pub(crate) fn set_noise_reduction(&mut self, preset: Option<NsPreset>) -> Result<(), VadError> {
        if self.ns.as_ref().map(NoiseSuppressor::preset) == preset {
            return Ok(());
        }
        self.ns = preset
            .map(|p| NoiseSuppressor::new(self.rate, p))
            .transpose()
            .map_err(|e| VadError::InvalidInput(e.to_string()))?;
        Ok(())
    }

    /// The noise reduction running on the input.
    #[cfg(test)]
    pub(crate) fn noise_reduction(&self) -> Option<NsPreset> {
        self.ns.as_ref().map(NoiseSuppressor::preset)
    }

    /// Speech must last `ms` before it starts a turn (0: no guard).
    pub(crate) fn set_speech_guard_ms(&mut self, ms: f64) {
        if let Some((_, stream)) = self.vad.as_mut() {
            stream.set_speech_guard_ms(ms);
        }
    }

    /// A burst of speech the guard dropped since the last call (its length,
    /// ms), if any.
    pub(crate) fn take_guarded_burst(&mut self) -> Option<u64> {
        let (n, ms) = self.vad.as_ref()?.1.guarded_bursts();
        (n > self.guarded_seen).then(|| {
            self.guarded_seen = n;
            ms
        })
    }

    /// Milliseconds of input audio seen.
    pub(crate) fn position_ms(&self) -> f64 {
        self.position_ms
    }

    /// Feed samples at the input rate; push the turn events they complete.
    pub(crate) fn feed(
        &mut self,
        samples: &[f32],
        out: &mut Vec<TurnInput>,
    ) -> Result<(), VadError> {
        let Some(ns) = self.ns.as_mut() else {
            return self.feed_clean(samples, out);
        };
        // The suppressor returns as many samples as it is given (delayed by
        // its latency), so positions and turn times are unchanged.
        let mut clean = std::mem::take(&mut self.denoised);
        clean.resize(samples.len(), 0.0);
        let done = ns
            .process_into(samples, &mut clean)
            .map_err(|e| VadError::InvalidInput(e.to_string()))
            .and_then(|()| self.feed_clean(&clean, out));
        self.denoised = clean;
        done
    }

    fn feed_clean(&mut self, samples: &[f32], out: &mut Vec<TurnInput>) -> Result<(), VadError> {
        self.position_ms += samples.len() as f64 * 1000.0 / f64::from(self.rate);
        let Some((model, stream)) = self.vad.as_mut() else {
            return self.buffer_audio(samples);
        };
        {
            let mut model = model.lock().unwrap_or_else(PoisonError::into_inner);
            stream.feed(&mut model, samples, &mut self.events)?;
        }
        self.turn_events(out);
        // Time passes in a pause: the policy may end the turn or ask again.
        if let Some(policy) = self.policy.as_mut()
            && policy.paused()
        {
            let now = self.vad.as_ref().map_or(0, |(_, s)| s.position_ms());
            let action = policy.tick(now);
            self.act(action, out);
        }
        Ok(())
    }

    /// Turn the VAD's events into turn inputs, consulting the policy.
    fn turn_events(&mut self, out: &mut Vec<TurnInput>) {
        let Some((_, stream)) = self.vad.as_mut() else {
            return;
        };
        let mut events = std::mem::take(&mut self.events);
        let mut action = Action::Wait;
        for ev in events.drain(..) {
            match ev {
                VadEvent::SpeechStarted { audio_start_ms, .. } => {
                    if let Some(p) = self.policy.as_mut() {
                        p.speech();
                    }
                    out.push(TurnInput::SpeechStarted { audio_start_ms });
                }
                VadEvent::SoftEnd { audio_ms } => {
                    out.push(TurnInput::SoftEnd {
                        audio_ms,
                        audio: stream.turn_audio().to_vec(),
                    });
                    if let Some(p) = self.policy.as_mut() {
                        action = p.pause(audio_ms, stream.position_ms());
                    }
                }
                VadEvent::SpeechResumed { audio_ms } => {
                    if let Some(p) = self.policy.as_mut() {
                        p.speech();
                    }
                    action = Action::Wait;
                    out.push(TurnInput::SpeechResumed { audio_ms });
                }
                VadEvent::SpeechStopped {
                    audio_end_ms,
                    speech_end_ms,
                    ..
                } => {
                    if let Some(p) = self.policy.as_mut() {
                        p.reset();
                    }
                    action = Action::Wait;
                    self.pending_stop = Some(audio_end_ms);
                    self.pending_hold = self.hold_for.take().map(|ms| (speech_end_ms + ms) as f64);
                }
                VadEvent::Utterance { audio, .. } => {
                    let audio_end_ms = self.pending_stop.take().unwrap_or_default();
                    out.push(TurnInput::SpeechStopped {
                        audio_end_ms,
                        audio,
                        hold_until_ms: self.pending_hold.take(),
                    });
                }
            }
        }
        self.events = events;
        self.act(action, out);
    }

    /// Do what the policy asks: run the model, or end the turn now.
    fn act(&mut self, action: Action, out: &mut Vec<TurnInput>) {
        let Some((_, stream)) = self.vad.as_mut() else {
            return;
        };
        match action {
            Action::Wait => {}
            Action::Decide { decision } => out.push(TurnInput::Decide {
                decision,
                audio: stream.turn_audio().to_vec(),
            }),
            Action::Commit(reason) => {
                tracing::debug!(reason = reason.as_str(), "end of turn");
                // Ended before its ceiling: the transcript may still hold it.
                self.hold_for = self
                    .policy
                    .as_ref()
                    .filter(|_| reason != CommitReason::MaxWait)
                    .map(|p| p.config().max_wait_ms.min(HINT_HOLD_MS));
                stream.end_turn(&mut self.events);
                self.turn_events(out);
            }
        }
    }

    /// The model's answer to decision `decision` (`None`: it failed); the
    /// turn inputs it leads to.
    pub(crate) fn verdict(
        &mut self,
        decision: u64,
        probability: Option<f32>,
        out: &mut Vec<TurnInput>,
    ) {
        let now = self.vad.as_ref().map_or(0, |(_, s)| s.position_ms());
        let Some(policy) = self.policy.as_mut() else {
            return;
        };
        let action = policy.verdict(decision, probability, now);
        self.act(action, out);
    }

    fn buffer_audio(&mut self, samples: &[f32]) -> Result<(), VadError> {
        let resampled: &[f32] = match self.resampler.as_mut() {
            None => samples,
            Some(r) => {
                let max = r.output_len_max(samples.len());
                if self.scratch.len() < max {
                    self.scratch.resize(max, 0.0);
                }
                let n = r
                    .process_into(samples, &mut self.scratch[..max])
                    .map_err(|e| VadError::InvalidInput(e.to_string()))?;
                &self.scratch[..n]
            }
        };
        if self.buffer.len() + resampled.len() > MAX_BUFFER_SAMPLES {
            return Err(VadError::InvalidInput(
                "the input audio buffer holds 5 minutes; commit or clear it".into(),
            ));
        }
        self.buffer.extend_from_slice(resampled);
        Ok(())
    }

    /// A copy of the open turn's audio so far (16 kHz), empty outside a turn.
    pub(crate) fn turn_audio(&self) -> Vec<f32> {
        self.vad
            .as_ref()
            .map(|(_, stream)| stream.turn_audio().to_vec())
            .unwrap_or_default()
    }

    /// Take the push-to-talk buffer (16 kHz), or the open turn's audio when
    /// the VAD runs.
    pub(crate) fn take_buffer(&mut self) -> Vec<f32> {
        match self.vad.as_mut() {
            Some((_, stream)) => {
                let audio = stream.turn_audio().to_vec();
                stream.reset();
                if let Some(p) = self.policy.as_mut() {
                    p.reset();
                }
                audio
            }
            None => std::mem::take(&mut self.buffer),
        }
    }

    /// Forget buffered audio and any open turn.
    pub(crate) fn clear(&mut self) {
        self.buffer.clear();
        if let Some((_, stream)) = self.vad.as_mut() {
            stream.reset();
        }
        if let Some(p) = self.policy.as_mut() {
            p.reset();
        }
        self.pending_stop = None;
        self.hold_for = None;
        self.pending_hold = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, amp: f32) -> Vec<f32> {
        let mut x = 0x2545_f491_u32;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    /// Push-to-talk input at `rate` fed `audio` in 20 ms pieces; what it buffered.
    fn buffered(rate: u32, preset: Option<NsPreset>, audio: &[f32]) -> Vec<f32> {
        let mut input = AudioInput::new(rate, None, None).unwrap();
        input.set_noise_reduction(preset).unwrap();
        assert_eq!(input.noise_reduction(), preset);
        let mut turns = Vec::new();
        for piece in audio.chunks(rate as usize / 50) {
            input.feed(piece, &mut turns).unwrap();
        }
        assert!((input.position_ms() - audio.len() as f64 * 1000.0 / f64::from(rate)).abs() < 1e-6);
        input.take_buffer()
    }

    fn energy(x: &[f32]) -> f32 {
        x.iter().map(|s| s * s).sum()
    }

    #[test]
    fn noise_reduction_cleans_the_input_before_anything_sees_it() {
        for rate in [16_000, 24_000, 8_000] {
            let audio = noise(rate as usize * 2, 0.05);
            let plain = buffered(rate, None, &audio);
            let near = buffered(rate, Some(NsPreset::NearField), &audio);
            let far = buffered(rate, Some(NsPreset::FarField), &audio);
            // Same length (16 kHz), the last second compared: RNNoise has settled.
            assert_eq!(plain.len(), near.len());
            let tail = plain.len() / 2..;
            let db = |x: &[f32]| {
                10.0 * (energy(&x[tail.clone()]) / energy(&plain[tail.clone()])).log10()
            };
            assert!(db(&near) < -9.0, "{rate}: near_field {} dB", db(&near));
            assert!(
                (-14.0..-5.0).contains(&db(&far)),
                "{rate}: far_field {} dB",
                db(&far)
            );
            assert!(db(&near) < db(&far) - 3.0);
        }
    }

    #[test]
    fn changing_the_preset_keeps_the_buffer_and_off_passes_audio_unchanged() {
        let audio = noise(16_000, 0.05);
        assert_eq!(buffered(16_000, None, &audio), audio);
        let mut input = AudioInput::new(16_000, None, None).unwrap();
        let mut turns = Vec::new();
        input.feed(&audio[..8000], &mut turns).unwrap();
        input
            .set_noise_reduction(Some(NsPreset::NearField))
            .unwrap();
        input.feed(&audio[8000..], &mut turns).unwrap();
        let got = input.take_buffer();
        assert_eq!(got.len(), 16_000);
        assert_eq!(got[..8000], audio[..8000]);
        assert!(energy(&got[12_000..]) < energy(&audio[12_000..]) * 0.1);
    }
}
