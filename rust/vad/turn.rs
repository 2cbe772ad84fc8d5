//! The turn state machine: per-chunk speech probabilities in, turn events out.
//!
//! Semantics follow the server VAD of the `OpenAI` Realtime API (speech start,
//! speech stop after `silence_duration_ms`, `prefix_padding_ms` of audio kept
//! before the start) with Silero's hysteresis (a lower threshold to leave
//! speech than to enter it), plus an early "soft end" that lets STT start
//! speculatively and a "resumed" event that cancels it.
//!
//! Positions are sample indices since the stream began; the stream layer
//! turns them into milliseconds.

use super::error::VadError;
use super::rate::SampleRate;

/// Silence after which the soft end comes by default (ms): the speculative
/// STT and LLM start there, so every millisecond of it is on the path to the
/// answer. Through the server (`benches/e2e_latency.py`, alternating runs of
/// 20 turns each), 80 ms answered at 890 against 994 ms p50 for 200 ms with
/// Smart Turn, and 50 ms at 583 against 629 ms for 80 (four runs each,
/// pooled; faster in each of the four pairs). It throws away more
/// speculation on the short gaps inside sentences (soft ends followed by
/// more speech over the 87 utterances of `benches/turn_detection.py`: 22 at
/// 200 ms, 41 at 80, 45 at 50).
pub const DEFAULT_SOFT_END_MS: f64 = 50.0;

/// Turn-detection settings. Durations are in milliseconds of input audio.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnConfig {
    /// Probability at or above which a chunk counts as speech.
    pub threshold: f32,
    /// Probability below which a chunk counts as silence once speech has
    /// started. `None` means `max(threshold - 0.15, 0.01)`, as Silero's own
    /// iterator does.
    pub neg_threshold: Option<f32>,
    /// Speech shorter than this is a blip, not a turn.
    pub min_speech_ms: f64,
    /// Silence that ends a turn (Realtime's `silence_duration_ms`).
    pub min_silence_ms: f64,
    /// Audio kept before the detected start and after the end of an
    /// utterance (Realtime's `prefix_padding_ms`).
    pub speech_pad_ms: f64,
    /// Longest turn; a longer one is cut here. `None`: unlimited.
    pub max_speech_ms: Option<f64>,
    /// Silence after which a [`TurnEvent::SoftEnd`] is sent. `None`: never.
    pub soft_end_ms: Option<f64>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_ms: 250.0,
            min_silence_ms: 500.0,
            speech_pad_ms: 300.0,
            max_speech_ms: None,
            soft_end_ms: Some(DEFAULT_SOFT_END_MS),
        }
    }
}

