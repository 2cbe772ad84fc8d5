//! The WebRTC endpoint end to end over loopback UDP, with a str0m client.
//!
//! The Python tests drive it with aiortc (a stack written by others); these
//! run in `cargo test` and check what needs two calls at once or the Rust
//! API itself: one port serving several calls without cross-talk, the
//! events in order, a hang-up from either side.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opus::{Application, Channels};
use speech_to_speech::transport::webrtc::{
    Call, CallEvent, CloseReason, OfferError, WebRtcConfig, WebRtcEndpoint,
};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// A str0m peer on its own socket, the offering side of a call.
struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    channel: ChannelId,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    open: bool,
    closed: bool,
    messages: Vec<String>,
    /// Decoded echo, 48 kHz mono.
    audio: Vec<f32>,
    decoder: opus::Decoder,
}

impl Client {
    async fn new() -> (Self, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let channel = change.add_channel("oai-events".into());
        let (offer, pending) = change.apply().unwrap();
        let client = Self {
            rtc,
            socket,
            local,
            mid,
            channel,
            pending: Some(pending),
            connected: false,
            open: false,
            closed: false,
            messages: Vec::new(),
            audio: Vec::new(),
            decoder: opus::Decoder::new(48_000, Channels::Mono).unwrap(),
        };
        (client, offer.to_sdp_string())
    }

    fn answer(&mut self, sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(sdp).unwrap();
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    /// Drain str0m's output; its next deadline.
    fn drain(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(e) => match e {
                    Event::Connected => self.connected = true,
                    Event::ChannelOpen(id, _) if id == self.channel => self.open = true,
                    Event::ChannelData(d) => {
                        self.messages.push(String::from_utf8(d.data).unwrap());
                    }
                    Event::MediaData(d) if d.mid == self.mid => {
                        let mut out = vec![0f32; 5760];
                        let n = self.decoder.decode_float(&d.data, &mut out, false).unwrap();
                        self.audio.extend_from_slice(&out[..n]);
                    }
                    Event::Closed => self.closed = true,
                    _ => {}
                },
            }
        }
    }

    /// Run until `done` holds or `timeout` passes (then panic with `what`).
    async fn run_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 2048];
        loop {
            let due = self.drain();
            if done(self) {
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            let wait = due.min(end).min(Instant::now() + Duration::from_millis(20));
            tokio::select! {
                got = self.socket.recv_from(&mut buf) => {
                    let (n, source) = got.unwrap();
                    let r = Receive::new(Protocol::Udp, source, self.local, &buf[..n]).unwrap();
                    self.rtc.handle_input(Input::Receive(Instant::now(), r)).unwrap();
                }
                () = tokio::time::sleep_until(wait.into()) => {
                    self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
                }
            }
        }
    }

    /// Send `frames` (20 ms each) of a tone in real time, then let the echo drain.
    async fn send_tone(&mut self, hz: f32, frames: usize) {
        let mut enc = opus::Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
        let pt = self
            .rtc
            .writer(self.mid)
            .unwrap()
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .unwrap()
            .pt();
        let start = Instant::now();
        for i in 0..frames {
            let due = start + Duration::from_millis(20 * i as u64);
            self.run_until("a frame slot", Duration::from_secs(5), |_| {
                Instant::now() >= due
            })
            .await;
            let pcm: Vec<f32> = (0..960)
                .map(|k| {
                    let t = (i * 960 + k) as f32 / 48_000.0;
                    0.4 * (std::f32::consts::TAU * hz * t).sin()
                })
                .collect();
            let packet = enc.encode_vec_float(&pcm, 1500).unwrap();
            let time = MediaTime::new(i as u64 * 960, Frequency::FORTY_EIGHT_KHZ);
            let writer = self.rtc.writer(self.mid).unwrap();
            writer.write(pt, Instant::now(), time, packet).unwrap();
        }
    }

    fn send_text(&mut self, text: &str) {
        let mut ch = self.rtc.channel(self.channel).unwrap();
        assert!(ch.write(false, text.as_bytes()).unwrap());
    }
}

