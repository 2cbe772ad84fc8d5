//! `speech-to-speech talk`: a microphone-and-speaker client for any Realtime server.
//!
//! It connects to `ws://` or `wss://HOST/v1/realtime` (ours, or `OpenAI`'s
//! with an API key), asks for 24 kHz PCM both ways with input transcription,
//! streams the microphone (echo removed by AEC3 against what the speaker
//! played) as `input_audio_buffer.append`, and plays the answer's audio
//! deltas. On `input_audio_buffer.speech_started` it stops playback at once
//! and sends `conversation.item.truncate` with the milliseconds of the item
//! actually played (counted by the output device). Both sides' transcripts
//! come out as [`TalkEvent`]s, which the command prints.
//!
//! Three threads: the network (a tokio runtime of its own), the microphone
//! and the speaker. Audio never passes through Python.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;

use super::devices::{MIC_RATE, Microphone, ModeError, Speaker, spawn_into};
use crate::audio::ns::NsPreset;
use crate::audio::pcm::{f32_to_pcm16, pcm16_to_f32};
use crate::audio::resample::Resampler;

/// The PCM rate `talk` asks the server for, both ways (the protocol's).
pub const TALK_RATE: u32 = 24_000;

/// Settings of the `talk` client.
#[derive(Debug, Clone, PartialEq)]
pub struct TalkConfig {
    /// `ws://` or `wss://` URL of the Realtime endpoint.
    pub url: String,
    /// Sent as `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// Capture device (`None`: the default; a name or an index).
    pub input_device: Option<String>,
    /// Playback device (`None`: the default; a name or an index).
    pub output_device: Option<String>,
    /// Cancel the speaker's echo in the microphone.
    pub aec: bool,
    /// Send silence while the speaker plays (disables barge-in).
    pub block_mic_during_playback: bool,
    /// The server's `audio.input.noise_reduction` (`None`: leave it as is).
    pub noise_reduction: Option<NsPreset>,
    /// `instructions` for the session (`None`: the server's).
    pub instructions: Option<String>,
    /// Output voice (`None`: the server's).
    pub voice: Option<String>,
    /// The input transcription model asked for (the user's words).
    pub transcription_model: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for TalkConfig {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8765/v1/realtime".to_owned(),
            api_key: None,
            input_device: None,
            output_device: None,
            aec: true,
            block_mic_during_playback: false,
            noise_reduction: None,
            instructions: None,
            voice: None,
            transcription_model: "gpt-4o-mini-transcribe".to_owned(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What happened in the conversation, for the user to read.
#[derive(Debug, Clone, PartialEq)]
pub enum TalkEvent {
    /// The server created the session.
    Connected {
        /// The model it reports.
        model: Option<String>,
    },
    /// The user's words, once transcribed.
    UserTranscript {
        /// The transcript.
        text: String,
    },
    /// More of the assistant's spoken words.
    AssistantDelta {
        /// The new text.
        delta: String,
    },
    /// The assistant's answer is complete.
    AssistantDone {
        /// Its whole transcript.
        text: String,
    },
    /// The user barged in: playback stopped and the item was truncated.
    Interrupted {
        /// The assistant item.
        item_id: String,
        /// Milliseconds of it played.
        played_ms: u64,
    },
    /// The server sent an error event; the conversation goes on.
    ServerError {
        /// Its message.
        message: String,
    },
    /// The conversation ended.
    Closed {
        /// Why.
        reason: String,
    },
}

/// What the network thread tells the speaker thread.
enum Play {
    Audio { item_id: String, samples: Vec<f32> },
    EndOfAnswer,
    SpeechStarted,
}

/// A running `talk` session.
pub struct TalkClient {
    cancel: CancellationToken,
    stop: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    events: Mutex<Receiver<TalkEvent>>,
}

impl std::fmt::Debug for TalkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalkClient")
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn connect(config: &TalkConfig) -> Result<(tokio::runtime::Runtime, Socket), ModeError> {
    if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
        return Err(ModeError::InvalidConfig(format!(
            "--url must be a ws:// or wss:// URL, not {:?}",
            config.url
        )));
    }
    // rustls picks its crypto from the process default; make it aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ModeError::InvalidConfig(format!("--url {:?}: {e}", config.url)))?;
    if let Some(key) = &config.api_key {
        let value = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ModeError::InvalidConfig("the API key holds invalid characters".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ModeError::Thread)?;
    // The timer belongs to the runtime: build it inside.
    let connected = runtime.block_on(async {
        tokio::time::timeout(
            config.connect_timeout,
            tokio_tungstenite::connect_async(request),
        )
        .await
    });
    let url = &config.url;
    match connected {
        Ok(Ok((socket, _))) => Ok((runtime, socket)),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Err(ModeError::Connect(format!(
                "{url} refused the connection: HTTP {}{}",
                response.status(),
                if response.status().as_u16() == 401 {
                    " (pass the server's key with --api_key)"
                } else {
                    ""
                }
            )))
        }
        Ok(Err(e)) => Err(ModeError::Connect(format!(
            "could not connect to {url}: {e}"
        ))),
        Err(_) => Err(ModeError::Connect(format!(
            "could not connect to {url}: no answer in {:?}",
            config.connect_timeout
        ))),
    }
}

impl TalkClient {
    /// Connect, open the devices and start talking.
    pub fn start(config: &TalkConfig) -> Result<Self, ModeError> {
        let (runtime, socket) = connect(config)?;
        let (speaker, tap) = Speaker::open(
            config.output_device.clone(),
            TALK_RATE,
            config.aec.then_some(MIC_RATE),
        )?;
        let blocked = config.block_mic_during_playback.then(|| speaker.speaking());
        let mic = Microphone::open(config.input_device.clone(), tap, blocked)?;
        tracing::info!(
            "talk: connected to {}; microphone {:?}, speaker {:?}, echo cancellation {}",
            config.url,
            mic.info().device,
            speaker.info().device,
            if config.aec { "on" } else { "off" }
        );
        let (net_tx, net_rx) = mpsc::channel::<String>(512);
        let (play_tx, play_rx) = std::sync::mpsc::channel();
        let (ev_tx, ev_rx) = std::sync::mpsc::channel();
        let mut client = Self {
            cancel: CancellationToken::new(),
            stop: Arc::new(AtomicBool::new(false)),
            running: Arc::new(AtomicBool::new(true)),
            threads: Vec::new(),
            events: Mutex::new(ev_rx),
        };
        let update = session_update(config).to_string();
        let network = Network {
            net_rx,
            play_tx,
            ev_tx: ev_tx.clone(),
            cancel: client.cancel.clone(),
        };
        let running = Arc::clone(&client.running);
        let spawned = client
            .spawn("s2s-talk-net", move || {
                runtime.block_on(network.run(socket, update));
                running.store(false, Ordering::Release);
            })
            .and_then(|()| client.spawn_microphone(mic, net_tx.clone(), ev_tx.clone()))
            .and_then(|()| client.spawn_speaker(speaker, play_rx, net_tx, ev_tx));
        if let Err(e) = spawned {
            client.stop();
            return Err(e);
        }
        Ok(client)
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ModeError> {
        spawn_into(&mut self.threads, name, f)
    }

    fn spawn_microphone(
        &mut self,
        mut mic: Microphone,
        net: mpsc::Sender<String>,
        ev: Sender<TalkEvent>,
    ) -> Result<(), ModeError> {
        let mut up = Resampler::new(MIC_RATE, TALK_RATE)?;
        let mut resampled = vec![0.0; up.output_len_max(MIC_RATE as usize / 50)];
        let (stop, running) = (Arc::clone(&self.stop), Arc::clone(&self.running));
        self.spawn("s2s-talk-mic", move || {
            let mut dropped = 0u64;
            while !stop.load(Ordering::Acquire) {
                let frame = match mic.next_frame(Duration::from_millis(100)) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = ev.send(TalkEvent::Closed {
                            reason: format!("microphone: {e}"),
                        });
                        running.store(false, Ordering::Release);
                        break;
                    }
                };
                let Ok(n) = up.process_into(frame, &mut resampled) else {
                    continue;
                };
                let append = json!({"type": "input_audio_buffer.append",
                    "audio": BASE64.encode(f32_to_pcm16(&resampled[..n]))});
                match net.try_send(append.to_string()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!("talk: the network is behind; {dropped} frames of microphone dropped");
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            mic.close();
        })
    }

    fn spawn_speaker(
        &mut self,
        mut speaker: Speaker,
        play: Receiver<Play>,
        net: mpsc::Sender<String>,
        ev: Sender<TalkEvent>,
    ) -> Result<(), ModeError> {
        let (stop, running) = (Arc::clone(&self.stop), Arc::clone(&self.running));
        self.spawn("s2s-talk-speaker", move || {
            while !stop.load(Ordering::Acquire) {
                let wait = Duration::from_millis(if speaker.busy() { 5 } else { 50 });
                match play.recv_timeout(wait) {
                    Ok(Play::Audio { item_id, samples }) => speaker.play(&item_id, &samples),
                    Ok(Play::EndOfAnswer) => speaker.end_of_answer(),
                    Ok(Play::SpeechStarted) => {
                        if let Some((item_id, played_ms)) = speaker.interrupt() {
                            let truncate = json!({"type": "conversation.item.truncate",
                                "item_id": item_id, "content_index": 0, "audio_end_ms": played_ms});
                            let _ = net.try_send(truncate.to_string());
                            let _ = ev.send(TalkEvent::Interrupted { item_id, played_ms });
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if let Err(e) = speaker.pump() {
                    let _ = ev.send(TalkEvent::Closed {
                        reason: format!("speaker: {e}"),
                    });
                    running.store(false, Ordering::Release);
                    break;
                }
            }
            speaker.close();
        })
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<TalkEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(timeout)
            .ok()
    }

    /// Whether the conversation goes on (false once the server closed it
    /// or a device failed; the reason is a [`TalkEvent::Closed`]).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire) && !self.stop.load(Ordering::Acquire)
    }

    /// Close the connection, stop playback and both devices.
    pub fn stop(&mut self) {
        self.cancel.cancel();
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a talk thread panicked");
            }
        }
        self.running.store(false, Ordering::Release);
    }
}

impl Drop for TalkClient {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `session.update` that sets up the session: 24 kHz PCM both ways and
/// input transcription, plus what the command line asked for.
fn session_update(c: &TalkConfig) -> Value {
    let pcm = json!({"type": "audio/pcm", "rate": TALK_RATE});
    let mut input = json!({"format": pcm, "transcription": {"model": c.transcription_model}});
    if let Some(p) = c.noise_reduction {
        input["noise_reduction"] = json!({"type": p.as_str()});
    }
    let mut output = json!({"format": pcm});
    if let Some(v) = &c.voice {
        output["voice"] = json!(v);
    }
    let mut session = json!({"type": "realtime", "audio": {"input": input, "output": output}});
    if let Some(i) = &c.instructions {
        session["instructions"] = json!(i);
    }
    json!({"type": "session.update", "session": session})
}

/// The network thread's ends of the channels.
struct Network {
    net_rx: mpsc::Receiver<String>,
    play_tx: Sender<Play>,
    ev_tx: Sender<TalkEvent>,
    cancel: CancellationToken,
}

impl Network {
    async fn run(mut self, mut socket: Socket, update: String) {
        let reason = match socket.send(Message::Text(update.into())).await {
            Ok(()) => self.serve(&mut socket).await,
            Err(e) => format!("connection failed: {e}"),
        };
        tracing::info!("talk: {reason}");
        let _ = self.ev_tx.send(TalkEvent::Closed { reason });
    }

    async fn serve(&mut self, socket: &mut Socket) -> String {
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                    return "stopped".to_owned();
                }
                msg = socket.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.server_event(&text),
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| format!(" ({} {})", f.code, f.reason)).unwrap_or_default();
                        return format!("the server closed the connection{why}");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("connection failed: {e}"),
                    None => return "the server went away".to_owned(),
                },
                out = self.net_rx.recv() => match out {
                    Some(text) => {
                        if let Err(e) = socket.send(Message::Text(text.into())).await {
                            return format!("connection failed: {e}");
                        }
                    }
                    None => return "stopped".to_owned(),
                },
            }
        }
    }

    fn emit(&self, ev: TalkEvent) {
        let _ = self.ev_tx.send(ev);
    }

    fn server_event(&self, text: &str) {
        let Ok(ev) = serde_json::from_str::<Value>(text) else {
            tracing::warn!("talk: the server sent a text frame that is not JSON");
            return;
        };
        let s = |k: &str| {
            ev.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match ev.get("type").and_then(Value::as_str).unwrap_or_default() {
            "session.created" => self.emit(TalkEvent::Connected {
                model: ev
                    .pointer("/session/model")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }),
            // GA and beta names.
            "response.output_audio.delta" | "response.audio.delta" => {
                let samples = BASE64
                    .decode(s("delta"))
                    .ok()
                    .and_then(|pcm| pcm16_to_f32(&pcm).ok());
                if let Some(samples) = samples {
                    let _ = self.play_tx.send(Play::Audio {
                        item_id: s("item_id"),
                        samples,
                    });
                } else {
                    tracing::warn!("talk: an audio delta that is not base64 PCM16");
                }
            }
            "response.done" => {
                let _ = self.play_tx.send(Play::EndOfAnswer);
            }
            "input_audio_buffer.speech_started" => {
                let _ = self.play_tx.send(Play::SpeechStarted);
            }
            "conversation.item.input_audio_transcription.completed" => {
                self.emit(TalkEvent::UserTranscript {
                    text: s("transcript"),
                });
            }
            "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
                self.emit(TalkEvent::AssistantDelta { delta: s("delta") });
            }
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                self.emit(TalkEvent::AssistantDone {
                    text: s("transcript"),
                });
            }
            "error" => self.emit(TalkEvent::ServerError {
                message: ev
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
                    .to_owned(),
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_update_asks_for_pcm_transcription_and_the_options() {
        let mut c = TalkConfig::default();
        let plain = session_update(&c);
        assert_eq!(plain["session"]["type"], "realtime");
        assert_eq!(plain["session"]["audio"]["input"]["format"]["rate"], 24_000);
        assert_eq!(
            plain["session"]["audio"]["input"]["transcription"]["model"],
            "gpt-4o-mini-transcribe"
        );
        assert!(plain["session"].get("instructions").is_none());
        assert!(
            plain["session"]["audio"]["input"]
                .get("noise_reduction")
                .is_none()
        );
        c.noise_reduction = Some(NsPreset::FarField);
        c.instructions = Some("Be brief.".into());
        c.voice = Some("ash".into());
        let set = session_update(&c);
        assert_eq!(
            set["session"]["audio"]["input"]["noise_reduction"],
            json!({"type": "far_field"})
        );
        assert_eq!(set["session"]["instructions"], "Be brief.");
        assert_eq!(set["session"]["audio"]["output"]["voice"], "ash");
    }

    #[test]
    fn a_bad_url_is_refused_before_any_device_opens() {
        let c = TalkConfig {
            url: "http://127.0.0.1:1/v1/realtime".into(),
            ..TalkConfig::default()
        };
        let e = TalkClient::start(&c).unwrap_err();
        assert!(e.to_string().contains("ws:// or wss://"), "{e}");
        let c = TalkConfig {
            url: "ws://127.0.0.1:1/v1/realtime".into(),
            ..TalkConfig::default()
        };
        let e = TalkClient::start(&c).unwrap_err();
        assert!(matches!(e, ModeError::Connect(_)), "{e}");
        assert!(e.to_string().contains("could not connect"), "{e}");
    }
}