impl TurnConfig {
    /// Check every value; the error names the field that is wrong.
    pub fn validate(&self) -> Result<(), VadError> {
        let bad = |m: String| Err(VadError::InvalidConfig(m));
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return bad(format!(
                "threshold must be in (0, 1), got {}",
                self.threshold
            ));
        }
        let neg = self.deactivation_threshold();
        if !(neg > 0.0 && neg <= self.threshold) {
            return bad(format!(
                "neg_threshold must be in (0, threshold], got {neg}"
            ));
        }
        let durations = [
            ("min_speech_ms", Some(self.min_speech_ms)),
            ("min_silence_ms", Some(self.min_silence_ms)),
            ("speech_pad_ms", Some(self.speech_pad_ms)),
            ("max_speech_ms", self.max_speech_ms),
            ("soft_end_ms", self.soft_end_ms),
        ];
        for (name, value) in durations {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return bad(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        if let Some(max) = self.max_speech_ms
            && max < self.min_speech_ms
        {
            return bad(format!(
                "max_speech_ms ({max}) must be >= min_speech_ms ({})",
                self.min_speech_ms
            ));
        }
        Ok(())
    }

    /// The threshold below which speech turns into silence.
    pub fn deactivation_threshold(&self) -> f32 {
        self.neg_threshold
            .unwrap_or_else(|| (self.threshold - 0.15).max(0.01))
    }
}

/// What the state machine reports. Positions are sample indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// Speech has lasted `min_speech_ms`; it began at `start`.
    SpeechStarted {
        /// First sample of the speech (without padding).
        start: u64,
    },
    /// Silence has lasted `soft_end_ms` since `at`; the turn may be over.
    SoftEnd {
        /// First sample of the silence.
        at: u64,
    },
    /// Speech came back after a soft end, before the turn ended.
    SpeechResumed {
        /// First sample of the new speech.
        at: u64,
    },
    /// The turn is over: silence lasted `min_silence_ms`, the turn hit
    /// `max_speech_ms` (`forced`), or the stream was flushed.
    SpeechStopped {
        /// First sample of the turn's speech.
        start: u64,
        /// One past the last sample of speech.
        end: u64,
        /// True when `max_speech_ms` cut the turn.
        forced: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Above the threshold at `start`, with `voiced` samples of speech
    /// since: not yet enough to be a turn. Dips shorter than `min_speech`
    /// (stops, pauses between syllables) keep the candidate alive.
    Pending {
        start: u64,
        voiced: u64,
        silence_start: Option<u64>,
    },
    Speech {
        start: u64,
        silence_start: Option<u64>,
        soft_sent: bool,
    },
}

/// The turn state machine for one stream.
#[derive(Debug, Clone)]
pub struct TurnDetector {
    threshold: f32,
    neg_threshold: f32,
    min_speech: u64,
    /// Speech needed to start a turn while the guard is up (0: none).
    guard: u64,
    /// Bursts the guard dropped that would have started a turn without it,
    /// and the voiced samples of the last one.
    guarded: (u64, u64),
    min_silence: u64,
    pad: u64,
    max_speech: Option<u64>,
    soft_end: Option<u64>,
    state: State,
    pos: u64,
}

impl TurnDetector {
    /// A detector for audio at `rate`, with `config` validated.
    pub fn new(config: &TurnConfig, rate: SampleRate) -> Result<Self, VadError> {
        config.validate()?;
        Ok(Self {
            threshold: config.threshold,
            neg_threshold: config.deactivation_threshold(),
            min_speech: rate.ms_to_samples(config.min_speech_ms),
            guard: 0,
            guarded: (0, 0),
            min_silence: rate.ms_to_samples(config.min_silence_ms),
            pad: rate.ms_to_samples(config.speech_pad_ms),
            max_speech: config.max_speech_ms.map(|ms| rate.ms_to_samples(ms)),
            soft_end: config.soft_end_ms.map(|ms| rate.ms_to_samples(ms)),
            state: State::Idle,
            pos: 0,
        })
    }

    /// Samples consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Padding in samples kept around an utterance.
    pub fn pad_samples(&self) -> u64 {
        self.pad
    }

    /// True between `SpeechStarted` and `SpeechStopped`.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// The earliest sample a future utterance can still include; audio
    /// before it may be dropped.
    pub fn keep_from(&self) -> u64 {
        let from = match self.state {
            State::Idle => self.pos,
            State::Pending { start, .. } | State::Speech { start, .. } => start,
        };
        from.saturating_sub(self.pad)
    }

    /// While `samples` is above zero, speech must last that long (and at
    /// least `min_speech_ms`) before it starts a turn; shorter bursts are
    /// dropped like blips. Pauses inside the burst are still bridged only up
    /// to `min_speech_ms`, so scattered fragments do not add up. Local mode
    /// raises it while the assistant's own voice plays, so that a residue of
    /// echo the canceller let through cannot interrupt the answer.
    pub fn set_speech_guard(&mut self, samples: u64) {
        self.guard = samples;
    }

    /// How many bursts the speech guard has dropped that would have started
    /// a turn without it, and the voiced samples of the last one.
    pub fn guarded_bursts(&self) -> (u64, u64) {
        self.guarded
    }

    /// Forget everything, as for a new stream.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.pos = 0;
    }

