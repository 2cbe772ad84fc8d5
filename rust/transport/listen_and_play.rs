//! The socket mode's client (`listen_and_play`): microphone to one TCP connection, the other to the speaker.
//!
//! It speaks the original project's protocol (see [`super::socket`]): raw
//! int16 mono PCM at `send_rate` to `send_port`, and raw int16 mono PCM at
//! `recv_rate` back from `recv_port`, played as it arrives. The microphone
//! passes through the echo canceller first (on by default), so the agent's
//! voice from the speaker does not interrupt it; with
//! `block_mic_during_playback` it sends silence while the answer plays, as
//! the original client did.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::devices::{MIC_RATE, Microphone, ModeError, Speaker, spawn_into};
use super::raw::{Pcm16Stream, check_rate};
use super::socket::{DEFAULT_RECV_PORT, DEFAULT_SEND_PORT, DEFAULT_SOCKET_RATE};
use crate::audio::pcm::f32_to_pcm16;
use crate::audio::resample::Resampler;

/// Silence from the server that ends an answer (its chunks come at least
/// this often while it speaks).
const ANSWER_GAP: Duration = Duration::from_millis(400);

/// Settings of the `listen_and_play` client (the original's flags, plus devices).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenAndPlayConfig {
    /// The server's host.
    pub host: String,
    /// Where the microphone goes.
    pub send_port: u16,
    /// Where the answer comes from.
    pub recv_port: u16,
    /// Rate of the PCM sent.
    pub send_rate: u32,
    /// Rate of the PCM received.
    pub recv_rate: u32,
    /// Capture device (`None`: the default).
    pub input_device: Option<String>,
    /// Playback device (`None`: the default).
    pub output_device: Option<String>,
    /// Cancel the speaker's echo in the microphone.
    pub aec: bool,
    /// Send silence while the answer plays.
    pub block_mic_during_playback: bool,
}

impl Default for ListenAndPlayConfig {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            send_port: DEFAULT_SEND_PORT,
            recv_port: DEFAULT_RECV_PORT,
            send_rate: DEFAULT_SOCKET_RATE,
            recv_rate: DEFAULT_SOCKET_RATE,
            input_device: None,
            output_device: None,
            aec: true,
            block_mic_during_playback: false,
        }
    }
}

/// A running `listen_and_play` client.
pub struct ListenAndPlay {
    stop: Arc<AtomicBool>,
    ended: Arc<Mutex<Option<String>>>,
    threads: Vec<JoinHandle<()>>,
    streams: Vec<TcpStream>,
}

impl std::fmt::Debug for ListenAndPlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenAndPlay")
            .field("ended", &self.ended())
            .finish_non_exhaustive()
    }
}

fn connect(host: &str, port: u16) -> Result<TcpStream, ModeError> {
    let fail = |e: &dyn std::fmt::Display| {
        ModeError::Connect(format!("could not connect to {host}:{port}: {e}"))
    };
    let addrs = (host, port).to_socket_addrs().map_err(|e| fail(&e))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => {
                s.set_nodelay(true).map_err(|e| fail(&e))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| fail(&"no address"), |e| fail(&e)))
}

