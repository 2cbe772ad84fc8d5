//! `--mode socket`: the original project's TCP protocol, one conversation per connection pair.
//!
//! A client (`listen_and_play`) opens two connections: it streams its
//! microphone as raw int16 mono PCM at `send_rate` to `send_port`, and reads
//! the answer as raw int16 mono PCM at `recv_rate` from `recv_port`, in
//! chunks of exactly `chunk_samples` samples. There is no framing and no
//! handshake, so the two connections of one client are paired by their
//! address, in the order they arrive: the n-th microphone connection from a
//! host goes with its n-th speaker connection. Connections that close or
//! wait longer than `pair_timeout` for their partner are dropped.
//!
//! The answer is paced to real time (see [`super::raw`]), so when the user
//! barges in the server stops sending and the client falls silent.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::raw::{Chunker, Out, Outgoing, Pcm16Stream, check_rate, log_event, open_session};
use super::realtime::TransportError;
use super::runtime::{ConversationGuard, Served, sleep_until};
use crate::engine::{Engine, EngineEvent, Session};
use crate::protocol::SessionDefaults;

/// The port clients send their microphone to, unless told otherwise.
pub const DEFAULT_SEND_PORT: u16 = 12345;
/// The port clients read the answer from, unless told otherwise.
pub const DEFAULT_RECV_PORT: u16 = 12346;
/// Samples per chunk of the answer, unless told otherwise.
pub const DEFAULT_CHUNK_SAMPLES: usize = 1024;
/// The rate of both directions, unless told otherwise.
pub const DEFAULT_SOCKET_RATE: u32 = 16_000;

/// Settings of the socket server.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketConfig {
    /// Interface to bind.
    pub host: String,
    /// Where clients send their microphone (0: any free port).
    pub send_port: u16,
    /// Where clients read the answer (0: any free port).
    pub recv_port: u16,
    /// Rate of the PCM clients send.
    pub send_rate: u32,
    /// Rate of the PCM clients receive.
    pub recv_rate: u32,
    /// Samples in each chunk of the answer.
    pub chunk_samples: usize,
    /// What every session starts with (the command line's settings).
    pub defaults: SessionDefaults,
    /// Runtime worker threads (0: one per core, at most 4).
    pub worker_threads: usize,
    /// A write that takes longer means the client stopped reading.
    pub send_timeout: Duration,
    /// How long a connection waits for the other one of its pair.
    pub pair_timeout: Duration,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            host: super::realtime::DEFAULT_HOST.to_owned(),
            send_port: DEFAULT_SEND_PORT,
            recv_port: DEFAULT_RECV_PORT,
            send_rate: DEFAULT_SOCKET_RATE,
            recv_rate: DEFAULT_SOCKET_RATE,
            chunk_samples: DEFAULT_CHUNK_SAMPLES,
            defaults: SessionDefaults::default(),
            worker_threads: 0,
            send_timeout: Duration::from_secs(10),
            pair_timeout: Duration::from_secs(60),
        }
    }
}

/// Which of a client's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Microphone,
    Speaker,
}

struct Waiting {
    stream: TcpStream,
    peer: SocketAddr,
    since: Instant,
}

/// Connections waiting for their partner, by client host.
#[derive(Default)]
struct Lobby(HashMap<IpAddr, [VecDeque<Waiting>; 2]>);

impl Lobby {
    /// A connection arrived; the pair it completes, microphone first.
    fn arrive(&mut self, side: Side, w: Waiting, timeout: Duration) -> Option<(Waiting, Waiting)> {
        let queues = self.0.entry(w.peer.ip()).or_default();
        for q in queues.iter_mut() {
            q.retain_mut(|old| {
                let alive = old.since.elapsed() < timeout && !closed(&mut old.stream);
                if !alive {
                    tracing::info!("socket client {}: unpaired connection dropped", old.peer);
                }
                alive
            });
        }
        queues[side as usize].push_back(w);
        let pair = if queues.iter().all(|q| !q.is_empty()) {
            queues[0].pop_front().zip(queues[1].pop_front())
        } else {
            None
        };
        if queues.iter().all(VecDeque::is_empty) {
            let ip = pair.as_ref().map(|(m, _)| m.peer.ip());
            if let Some(ip) = ip {
                self.0.remove(&ip);
            }
        }
        pair
    }
}

/// Whether the peer has closed `stream` (without consuming any data).
fn closed(stream: &mut TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.peek(&mut probe).now_or_never(), Some(Ok(0) | Err(_)))
}

struct App {
    engine: Arc<Engine>,
    config: SocketConfig,
    lobby: Mutex<Lobby>,
}

/// The socket server. Owns its runtime; dropping it stops it.
pub struct SocketServer {
    engine: Arc<Engine>,
    config: SocketConfig,
    running: Option<(Served, SocketAddr, SocketAddr)>,
}

