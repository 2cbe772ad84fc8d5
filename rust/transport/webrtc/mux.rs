//! One UDP port for every call: the sockets, and the routers that hand each datagram to its call.
//!
//! A call is found by the ICE username of a STUN binding request (its first
//! half is the ufrag our answer gave that call), and from then on by the
//! source address that request came from: DTLS, SRTP and SCTP carry no call
//! id, but they come from an address the ICE checks proved. The endpoint is
//! ICE-lite, so it never sends checks of its own and every STUN message that
//! matters is such a request. Each socket has its own router task owning its
//! tables; calls are added and removed through a channel, so routing a
//! datagram takes no lock.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use str0m::ice::StunMessage;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::WebRtcError;

/// Datagrams that may wait for one call task; more are dropped (UDP would
/// have lost them anyway, and the call task is not keeping up).
pub(crate) const CALL_QUEUE: usize = 256;
/// Largest datagram read. WebRTC keeps packets under the path MTU (~1200 B).
const MAX_DATAGRAM: usize = 2048;
/// Tries to find a free port that every interface address can bind (port 0).
const PORT_TRIES: usize = 16;

/// One bound UDP socket and the address its datagrams arrive at.
#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) udp: UdpSocket,
    pub(crate) local: SocketAddr,
}

/// A received datagram on its way to its call.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) data: Vec<u8>,
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
    pub(crate) at: Instant,
}

/// A call's identity inside the routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CallKey(u64);

impl CallKey {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Changes to a router's tables.
#[derive(Debug)]
pub(crate) enum RouteCmd {
    /// A new call answered with local ufrag `ufrag`.
    Add {
        ufrag: String,
        key: CallKey,
        tx: mpsc::Sender<Datagram>,
    },
    /// The call ended: forget its ufrag and addresses.
    Remove { key: CallKey },
}

/// Datagrams dropped by the routers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Named no open call.
    pub(crate) unrouted: AtomicU64,
    /// Their call's queue was full.
    pub(crate) overflow: AtomicU64,
}

type Route = (CallKey, mpsc::Sender<Datagram>);

/// Reads one socket and forwards each datagram to its call.
pub(crate) struct Router {
    socket: Arc<Socket>,
    cmds: mpsc::UnboundedReceiver<RouteCmd>,
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, Route>,
    counters: Arc<Counters>,
}

