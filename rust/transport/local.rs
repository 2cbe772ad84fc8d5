//! `--mode local`: one conversation on this machine's microphone and speaker.
//!
//! Two threads, no server: the microphone thread reads 20 ms frames, removes
//! the speaker's echo (AEC3, reference = what the speaker played) and feeds
//! the session, whose input path runs noise suppression and the VAD; the
//! speaker thread takes the session's events, plays the answer and, when
//! the user barges in, stops playback at once and truncates the assistant
//! item to what was heard. `--block_mic_during_playback` (the original
//! project's remedy) sends silence while the speaker plays, and so turns
//! barge-in off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::devices::{MIC_RATE, Microphone, ModeError, Speaker};
use super::raw::{check_rate, log_event};
use crate::audio::device::StreamInfo;
use crate::engine::{Engine, EngineEvent, Session};
use crate::protocol::SessionDefaults;

/// Settings of local mode.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// Capture device (`None`: the default; a name or an index).
    pub input_device: Option<String>,
    /// Playback device (`None`: the default; a name or an index).
    pub output_device: Option<String>,
    /// Cancel the speaker's echo in the microphone.
    pub aec: bool,
    /// Send silence while the speaker plays (disables barge-in).
    pub block_mic_during_playback: bool,
    /// While the answer plays, speech must last this long to barge in
    /// (0: only the VAD's `min_speech_ms`). Shorter bursts are dropped, not
    /// taken as turns: a cough, a lone word, or echo the canceller let
    /// through while it adapted.
    pub barge_in_min_ms: f64,
    /// Rate of the session's answer (the speaker side resamples).
    pub output_rate: u32,
    /// What the session starts with (the command line's settings).
    pub defaults: SessionDefaults,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            input_device: None,
            output_device: None,
            aec: true,
            block_mic_during_playback: false,
            barge_in_min_ms: DEFAULT_BARGE_IN_MIN_MS,
            output_rate: 24_000,
            defaults: SessionDefaults::default(),
        }
    }
}

/// The default of [`LocalConfig::barge_in_min_ms`]: half a second of speech,
/// as the `LiveKit` agents ask by default before an interruption counts.
pub const DEFAULT_BARGE_IN_MIN_MS: f64 = 500.0;
/// The barge-in minimum for three seconds after the speaker stalls, while
/// echo cancellation re-finds the echo's delay: bursts of echo of up to
/// 1.25 s came through then (PulseAudio, a suspended sink; see
/// `Microphone::echo_unsettled`).
const UNSETTLED_GUARD_MS: f64 = 2000.0;

/// Why local mode stopped by itself (a device failed), if it did.
type Failure = Arc<Mutex<Option<String>>>;

/// Local mode, running: its session and its two threads.
pub struct LocalMode {
    session: Session,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    failure: Failure,
    devices: (StreamInfo, StreamInfo),
}