    /// Consume the probability of the next `len` samples, pushing events.
    pub fn push(&mut self, prob: f32, len: usize, events: &mut Vec<TurnEvent>) {
        let t = self.pos;
        let end = t + len as u64;
        self.pos = end;
        match self.state {
            State::Idle => {
                if prob >= self.threshold {
                    self.state = State::Pending {
                        start: t,
                        voiced: len as u64,
                        silence_start: None,
                    };
                    self.promote(events);
                }
            }
            State::Pending {
                start,
                voiced,
                silence_start,
            } => {
                if prob < self.neg_threshold {
                    let since = silence_start.unwrap_or(t);
                    self.state = if end - since >= self.min_speech.max(1) {
                        if voiced >= self.min_speech {
                            self.guarded = (self.guarded.0 + 1, voiced);
                        }
                        State::Idle
                    } else {
                        State::Pending {
                            start,
                            voiced,
                            silence_start: Some(since),
                        }
                    };
                } else {
                    self.state = State::Pending {
                        start,
                        voiced: voiced + len as u64,
                        silence_start: None,
                    };
                    self.promote(events);
                }
            }
            State::Speech {
                start,
                mut silence_start,
                mut soft_sent,
            } => {
                if prob >= self.threshold {
                    if silence_start.take().is_some() && soft_sent {
                        events.push(TurnEvent::SpeechResumed { at: t });
                    }
                    soft_sent = false;
                } else if prob < self.neg_threshold && silence_start.is_none() {
                    silence_start = Some(t);
                }
                if let Some(s) = silence_start {
                    let silent = end - s;
                    if !soft_sent && self.soft_end.is_some_and(|soft| silent >= soft) {
                        events.push(TurnEvent::SoftEnd { at: s });
                        soft_sent = true;
                    }
                    if silent >= self.min_silence {
                        events.push(TurnEvent::SpeechStopped {
                            start,
                            end: s,
                            forced: false,
                        });
                        self.state = State::Idle;
                        return;
                    }
                }
                // The cap counts speech only: a turn already in its closing
                // silence ends by min_silence.
                if silence_start.is_none() && self.max_speech.is_some_and(|max| end - start >= max)
                {
                    events.push(TurnEvent::SpeechStopped {
                        start,
                        end,
                        forced: true,
                    });
                    // Still talking: the next turn starts right here, without
                    // waiting for min_speech again.
                    events.push(TurnEvent::SpeechStarted { start: end });
                    self.state = State::Speech {
                        start: end,
                        silence_start: None,
                        soft_sent: false,
                    };
                    return;
                }
                self.state = State::Speech {
                    start,
                    silence_start,
                    soft_sent,
                };
            }
        }
    }

    /// End of input: close an open turn at the last speech sample.
    pub fn finish(&mut self, events: &mut Vec<TurnEvent>) {
        if let State::Speech {
            start,
            silence_start,
            ..
        } = self.state
        {
            events.push(TurnEvent::SpeechStopped {
                start,
                end: silence_start.unwrap_or(self.pos),
                forced: false,
            });
        }
        self.state = State::Idle;
    }