impl ListenAndPlay {
    /// Connect both ports (microphone first, as the server pairs them),
    /// open the devices and start.
    pub fn start(config: &ListenAndPlayConfig) -> Result<Self, ModeError> {
        for rate in [config.send_rate, config.recv_rate] {
            check_rate(rate)?;
        }
        let (speaker, tap) = Speaker::open(
            config.output_device.clone(),
            config.recv_rate,
            config.aec.then_some(MIC_RATE),
        )?;
        let blocked = config.block_mic_during_playback.then(|| speaker.speaking());
        let mic = Microphone::open(config.input_device.clone(), tap, blocked)?;
        let send = connect(&config.host, config.send_port)?;
        let recv = connect(&config.host, config.recv_port)?;
        recv.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| ModeError::Connect(e.to_string()))?;
        send.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| ModeError::Connect(e.to_string()))?;
        tracing::info!(
            "listen_and_play: connected to {}:{} and :{}; microphone {:?}, speaker {:?}",
            config.host,
            config.send_port,
            config.recv_port,
            mic.info().device,
            speaker.info().device
        );
        let streams = vec![
            send.try_clone()
                .map_err(|e| ModeError::Connect(e.to_string()))?,
            recv.try_clone()
                .map_err(|e| ModeError::Connect(e.to_string()))?,
        ];
        let mut client = Self {
            stop: Arc::new(AtomicBool::new(false)),
            ended: Arc::default(),
            threads: Vec::new(),
            streams,
        };
        let up = Resampler::new(MIC_RATE, config.send_rate)?;
        let spawned = client
            .spawn("s2s-lap-mic", {
                let (stop, ended) = (Arc::clone(&client.stop), Arc::clone(&client.ended));
                move || send_microphone(mic, up, send, &stop, &ended)
            })
            .and_then(|()| {
                let (stop, ended) = (Arc::clone(&client.stop), Arc::clone(&client.ended));
                client.spawn("s2s-lap-speaker", move || {
                    play_answers(speaker, recv, &stop, &ended);
                })
            });
        if let Err(e) = spawned {
            client.stop();
            return Err(e);
        }
        Ok(client)
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ModeError> {
        spawn_into(&mut self.threads, name, f)
    }

    /// Why it ended by itself (the server closed, a device failed), if it did.
    pub fn ended(&self) -> Option<String> {
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        !self.stop.load(Ordering::Acquire)
    }

    /// Close both connections and the devices.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for s in self.streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a listen_and_play thread panicked");
            }
        }
    }
}

impl Drop for ListenAndPlay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn end(ended: &Mutex<Option<String>>, stop: &AtomicBool, reason: String) {
    if !stop.swap(true, Ordering::AcqRel) {
        tracing::info!("listen_and_play: {reason}");
        ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
    }
}

fn send_microphone(
    mut mic: Microphone,
    mut up: Resampler,
    mut send: TcpStream,
    stop: &AtomicBool,
    ended: &Mutex<Option<String>>,
) {
    let mut resampled = vec![0.0; up.output_len_max(MIC_RATE as usize / 50)];
    while !stop.load(Ordering::Acquire) {
        let frame = match mic.next_frame(Duration::from_millis(100)) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(e) => {
                end(ended, stop, format!("microphone: {e}"));
                break;
            }
        };
        let Ok(n) = up.process_into(frame, &mut resampled) else {
            continue;
        };
        if let Err(e) = send.write_all(&f32_to_pcm16(&resampled[..n])) {
            end(
                ended,
                stop,
                format!("the server closed the connection ({e})"),
            );
            break;
        }
    }
    mic.close();
}

fn play_answers(
    mut speaker: Speaker,
    mut recv: TcpStream,
    stop: &AtomicBool,
    ended: &Mutex<Option<String>>,
) {
    let mut buf = vec![0u8; 8192];
    let mut pcm = Pcm16Stream::default();
    let mut last_audio = Instant::now();
    let mut answering = false;
    while !stop.load(Ordering::Acquire) {
        match recv.read(&mut buf) {
            Ok(0) => {
                end(ended, stop, "the server closed the connection".to_owned());
                break;
            }
            Ok(n) => {
                let samples = pcm.decode(&buf[..n]);
                if !samples.is_empty() {
                    speaker.play("answer", samples);
                    last_audio = Instant::now();
                    answering = true;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // The protocol has no end-of-answer mark: a pause longer than
                // the server's pacing gaps ends it.
                if answering && last_audio.elapsed() > ANSWER_GAP {
                    speaker.end_of_answer();
                    answering = false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                end(ended, stop, format!("the server connection failed: {e}"));
                break;
            }
        }
        if let Err(e) = speaker.pump() {
            end(ended, stop, format!("speaker: {e}"));
            break;
        }
    }
    speaker.close();
}