/// The call's echo: audio back out (marked), messages back.
async fn echo(call: Call) -> Vec<CallEvent> {
    let Call { handle, mut events } = call;
    let mut seen = Vec::new();
    while let Some(ev) = events.recv().await {
        // Events queued before the call ended still come after it did (then
        // `Closed`): sending on an ended call is refused, and that is fine.
        let sent = match &ev {
            CallEvent::Audio(frame) => {
                handle.send_audio_marked(frame.samples.clone(), 48_000, frame.arrival)
            }
            CallEvent::Message(text) => handle.send_text(text.clone()),
            _ => Ok(()),
        };
        assert!(sent.is_ok() || handle.is_closed());
        let closed = matches!(ev, CallEvent::Closed(_));
        // Audio frames are many; keep the rest for the order checks.
        if !matches!(ev, CallEvent::Audio(_)) {
            seen.push(ev);
        }
        if closed {
            break;
        }
    }
    seen
}

/// Dominant frequency of `x` (48 kHz) by the zero crossings.
fn frequency(x: &[f32]) -> f32 {
    let crossings = x.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
    crossings as f32 * 48_000.0 / x.len() as f32
}

fn endpoint(
    rt: &tokio::runtime::Runtime,
    config: WebRtcConfig,
) -> (WebRtcEndpoint, CancellationToken) {
    let cancel = CancellationToken::new();
    let ep = WebRtcEndpoint::bind(config, rt.handle(), cancel.clone()).unwrap();
    (ep, cancel)
}