impl Router {
    pub(crate) fn new(
        socket: Arc<Socket>,
        cmds: mpsc::UnboundedReceiver<RouteCmd>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            socket,
            cmds,
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            counters,
        }
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => break,
                },
                got = self.socket.udp.recv_from(&mut buf) => match got {
                    Ok((n, source)) => self.route(&buf[..n], source),
                    // ICMP port unreachable from a peer that left surfaces
                    // here on some systems; the socket itself is fine.
                    Err(e) => tracing::debug!(local = %self.socket.local, "UDP receive: {e}"),
                },
            }
        }
    }

    fn apply(&mut self, cmd: RouteCmd) {
        match cmd {
            RouteCmd::Add { ufrag, key, tx } => {
                self.by_ufrag.insert(ufrag, (key, tx));
            }
            RouteCmd::Remove { key } => {
                self.by_ufrag.retain(|_, (k, _)| *k != key);
                self.by_addr.retain(|_, (k, _)| *k != key);
            }
        }
    }

    fn route(&mut self, data: &[u8], source: SocketAddr) {
        let at = Instant::now();
        let by_request = stun_request_ufrag(data).and_then(|ufrag| self.by_ufrag.get(ufrag));
        if let Some(route) = by_request
            && self.by_addr.get(&source).is_none_or(|(k, _)| *k != route.0)
        {
            // The check proves this address belongs to the call.
            self.by_addr.insert(source, route.clone());
        }
        let Some(route) = self.by_addr.get(&source) else {
            self.counters.unrouted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let datagram = Datagram {
            data: data.to_vec(),
            source,
            destination: self.socket.local,
            at,
        };
        match route.1.try_send(datagram) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.overflow.fetch_add(1, Ordering::Relaxed);
            }
            // The call ended; its Remove is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counters.unrouted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The local ufrag a STUN binding request names (`USERNAME` is
/// `receiver_ufrag:sender_ufrag`), or `None` for anything else.
fn stun_request_ufrag(data: &[u8]) -> Option<&str> {
    // RFC 7983: a first byte of 0..=3 is STUN; DTLS, RTP and RTCP never are.
    if data.first().is_none_or(|b| *b > 3) {
        return None;
    }
    let msg = StunMessage::parse(data).ok()?;
    if !msg.is_binding_request() {
        return None;
    }
    let username = msg.username()?;
    username.split_once(':').map(|(local, _)| local)
}

/// Bind `port` on `host`, or on every usable interface address of its
/// family when `host` is a wildcard; every socket gets the same port.
pub(crate) fn bind_sockets(host: IpAddr, port: u16) -> Result<Vec<Socket>, WebRtcError> {
    let addrs = if host.is_unspecified() {
        interface_addrs(host.is_ipv4())?
    } else {
        vec![host]
    };
    let tries = if port == 0 && addrs.len() > 1 {
        PORT_TRIES
    } else {
        1
    };
    let mut last = None;
    for _ in 0..tries {
        match bind_all(&addrs, port) {
            Ok(sockets) => return Ok(sockets),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(WebRtcError::NoInterface))
}

fn bind_all(addrs: &[IpAddr], port: u16) -> Result<Vec<Socket>, WebRtcError> {
    let mut sockets: Vec<Socket> = Vec::with_capacity(addrs.len());
    let mut port = port;
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        let bind_err = |source| WebRtcError::Bind { addr, source };
        let std = StdUdpSocket::bind(addr).map_err(bind_err)?;
        std.set_nonblocking(true).map_err(bind_err)?;
        let local = std.local_addr().map_err(bind_err)?;
        port = local.port();
        let udp = UdpSocket::from_std(std).map_err(bind_err)?;
        sockets.push(Socket { udp, local });
    }
    if sockets.is_empty() {
        return Err(WebRtcError::NoInterface);
    }
    Ok(sockets)
}

/// Local addresses usable as host candidates: every interface address of the
/// family, loopback included (a client on this machine uses it), IPv6
/// link-local excluded (it needs a scope id a candidate cannot carry).
fn interface_addrs(v4: bool) -> Result<Vec<IpAddr>, WebRtcError> {
    let mut out: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map_err(WebRtcError::Interfaces)?
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == v4)
        .filter(|ip| match ip {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(_) => true,
        })
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(WebRtcError::NoInterface);
    }
    Ok(out)
}