impl std::fmt::Debug for LocalMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMode")
            .field("session", &self.session)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl LocalMode {
    /// Open the devices and a session on `engine`, and start.
    pub fn start(engine: &Arc<Engine>, config: &LocalConfig) -> Result<Self, ModeError> {
        check_rate(config.output_rate)?;
        let (speaker, tap) = Speaker::open(
            config.output_device.clone(),
            config.output_rate,
            config.aec.then_some(MIC_RATE),
        )?;
        if !(config.barge_in_min_ms.is_finite()
            && (0.0..=10_000.0).contains(&config.barge_in_min_ms))
        {
            return Err(ModeError::InvalidConfig(format!(
                "barge_in_min_ms must be between 0 and 10000, got {}",
                config.barge_in_min_ms
            )));
        }
        let audible = speaker.speaking();
        let blocked = config
            .block_mic_during_playback
            .then(|| Arc::clone(&audible));
        let mic = Microphone::open(config.input_device.clone(), tap, blocked)?;
        let mut session_config = config.defaults.session_config();
        session_config.input_rate = MIC_RATE;
        session_config.output_rate = config.output_rate;
        session_config.turn_detection = engine.has_vad();
        session_config.interrupt_response &= !config.block_mic_during_playback;
        if session_config.transcription.is_none() {
            session_config.transcription = Some(session_config.stt.clone());
        }
        let session = engine.create_session(session_config)?;
        let devices = (mic.info().clone(), speaker.info().clone());
        tracing::info!(
            "{} local mode: microphone {:?} ({} Hz), speaker {:?} ({} Hz), echo cancellation {}",
            session.id(),
            devices.0.device,
            devices.0.device_rate,
            devices.1.device,
            devices.1.device_rate,
            if config.aec { "on" } else { "off" },
        );
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Failure::default();
        let mut mode = Self {
            session,
            stop,
            threads: Vec::new(),
            failure,
            devices,
        };
        let guard = (config.barge_in_min_ms, audible);
        let spawned = mode
            .spawn_microphone(mic, guard)
            .and_then(|()| mode.spawn_speaker(speaker));
        if let Err(e) = spawned {
            mode.stop();
            return Err(e);
        }
        Ok(mode)
    }

    /// The microphone thread; `guard` is the barge-in minimum (ms) and the
    /// speaker's flag that says when it applies.
    fn spawn_microphone(
        &mut self,
        mut mic: Microphone,
        guard: (f64, Arc<AtomicBool>),
    ) -> Result<(), ModeError> {
        let (session, stop, failure) = (
            self.session.clone(),
            self.stop.clone(),
            self.failure.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("s2s-local-mic".into())
            .spawn(move || {
                let (guard_ms, audible) = guard;
                let mut guarded: f64 = 0.0;
                while !stop.load(Ordering::Acquire) {
                    let unsettled = mic.echo_unsettled();
                    match mic.next_frame(Duration::from_millis(100)) {
                        Ok(Some(frame)) => {
                            // The answer is audible (and for its echo's tail
                            // after): only sustained speech barges in, and
                            // longer while the echo canceller re-finds the
                            // echo after the speaker stalled.
                            let now = if guard_ms > 0.0 && audible.load(Ordering::Acquire) {
                                if unsettled {
                                    guard_ms.max(UNSETTLED_GUARD_MS)
                                } else {
                                    guard_ms
                                }
                            } else {
                                0.0
                            };
                            if now.to_bits() != guarded.to_bits() {
                                session.set_speech_guard_ms(now);
                                guarded = now;
                            }
                            if let Err(e) = session.feed_audio(frame) {
                                tracing::warn!("{} input refused: {e}", session.id());
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            fail(&failure, &stop, format!("microphone: {e}"));
                            break;
                        }
                    }
                }
                mic.close();
            })
            .map_err(ModeError::Thread)?;
        self.threads.push(handle);
        Ok(())
    }

    fn spawn_speaker(&mut self, mut speaker: Speaker) -> Result<(), ModeError> {
        let (session, stop, failure) = (
            self.session.clone(),
            self.stop.clone(),
            self.failure.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("s2s-local-speaker".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    // Short waits while audio is queued, so it keeps flowing.
                    let wait = if speaker.busy() { 5 } else { 50 };
                    if let Some(ev) = session.next_event(Some(Duration::from_millis(wait))) {
                        on_event(&session, &mut speaker, &ev);
                    }
                    if let Err(e) = speaker.pump() {
                        fail(&failure, &stop, format!("speaker: {e}"));
                        break;
                    }
                }
                speaker.close();
            })
            .map_err(ModeError::Thread)?;
        self.threads.push(handle);
        Ok(())
    }

    /// The session (for its id, and for tests).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The microphone and the speaker that were opened.
    pub fn devices(&self) -> &(StreamInfo, StreamInfo) {
        &self.devices
    }

    /// Whether it still runs (a failed device stops it).
    pub fn is_running(&self) -> bool {
        !self.stop.load(Ordering::Acquire)
    }

    /// Why it stopped by itself: the device error.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stop: playback cut, both streams closed, the session closed.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a local mode thread panicked");
            }
        }
        self.session.close();
    }
}

impl Drop for LocalMode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fail(failure: &Failure, stop: &AtomicBool, message: String) {
    tracing::error!("local mode stops: {message}");
    failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert(message);
    stop.store(true, Ordering::Release);
}

fn on_event(session: &Session, speaker: &mut Speaker, ev: &EngineEvent) {
    log_event(session.id(), ev);
    match ev {
        EngineEvent::AudioDelta {
            item_id, samples, ..
        } => speaker.play(item_id, samples),
        EngineEvent::SpeechStarted { .. } => {
            if let Some((item_id, heard_ms)) = speaker.interrupt() {
                tracing::info!(
                    "{} barge-in: the user spoke {heard_ms} ms into the answer; playback stopped",
                    session.id()
                );
                // The conversation keeps only the words the user heard.
                if let Err(e) = session.truncate_item(&item_id, 0, heard_ms) {
                    tracing::debug!("{} truncate {item_id}: {e}", session.id());
                }
            }
        }
        EngineEvent::ResponseDone { .. } => speaker.end_of_answer(),
        _ => {}
    }
}