#[test]
fn two_calls_share_one_port_without_cross_talk() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (ep, cancel) = endpoint(&rt, WebRtcConfig::default());
    rt.block_on(async {
        let (mut a, offer_a) = Client::new().await;
        let (mut b, offer_b) = Client::new().await;
        let (id_a, answer_a, call_a) = ep.accept_offer(&offer_a).unwrap();
        let (id_b, answer_b, call_b) = ep.accept_offer(&offer_b).unwrap();
        assert_ne!(id_a, id_b);
        assert_eq!(ep.calls(), 2);
        // The answer offers the endpoint's one port, ICE-lite.
        let port = ep.port();
        assert!(answer_a.contains("a=ice-lite"), "{answer_a}");
        assert!(
            answer_a.contains(&format!("127.0.0.1 {port} typ host")),
            "{answer_a}"
        );
        assert!(answer_a.to_lowercase().contains("opus/48000/2"));
        let echo_a = tokio::spawn(echo(call_a));
        let echo_b = tokio::spawn(echo(call_b));
        a.answer(&answer_a);
        b.answer(&answer_b);
        let ready = |c: &Client| c.connected && c.open;
        a.run_until("call A to connect", Duration::from_secs(10), ready)
            .await;
        b.run_until("call B to connect", Duration::from_secs(10), ready)
            .await;

        a.send_text(r#"{"type":"a"}"#);
        b.send_text(r#"{"type":"b"}"#);
        tokio::join!(a.send_tone(440.0, 50), b.send_tone(1000.0, 50),);
        let enough = |c: &Client| c.audio.len() >= 45 * 960 && !c.messages.is_empty();
        a.run_until("call A's echo", Duration::from_secs(5), enough)
            .await;
        b.run_until("call B's echo", Duration::from_secs(5), enough)
            .await;
        assert_eq!(a.messages, vec![r#"{"type":"a"}"#.to_owned()]);
        assert_eq!(b.messages, vec![r#"{"type":"b"}"#.to_owned()]);
        // Each call hears its own tone back (skip Opus's warm-up).
        let fa = frequency(&a.audio[4800..40_000]);
        let fb = frequency(&b.audio[4800..40_000]);
        assert!((fa - 440.0).abs() < 15.0, "call A echoed {fa} Hz");
        assert!((fb - 1000.0).abs() < 25.0, "call B echoed {fb} Hz");

        // A hangs up; B goes on until the endpoint shuts down.
        a.rtc.close().unwrap();
        a.run_until("A's close to go out", Duration::from_secs(1), |c| {
            !c.rtc.is_alive()
        })
        .await;
        let seen_a = tokio::time::timeout(Duration::from_secs(10), echo_a)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen_a.last(), Some(&CallEvent::Closed(CloseReason::HangUp)));
        let order: Vec<&CallEvent> = seen_a
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    CallEvent::Connected | CallEvent::ChannelOpen | CallEvent::Message(_)
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                &CallEvent::Connected,
                &CallEvent::ChannelOpen,
                &CallEvent::Message(r#"{"type":"a"}"#.into())
            ]
        );
        let marks: Vec<Duration> = seen_a
            .iter()
            .filter_map(|e| match e {
                CallEvent::MarkSent { origin, sent } => Some(sent.duration_since(*origin)),
                _ => None,
            })
            .collect();
        assert!(marks.len() >= 45, "{} echoed frames", marks.len());
        // Echoed audio arrives in real time, so it leaves as it comes:
        // packet in to packet out is decoding, a task hop and encoding
        // (about 1 ms here); the bound is the 20 ms WebRTC may add.
        let mut sorted = marks.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        assert!(
            median < Duration::from_millis(20),
            "median in->out {median:?}"
        );
        assert!(seen_a.contains(&CallEvent::OutputStarted));
        assert_eq!(ep.calls(), 1);

        b.send_text(r#"{"type":"still here"}"#);
        b.run_until("B's second echo", Duration::from_secs(5), |c| {
            c.messages.len() == 2
        })
        .await;
        cancel.cancel();
        b.run_until("B to see the server close", Duration::from_secs(5), |c| {
            c.closed
        })
        .await;
        let seen_b = tokio::time::timeout(Duration::from_secs(10), echo_b)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen_b.last(),
            Some(&CallEvent::Closed(CloseReason::Shutdown))
        );
    });
}

#[test]
fn offers_are_checked_before_a_call_is_made() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = WebRtcConfig {
        max_calls: 1,
        ..WebRtcConfig::default()
    };
    let (ep, cancel) = endpoint(&rt, config);
    rt.block_on(async {
        assert!(matches!(ep.accept_offer("nonsense"), Err(OfferError::Malformed(_))));
        let (_client, offer) = Client::new().await;
        // Browsers hide their host addresses behind mDNS names; ICE-lite
        // needs no client candidate at all (the client's checks show its
        // address), so such an offer is answered all the same.
        let offer = offer.replacen(
            "a=ice-ufrag:",
            "a=candidate:1 1 udp 2122260223 4b2a3c1e-9abc-4def-8123-0123456789ab.local 54321 typ host generation 0\r\na=ice-ufrag:",
            1,
        );
        assert!(offer.contains(".local 54321"));
        let (_, _, call) = ep.accept_offer(&offer).unwrap();
        let (_second, offer2) = Client::new().await;
        assert_eq!(
            ep.accept_offer(&offer2).unwrap_err(),
            OfferError::TooManyCalls { max: 1 }
        );
        call.handle.hang_up().unwrap();
        let mut events = call.events;
        let mut last = None;
        while let Some(ev) = events.recv().await {
            last = Some(ev);
        }
        assert_eq!(last, Some(CallEvent::Closed(CloseReason::Local)));
        assert_eq!(ep.calls(), 0);
        assert!(call.handle.is_closed());
        assert!(call.handle.send_text("x".into()).is_err());
        // The slot is free again.
        assert!(ep.accept_offer(&offer2).is_ok());
        cancel.cancel();
    });
}

#[test]
fn a_client_that_vanishes_ends_with_ice_failed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let config = WebRtcConfig {
        disconnect_timeout: Duration::from_secs(1),
        ..WebRtcConfig::default()
    };
    let (ep, cancel) = endpoint(&rt, config);
    rt.block_on(async {
        let (mut client, offer) = Client::new().await;
        let (_, answer, call) = ep.accept_offer(&offer).unwrap();
        client.answer(&answer);
        client
            .run_until("the call to connect", Duration::from_secs(10), |c| {
                c.connected && c.open
            })
            .await;
        // The client goes away without a word (a killed tab, a lost
        // network): no more connectivity checks reach the server, whose
        // ICE agent gives the pair up after 15 s.
        drop(client);
        let started = Instant::now();
        let mut events = call.events;
        let mut last = None;
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap()
        {
            last = Some(ev);
        }
        assert_eq!(last, Some(CallEvent::Closed(CloseReason::IceFailed)));
        assert!(
            started.elapsed() >= Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(ep.calls(), 0);
        cancel.cancel();
    });
}