/// The socket to send from for a transmit with local address `source`.
pub(crate) fn socket_for(sockets: &[Arc<Socket>], source: SocketAddr) -> Option<&Socket> {
    sockets
        .iter()
        .find(|s| s.local == source)
        .or_else(|| {
            sockets
                .iter()
                .find(|s| s.local.is_ipv4() == source.is_ipv4())
        })
        .map(AsRef::as_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request with USERNAME `user`, as a client sends it
    /// (integrity with a made-up password: the router does not check it;
    /// the call's ICE agent does).
    fn binding_request(user: &str) -> Vec<u8> {
        use str0m::ice::TransId;
        let msg = StunMessage::binding_request(user, TransId::new(), true, 7, 100, false);
        let mut buf = vec![0u8; 512];
        // Any 20-byte MAC serves for parsing.
        let n = msg
            .to_bytes(Some(b"pass"), &mut buf, |_, _| [0u8; 20])
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn stun_request_names_the_local_ufrag() {
        assert_eq!(
            stun_request_ufrag(&binding_request("abcd:wxyz")),
            Some("abcd")
        );
        // DTLS (20..=63), RTP (128..=191) and junk are not STUN.
        assert_eq!(stun_request_ufrag(&[22, 254, 253, 0, 0]), None);
        assert_eq!(stun_request_ufrag(&[0x80, 0x6f, 0, 1]), None);
        assert_eq!(stun_request_ufrag(&[]), None);
        assert_eq!(stun_request_ufrag(&[0, 1, 0, 4, 1]), None);
    }

    /// A router on a loopback socket, driven by hand (no task).
    fn router() -> (Router, Arc<Counters>, SocketAddr) {
        let mut sockets = bind_sockets(IpAddr::from([127, 0, 0, 1]), 0).unwrap();
        let socket = Arc::new(sockets.remove(0));
        let local = socket.local;
        // Commands are applied by hand; the sender may go.
        let (_, cmd_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        (
            Router::new(socket, cmd_rx, Arc::clone(&counters)),
            counters,
            local,
        )
    }

    #[tokio::test]
    async fn routes_by_ufrag_then_by_the_proven_address() {
        let (mut router, counters, local) = router();
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        let (a, b) = (CallKey::next(), CallKey::next());
        router.apply(RouteCmd::Add {
            ufrag: "ua".into(),
            key: a,
            tx: tx_a,
        });
        router.apply(RouteCmd::Add {
            ufrag: "ub".into(),
            key: b,
            tx: tx_b,
        });
        let peer_a: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let peer_b: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let dtls = [22u8, 254, 253, 0, 1, 2, 3];

        // Media before any check is not routed: nothing proved the address.
        router.route(&dtls, peer_a);
        assert_eq!(counters.unrouted.load(Ordering::Relaxed), 1);

        router.route(&binding_request("ua:peer"), peer_a);
        router.route(&binding_request("ub:peer"), peer_b);
        router.route(&dtls, peer_a);
        router.route(&dtls, peer_b);
        assert!(rx_a.try_recv().unwrap().data[0] <= 3);
        assert_eq!(rx_a.try_recv().unwrap().data, dtls);
        assert!(rx_b.try_recv().unwrap().data[0] <= 3);
        let d = rx_b.try_recv().unwrap();
        assert_eq!((d.source, d.destination), (peer_b, local));

        // A request with an unknown ufrag from a new address goes nowhere.
        router.route(
            &binding_request("zz:peer"),
            "127.0.0.1:40003".parse().unwrap(),
        );
        assert_eq!(counters.unrouted.load(Ordering::Relaxed), 2);

        router.apply(RouteCmd::Remove { key: a });
        router.route(&dtls, peer_a);
        router.route(&binding_request("ua:peer"), peer_a);
        assert_eq!(counters.unrouted.load(Ordering::Relaxed), 4);
        assert!(rx_a.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_call_queue_drops_and_counts() {
        let (mut router, counters, _) = router();
        let (tx, _rx) = mpsc::channel(1);
        router.apply(RouteCmd::Add {
            ufrag: "u".into(),
            key: CallKey::next(),
            tx,
        });
        let peer: SocketAddr = "127.0.0.1:40010".parse().unwrap();
        router.route(&binding_request("u:p"), peer);
        router.route(&[128, 0, 0, 0], peer);
        router.route(&[128, 0, 0, 0], peer);
        assert_eq!(counters.overflow.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_wildcard_binds_every_interface_on_one_port() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let sockets = bind_sockets(IpAddr::from([0, 0, 0, 0]), 0).unwrap();
        assert!(sockets.iter().any(|s| s.local.ip().is_loopback()));
        let port = sockets[0].local.port();
        assert!(port != 0 && sockets.iter().all(|s| s.local.port() == port));
        assert!(sockets.iter().all(|s| !s.local.ip().is_unspecified()));
        // The same port again is taken: a clear bind error naming it.
        let err = bind_sockets(IpAddr::from([127, 0, 0, 1]), port).unwrap_err();
        assert!(
            matches!(err, WebRtcError::Bind { addr, .. } if addr.port() == port),
            "{err}"
        );
    }
}
