//! Input audio of a session: decode, resample to 16 kHz, VAD, turn events.
//!
//! All of it is Rust on the caller's thread (a tokio task or an audio
//! callback): no GIL, no allocation per frame once buffers have grown.

use std::sync::{Arc, Mutex, PoisonError};

use crate::audio::resample::Resampler;
use crate::vad::{SileroVad, TurnConfig, VadError, VadEvent, VadStream};

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
}

impl AudioInput {
    /// Input at `rate`; with `vad`, turns are detected with `config`.
    pub(crate) fn new(
        rate: u32,
        vad: Option<(Arc<Mutex<SileroVad>>, &TurnConfig)>,
    ) -> Result<Self, VadError> {
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
        self.position_ms += samples.len() as f64 * 1000.0 / f64::from(self.rate);
        let Some((model, stream)) = self.vad.as_mut() else {
            return self.buffer_audio(samples);
        };
        {
            let mut model = model.lock().unwrap_or_else(PoisonError::into_inner);
            stream.feed(&mut model, samples, &mut self.events)?;
        }
        for ev in self.events.drain(..) {
            match ev {
                VadEvent::SpeechStarted { audio_start_ms, .. } => {
                    out.push(TurnInput::SpeechStarted { audio_start_ms });
                }
                VadEvent::SoftEnd { audio_ms } => out.push(TurnInput::SoftEnd {
                    audio_ms,
                    audio: stream.turn_audio().to_vec(),
                }),
                VadEvent::SpeechResumed { audio_ms } => {
                    out.push(TurnInput::SpeechResumed { audio_ms });
                }
                VadEvent::SpeechStopped { audio_end_ms, .. } => {
                    self.pending_stop = Some(audio_end_ms);
                }
                VadEvent::Utterance { audio, .. } => {
                    let audio_end_ms = self.pending_stop.take().unwrap_or_default();
                    out.push(TurnInput::SpeechStopped {
                        audio_end_ms,
                        audio,
                    });
                }
            }
        }
        Ok(())
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
        self.pending_stop = None;
    }
}