    fn promote(&mut self, events: &mut Vec<TurnEvent>) {
        if let State::Pending { start, voiced, .. } = self.state
            && voiced >= self.min_speech.max(self.guard)
        {
            events.push(TurnEvent::SpeechStarted { start });
            self.state = State::Speech {
                start,
                silence_start: None,
                soft_sent: false,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 512;

    /// Run a probability sequence (one value per 32 ms chunk at 16 kHz).
    fn run(config: &TurnConfig, probs: &[f32]) -> Vec<TurnEvent> {
        let mut d = TurnDetector::new(config, SampleRate::Hz16000).unwrap();
        let mut ev = Vec::new();
        for &p in probs {
            d.push(p, CHUNK, &mut ev);
        }
        d.finish(&mut ev);
        ev
    }

    fn seq(parts: &[(f32, usize)]) -> Vec<f32> {
        parts
            .iter()
            .flat_map(|&(p, n)| std::iter::repeat_n(p, n))
            .collect()
    }

    fn at(chunk: u64) -> u64 {
        chunk * CHUNK as u64
    }

    #[test]
    fn one_turn_with_soft_end() {
        // 10 silent chunks, 20 speech chunks (640 ms), 30 silent chunks.
        let ev = run(
            &TurnConfig::default(),
            &seq(&[(0.05, 10), (0.9, 20), (0.05, 30)]),
        );
        assert_eq!(
            ev,
            vec![
                TurnEvent::SpeechStarted { start: at(10) },
                TurnEvent::SoftEnd { at: at(30) },
                TurnEvent::SpeechStopped {
                    start: at(10),
                    end: at(30),
                    forced: false
                },
            ]
        );
    }

    #[test]
    fn start_is_reported_after_min_speech() {
        let mut d = TurnDetector::new(&TurnConfig::default(), SampleRate::Hz16000).unwrap();
        let mut ev = Vec::new();
        // 250 ms at 16 kHz is 4000 samples: the 8th chunk (4096) crosses it.
        for i in 0..8 {
            assert!(ev.is_empty(), "started too early at chunk {i}");
            d.push(0.9, CHUNK, &mut ev);
        }
        assert_eq!(ev, vec![TurnEvent::SpeechStarted { start: 0 }]);
    }

    #[test]
    fn blips_shorter_than_min_speech_are_ignored() {
        let ev = run(
            &TurnConfig::default(),
            &seq(&[(0.0, 5), (0.9, 7), (0.0, 20), (0.8, 3), (0.0, 20)]),
        );
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn short_dips_do_not_reset_a_starting_turn() {
        // 5 chunks of speech, a 2-chunk stop consonant, then speech: the
        // turn starts at the first chunk, once 8 voiced chunks are in.
        let ev = run(
            &TurnConfig::default(),
            &seq(&[(0.0, 10), (0.9, 5), (0.0, 2), (0.9, 3), (0.0, 30)]),
        );
        assert_eq!(ev[0], TurnEvent::SpeechStarted { start: at(10) });
        // A dip as long as min_speech (8 chunks) does reset it.
        let ev = run(
            &TurnConfig::default(),
            &seq(&[(0.0, 10), (0.9, 5), (0.0, 8), (0.9, 5), (0.0, 30)]),
        );
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn the_speech_guard_drops_bursts_shorter_than_it() {
        let guarded = |probs: &[f32]| {
            let mut d = TurnDetector::new(&TurnConfig::default(), SampleRate::Hz16000).unwrap();
            // 500 ms: 16 chunks of 32 ms (15.6, rounded up by the sample count).
            d.set_speech_guard(8_000);
            let mut ev = Vec::new();
            for &p in probs {
                d.push(p, CHUNK, &mut ev);
            }
            d.finish(&mut ev);
            ev
        };
        // 12 chunks (384 ms) would start a turn without the guard; with it, nothing.
        let burst = seq(&[(0.0, 5), (0.9, 12), (0.0, 30)]);
        assert!(matches!(
            run(&TurnConfig::default(), &burst)[0],
            TurnEvent::SpeechStarted { .. }
        ));
        assert!(guarded(&burst).is_empty());
        let mut d = TurnDetector::new(&TurnConfig::default(), SampleRate::Hz16000).unwrap();
        d.set_speech_guard(8_000);
        let mut ev = Vec::new();
        for p in &burst {
            d.push(*p, CHUNK, &mut ev);
        }
        assert_eq!(d.guarded_bursts(), (1, at(12)));
        // Fragments split by dips of min_speech do not add up past the guard.
        let scattered = seq(&[
            (0.0, 5),
            (0.9, 7),
            (0.0, 8),
            (0.9, 7),
            (0.0, 8),
            (0.9, 7),
            (0.0, 30),
        ]);
        assert!(guarded(&scattered).is_empty());
        // Sustained speech still starts the turn where it began, once it passes the guard.
        let ev = guarded(&seq(&[(0.0, 5), (0.9, 30), (0.0, 30)]));
        assert_eq!(ev[0], TurnEvent::SpeechStarted { start: at(5) });
        let mut d = TurnDetector::new(&TurnConfig::default(), SampleRate::Hz16000).unwrap();
        d.set_speech_guard(8_000);
        let mut ev = Vec::new();
        for _ in 0..14 {
            d.push(0.9, CHUNK, &mut ev);
        }
        assert!(ev.is_empty(), "{ev:?}");
        // The guard comes down (playback ended): the pending speech starts at once.
        d.set_speech_guard(0);
        d.push(0.9, CHUNK, &mut ev);
        assert_eq!(ev, [TurnEvent::SpeechStarted { start: 0 }]);
    }

    #[test]
    fn stop_needs_min_silence() {
        // 400 ms of silence (12.5 chunks -> 12) does not end a 500 ms-silence turn.
        let ev = run(
            &TurnConfig::default(),
            &seq(&[(0.9, 20), (0.0, 12), (0.9, 20), (0.0, 40)]),
        );
        let stops: Vec<_> = ev
            .iter()
            .filter(|e| matches!(e, TurnEvent::SpeechStopped { .. }))
            .collect();
        assert_eq!(
            stops,
            vec![&TurnEvent::SpeechStopped {
                start: 0,
                end: at(52),
                forced: false
            }]
        );
        // The pause was long enough for a soft end, then speech resumed.
        assert_eq!(ev[1], TurnEvent::SoftEnd { at: at(20) });
        assert_eq!(ev[2], TurnEvent::SpeechResumed { at: at(32) });
    }

    #[test]
    fn hysteresis_keeps_speech_between_thresholds() {
        // 0.4 is below the 0.5 threshold but above 0.35: still speech.
        let ev = run(
            &TurnConfig::default(),
            &seq(&[(0.9, 10), (0.4, 30), (0.9, 5), (0.0, 20)]),
        );
        assert_eq!(
            ev,
            vec![
                TurnEvent::SpeechStarted { start: 0 },
                TurnEvent::SoftEnd { at: at(45) },
                TurnEvent::SpeechStopped {
                    start: 0,
                    end: at(45),
                    forced: false
                },
            ]
        );
        // Never above the threshold: never a turn.
        assert!(run(&TurnConfig::default(), &seq(&[(0.45, 100)])).is_empty());
    }

    #[test]
    fn middle_probabilities_do_not_cancel_silence() {
        // Silence starts at 0.1, then 0.4 (between thresholds) keeps counting.
        let ev = run(
            &TurnConfig::default(),
            &seq(&[(0.9, 10), (0.1, 5), (0.4, 20)]),
        );
        assert!(ev.contains(&TurnEvent::SpeechStopped {
            start: 0,
            end: at(10),
            forced: false
        }));
    }

    #[test]
    fn max_speech_cuts_and_restarts() {
        let config = TurnConfig {
            max_speech_ms: Some(1000.0),
            ..TurnConfig::default()
        };
        // 2 s of speech: cut at 1000 ms (16000 samples -> chunk 32 ends at 16384).
        let ev = run(&config, &seq(&[(0.9, 62), (0.0, 20)]));
        assert_eq!(
            ev,
            vec![
                TurnEvent::SpeechStarted { start: 0 },
                TurnEvent::SpeechStopped {
                    start: 0,
                    end: at(32),
                    forced: true
                },
                TurnEvent::SpeechStarted { start: at(32) },
                TurnEvent::SoftEnd { at: at(62) },
                TurnEvent::SpeechStopped {
                    start: at(32),
                    end: at(62),
                    forced: false
                },
            ]
        );
    }

    #[test]
    fn flush_closes_an_open_turn() {
        let ev = run(&TurnConfig::default(), &seq(&[(0.9, 20)]));
        assert_eq!(
            ev.last(),
            Some(&TurnEvent::SpeechStopped {
                start: 0,
                end: at(20),
                forced: false
            })
        );
    }

    #[test]
    fn soft_end_can_be_disabled() {
        let config = TurnConfig {
            soft_end_ms: None,
            ..TurnConfig::default()
        };
        let ev = run(&config, &seq(&[(0.9, 20), (0.0, 30)]));
        assert!(!ev.iter().any(|e| matches!(e, TurnEvent::SoftEnd { .. })));
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn keep_from_covers_the_pad() {
        let mut d = TurnDetector::new(&TurnConfig::default(), SampleRate::Hz16000).unwrap();
        let mut ev = Vec::new();
        for _ in 0..20 {
            d.push(0.0, CHUNK, &mut ev);
        }
        assert_eq!(d.keep_from(), at(20) - 4800);
        d.push(0.9, CHUNK, &mut ev);
        assert_eq!(d.keep_from(), at(20) - 4800);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        for config in [
            TurnConfig {
                threshold: 1.5,
                ..TurnConfig::default()
            },
            TurnConfig {
                min_silence_ms: -1.0,
                ..TurnConfig::default()
            },
            TurnConfig {
                max_speech_ms: Some(f64::NAN),
                ..TurnConfig::default()
            },
            TurnConfig {
                neg_threshold: Some(0.9),
                ..TurnConfig::default()
            },
            TurnConfig {
                max_speech_ms: Some(100.0),
                ..TurnConfig::default()
            },
        ] {
            let err = TurnDetector::new(&config, SampleRate::Hz16000).unwrap_err();
            assert!(matches!(err, VadError::InvalidConfig(_)), "{err}");
        }
    }

    #[test]
    fn eight_khz_uses_its_own_sample_counts() {
        let mut d = TurnDetector::new(&TurnConfig::default(), SampleRate::Hz8000).unwrap();
        let mut ev = Vec::new();
        for _ in 0..8 {
            d.push(0.9, 256, &mut ev);
        }
        assert_eq!(ev, vec![TurnEvent::SpeechStarted { start: 0 }]);
    }
}