impl std::fmt::Debug for SocketServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketServer")
            .field("config", &self.config)
            .field("addrs", &self.addrs())
            .finish_non_exhaustive()
    }
}

impl SocketServer {
    /// A stopped server around `engine`; refuses rates the sessions cannot
    /// resample and an empty chunk size.
    pub fn new(engine: Arc<Engine>, config: SocketConfig) -> Result<Self, TransportError> {
        for (name, rate) in [
            ("send_rate", config.send_rate),
            ("recv_rate", config.recv_rate),
        ] {
            check_rate(rate).map_err(|e| TransportError::InvalidConfig(format!("{name}: {e}")))?;
        }
        if !(1..=1 << 20).contains(&config.chunk_samples) {
            return Err(TransportError::InvalidConfig(format!(
                "list_play_chunk_size must be 1 to 1048576 samples, not {}",
                config.chunk_samples
            )));
        }
        Ok(Self {
            engine,
            config,
            running: None,
        })
    }

    /// Bind both ports and serve in the background; returns the
    /// microphone (send) and speaker (recv) addresses.
    pub fn start(&mut self) -> Result<(SocketAddr, SocketAddr), TransportError> {
        if self.running.is_some() {
            return Err(TransportError::AlreadyRunning);
        }
        let served = Served::new(self.config.worker_threads, "s2s-socket")?;
        let (mic, mic_addr) = served.bind(&self.config.host, self.config.send_port)?;
        let (spk, spk_addr) = served.bind(&self.config.host, self.config.recv_port)?;
        let app = Arc::new(App {
            engine: Arc::clone(&self.engine),
            config: self.config.clone(),
            lobby: Mutex::default(),
        });
        for (listener, side) in [(mic, Side::Microphone), (spk, Side::Speaker)] {
            let app = Arc::clone(&app);
            let cancel = served.cancel.clone();
            let counter = Arc::clone(&served.connections);
            served.runtime.spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = accept(app, listener, side, cancel.clone(), counter) => {}
                }
            });
        }
        tracing::info!(
            "socket server listening: microphone on {mic_addr}, speaker on {spk_addr} \
             ({} Hz in, {} Hz out, chunks of {} samples)",
            self.config.send_rate,
            self.config.recv_rate,
            self.config.chunk_samples
        );
        self.running = Some((served, mic_addr, spk_addr));
        Ok((mic_addr, spk_addr))
    }

    /// End every conversation and stop.
    pub fn stop(&mut self) {
        if let Some((served, ..)) = self.running.take() {
            served.stop();
        }
    }

    /// The microphone (send) and speaker (recv) addresses while running.
    pub fn addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.running.as_ref().map(|(_, m, s)| (*m, *s))
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Conversations open now.
    pub fn conversations(&self) -> usize {
        self.running.as_ref().map_or(0, |(s, ..)| s.open())
    }

    /// The settings.
    pub fn config(&self) -> &SocketConfig {
        &self.config
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    side: Side,
    cancel: tokio_util::sync::CancellationToken,
    counter: Arc<std::sync::atomic::AtomicUsize>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, usually: wait instead of spinning.
                tracing::warn!("socket server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
        let waiting = Waiting {
            stream,
            peer,
            since: Instant::now(),
        };
        let pair = app
            .lobby
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .arrive(side, waiting, app.config.pair_timeout);
        if let Some((mic, spk)) = pair {
            let app = Arc::clone(&app);
            let cancel = cancel.clone();
            let guard = ConversationGuard::new(&counter);
            tokio::spawn(async move {
                conversation(&app, mic, spk, &cancel).await;
                drop(guard);
            });
        } else {
            tracing::debug!("socket client {peer}: {side:?} connection waits for its pair");
        }
    }
}

/// Why a conversation ended.
const STOPPING: &str = "the server is stopping";

async fn conversation(
    app: &App,
    mic: Waiting,
    spk: Waiting,
    cancel: &tokio_util::sync::CancellationToken,
) {
    let c = &app.config;
    let peer = mic.peer;
    let session = match open_session(&app.engine, &c.defaults, c.send_rate, c.recv_rate) {
        Ok(s) => s,
        Err(e) => {
            // Dropping the streams closes both connections.
            tracing::warn!("socket client {peer} refused: {e}");
            return;
        }
    };
    let sid = session.id().to_owned();
    tracing::info!("{sid} socket client {peer} connected");
    let wake = Arc::new(Notify::new());
    let waker = Arc::clone(&wake);
    session.set_notify(Box::new(move || waker.notify_one()));
    let mut conv = Conversation {
        session,
        sid,
        out: Outgoing::new(c.recv_rate),
        chunker: Chunker::new(c.chunk_samples),
    };
    let mut mic_stream = mic.stream;
    let (mut spk_read, mut spk_write) = spk.stream.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    let mut probe = [0u8; 256];
    let mut pcm = Pcm16Stream::default();
    let reason: String = loop {
        let deadline = conv.out.deadline(Instant::now());
        tokio::select! {
            () = cancel.cancelled() => break STOPPING.to_owned(),
            read = mic_stream.read(&mut buf) => match read {
                Ok(0) => break "the client closed its microphone connection".to_owned(),
                Ok(n) => {
                    let samples = pcm.decode(&buf[..n]);
                    if !samples.is_empty() && let Err(e) = conv.session.feed_audio(samples) {
                        tracing::warn!("{} input refused: {e}", conv.sid);
                    }
                }
                Err(e) => break format!("microphone connection failed: {e}"),
            },
            // The client never sends on its speaker connection; reading it
            // tells when it goes away.
            read = spk_read.read(&mut probe) => match read {
                Ok(0) => break "the client closed its speaker connection".to_owned(),
                Ok(_) => {}
                Err(e) => break format!("speaker connection failed: {e}"),
            },
            () = wake.notified() => {
                if !conv.events() {
                    break "the client reads too slowly (event queue overflow)".to_owned();
                }
            }
            () = sleep_until(deadline) => {
                if let Err(e) = conv.send_ready(&mut spk_write, c.send_timeout).await {
                    break e;
                }
            }
        }
    };
    if pcm.has_odd_byte() {
        tracing::warn!(
            "{} the client's audio ended in the middle of a sample (an odd byte count): \
             its last byte was dropped",
            conv.sid
        );
    }
    tracing::info!("{} socket client {peer} disconnected: {reason}", conv.sid);
    conv.session.close();
}

/// One conversation's session and what it still has to send.
struct Conversation {
    session: Session,
    sid: String,
    out: Outgoing,
    chunker: Chunker,
}

impl Conversation {
    /// Handle the queued engine events; false when events were lost.
    fn events(&mut self) -> bool {
        while let Some(ev) = self.session.try_next_event() {
            log_event(&self.sid, &ev);
            match ev {
                EngineEvent::AudioDelta { samples, .. } => {
                    self.chunker.push(&samples, &mut self.out);
                }
                EngineEvent::SpeechStarted { .. } => {
                    self.chunker.clear();
                    let dropped = self.out.barge_in();
                    if dropped > 0 {
                        tracing::info!(
                            "{} barge-in: the user spoke during the answer; {} ms of it dropped",
                            self.sid,
                            dropped as u64 * 1000 / u64::from(self.session.config().output_rate)
                        );
                    }
                }
                EngineEvent::ResponseDone { .. } => self.chunker.flush(&mut self.out),
                _ => {}
            }
        }
        !self.session.overflowed()
    }

    /// Send what may go now.
    async fn send_ready(
        &mut self,
        w: &mut tokio::net::tcp::OwnedWriteHalf,
        timeout: Duration,
    ) -> Result<(), String> {
        while let Some(out) = self.out.pop_ready(Instant::now()) {
            let Out::Audio(bytes, _) = out else {
                continue;
            };
            match tokio::time::timeout(timeout, w.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("the client went away mid-answer ({e})")),
                Err(_) => return Err("the client stopped reading the answer".to_owned()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    fn waiting(stream: TcpStream) -> Waiting {
        let peer = stream.peer_addr().unwrap();
        Waiting {
            stream,
            peer,
            since: Instant::now(),
        }
    }

    #[tokio::test]
    async fn connections_pair_in_order_and_closed_ones_are_skipped() {
        let mut lobby = Lobby::default();
        let t = Duration::from_secs(60);
        let (c1, s1) = pair().await;
        let (_c2, s2) = pair().await;
        let (_c3, s3) = pair().await;
        let (_c4, s4) = pair().await;
        let ports = |p: &(Waiting, Waiting)| {
            (
                p.0.stream.local_addr().unwrap().port(),
                p.1.stream.local_addr().unwrap().port(),
            )
        };
        let p1 = s1.local_addr().unwrap().port();
        assert!(lobby.arrive(Side::Microphone, waiting(s1), t).is_none());
        // The first microphone connection closes before its speaker arrives.
        drop(c1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let p2 = s2.local_addr().unwrap().port();
        assert!(lobby.arrive(Side::Microphone, waiting(s2), t).is_none());
        let paired = lobby.arrive(Side::Speaker, waiting(s3), t).unwrap();
        let (mic_port, _) = ports(&paired);
        assert_eq!(mic_port, p2);
        assert_ne!(mic_port, p1);
        // A connection that waited too long is dropped too.
        assert!(
            lobby
                .arrive(Side::Speaker, waiting(s4), Duration::ZERO)
                .is_none()
        );
        assert!(lobby.0.values().all(|q| q[0].is_empty()));
    }
}
