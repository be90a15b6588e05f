//! The DNS listeners. Every query first meets the hot path ([`fast`]): steered names are answered
//! from the current snapshot straight into a reused buffer, malformed queries get FORMERR (or
//! nothing). Everything else goes to hickory-server's catalog ([`slow`]), which serves the zone file.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler as _, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use steering_core::engine::Outcome;
use steering_core::policy::ServiceId;
use steering_core::prefix::Family;
use steering_core::{Decision, Query};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use crate::state::Shared;
use crate::state::tokio_util_shutdown::Shutdown;
use crate::wire::{self, Ecs, Parsed, Reject, Writer};

/// Receive buffer: larger than any UDP query we accept.
pub const UDP_QUERY_BYTES_MAX: usize = 4096;
/// Queries on their way through hickory at once, per server; more are dropped (the client retries).
pub const SLOW_INFLIGHT_MAX: usize = 1024;
/// Open TCP connections at once; more wait in the kernel's backlog.
pub const TCP_CONNECTIONS_MAX: usize = 512;
/// A TCP connection idle for this long is closed (RFC 7766 6.2.3).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Queries answered on one TCP connection before it is closed.
pub const TCP_QUERIES_PER_CONNECTION_MAX: usize = 10_000;
/// Longest TTL the negative answer of a steered name carries, whatever the SOA says.
const STEERED_NEGATIVE_TTL_MAX: u32 = 300;

/// What the hot path did.
#[derive(Debug)]
pub enum Fast {
    /// The response is the first `n` bytes of the output buffer.
    Answered(usize),
    /// Say nothing.
    Drop,
    /// Ask hickory; the query's ECS (if any) is echoed with scope 0 on its answer.
    Slow(Option<Ecs>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The hot path. Does not allocate.
pub fn fast(shared: &Shared, query: &[u8], src: IpAddr, transport: Transport, out: &mut [u8]) -> Fast {
    let p = match wire::parse(query) {
        Ok(p) => p,
        Err(Reject::NotPlain) => return Fast::Slow(None),
        Err(Reject::Drop) => {
            shared.metrics.queries_dropped.fetch_add(1, Relaxed);
            return Fast::Drop;
        }
        Err(r) => {
            let mut w = Writer::new(out, usize::from(wire::UDP_PAYLOAD_LEGACY));
            if !wire::error_response(&mut w, query, r) {
                return Fast::Drop;
            }
            shared.metrics.rcode(match r {
                Reject::BadVers { .. } => wire::RCODE_BADVERS,
                _ => u16::from(wire::RCODE_FORMERR),
            });
            return Fast::Answered(w.len());
        }
    };
    let ecs = p.edns.and_then(|e| e.ecs);
    if p.qclass != wire::CLASS_IN {
        return Fast::Slow(ecs);
    }
    let mut name_buf = [0u8; wire::NAME_BYTES_MAX];
    let Some(name) = p.qname_lower(&mut name_buf) else {
        return Fast::Slow(ecs);
    };
    let limit = match transport {
        Transport::Udp => p.udp_limit(),
        Transport::Tcp => usize::from(u16::MAX),
    };
    let snap = shared.snapshot.load();
    if let Some(service) = snap.service_for(name) {
        let family = match p.qtype {
            wire::TYPE_A | wire::TYPE_ANY => Some(Family::V4),
            wire::TYPE_AAAA => Some(Family::V6),
            _ => None,
        };
        let decision = family.map(|family| {
            let q = client_query(shared, service, family, src, ecs.map(|e| (e.addr, e.source_len)));
            let d = snap.decide(&q);
            shared.metrics.decision(&d, &shared.answers.load());
            d
        });
        let n = steered_response(&p, decision.as_ref(), &shared.zone.soa_wire, out, limit);
        shared.metrics.rcode(0);
        return Fast::Answered(n);
    }
    if p.qtype == wire::TYPE_ANY && shared.zone.names.contains(name) {
        // RFC 8482 4.2: one synthesized HINFO instead of every RRset.
        let n = any_response(&p, out, limit);
        shared.metrics.rcode(0);
        return Fast::Answered(n);
    }
    Fast::Slow(ecs)
}

/// The engine's view of a client: ECS when present (SOURCE 0 asks that the client's address not be
/// used, RFC 7871 7.1.2), else the resolver's address; `GeoIP` of whichever it is.
pub fn client_query(
    shared: &Shared,
    service: ServiceId,
    family: Family,
    resolver: IpAddr,
    ecs: Option<(IpAddr, u8)>,
) -> Query {
    let mut q = Query::from_resolver(service, family, resolver);
    if let Some((addr, len)) = ecs.filter(|e| e.1 > 0) {
        q = q.with_ecs(addr, len);
    }
    if let Some(geo) = &shared.geo {
        let place = geo.lookup(q.client);
        q.country = place.country;
        q.continent = place.continent;
        q.location = place.location;
    }
    q
}

fn question(w: &mut Writer<'_>, p: &Parsed<'_>) {
    w.put(p.qname_wire);
    w.u16(p.qtype);
    w.u16(p.qclass);
}

fn opt_of(w: &mut Writer<'_>, p: &Parsed<'_>, scope: u8) {
    if let Some(e) = p.edns {
        wire::opt(w, 0, e.dnssec_ok, e.ecs.map(|ecs| (ecs, scope)));
    }
}

/// A steered answer (A/AAAA from the decision) or, without a decision or addresses, NODATA with the
/// SOA. Truncates (TC, empty sections) when it does not fit in `limit`.
fn steered_response(p: &Parsed<'_>, d: Option<&Decision>, soa: &[u8], out: &mut [u8], limit: usize) -> usize {
    let scope = d.map_or(0, |d| d.scope_len);
    let addrs = d
        .filter(|d| d.outcome == Outcome::Answer)
        .map_or(&[][..], Decision::addrs);
    let ttl = d.map_or(0, |d| d.ttl_s);
    let nodata = addrs.is_empty();
    let ar = u16::from(p.edns.is_some());
    let mut w = Writer::new(out, limit);
    let counts = [1, addrs.len() as u16, u16::from(nodata), ar];
    wire::header(
        &mut w,
        p.id,
        wire::response_flags(p.flags, true, false, wire::RCODE_NOERROR),
        counts,
    );
    question(&mut w, p);
    for a in addrs {
        // The owner is the question name: a pointer to offset 12.
        w.u16(0xC00C);
        match a {
            IpAddr::V4(v4) => {
                w.u16(wire::TYPE_A);
                w.u16(wire::CLASS_IN);
                w.u32(ttl);
                w.u16(4);
                w.put(&v4.octets());
            }
            IpAddr::V6(v6) => {
                w.u16(wire::TYPE_AAAA);
                w.u16(wire::CLASS_IN);
                w.u32(ttl);
                w.u16(16);
                w.put(&v6.octets());
            }
        }
    }
    if nodata {
        // The SOA carries its negative TTL; steered names cap it further so that a name without an
        // address now is asked again soon.
        let start = w.len();
        w.put(soa);
        let neg = soa_ttl(soa)
            .min(STEERED_NEGATIVE_TTL_MAX)
            .min(d.map_or(u32::MAX, |d| d.ttl_s.max(1)));
        let at = start + soa_ttl_offset(soa);
        w.set_u16(at, (neg >> 16) as u16);
        w.set_u16(at + 2, neg as u16);
    }
    opt_of(&mut w, p, scope);
    if !w.overflowed() {
        return w.len();
    }
    // RFC 2181 9: set TC and leave the sections out; the client retries over TCP.
    w.truncate(0);
    wire::header(
        &mut w,
        p.id,
        wire::response_flags(p.flags, true, true, wire::RCODE_NOERROR),
        [1, 0, 0, ar],
    );
    question(&mut w, p);
    opt_of(&mut w, p, scope);
    w.len()
}

/// Where the TTL sits in an encoded record whose owner is uncompressed: after the owner, type, class.
fn soa_ttl_offset(rec: &[u8]) -> usize {
    let mut i = 0;
    while i < rec.len() && rec[i] != 0 {
        i += 1 + usize::from(rec[i]);
    }
    i + 1 + 4
}

fn soa_ttl(rec: &[u8]) -> u32 {
    let at = soa_ttl_offset(rec);
    rec.get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// RFC 8482 4.2: `HINFO "RFC8482" ""` for ANY at a static name.
fn any_response(p: &Parsed<'_>, out: &mut [u8], limit: usize) -> usize {
    let mut w = Writer::new(out, limit);
    let ar = u16::from(p.edns.is_some());
    wire::header(
        &mut w,
        p.id,
        wire::response_flags(p.flags, true, false, wire::RCODE_NOERROR),
        [1, 1, 0, ar],
    );
    question(&mut w, p);
    w.u16(0xC00C);
    w.u16(wire::TYPE_HINFO);
    w.u16(wire::CLASS_IN);
    w.u32(3600);
    w.u16(9);
    w.u8(7);
    w.put(b"RFC8482");
    w.u8(0);
    opt_of(&mut w, p, 0);
    w.len()
}

// === impl the slow path ===

/// Catches hickory's encoded response instead of sending it.
#[derive(Clone)]
struct Capture {
    out: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    max_size: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut buf = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_max_size(self.max_size);
        let info = response.destructive_emit(&mut enc)?;
        *self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(buf);
        Ok(info)
    }
}

/// Answers through hickory-server's catalog. `None`: nothing to send.
pub async fn slow(
    shared: &Shared,
    query: &[u8],
    src: SocketAddr,
    transport: Transport,
    ecs: Option<Ecs>,
) -> Option<Vec<u8>> {
    shared.metrics.queries_slow_path.fetch_add(1, Relaxed);
    let protocol = match transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    let limit = match (transport, wire::parse(query)) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Ok(p)) => p.udp_limit(),
        (Transport::Udp, Err(_)) => usize::from(wire::UDP_PAYLOAD_LEGACY),
    };
    let request = match Request::from_bytes(query.to_vec(), src, protocol) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%src, error = %e, "unparsable query");
            let mut buf = vec![0u8; 512];
            if query.len() < wire::HEADER_LEN || query[2] & 0x80 != 0 {
                shared.metrics.queries_dropped.fetch_add(1, Relaxed);
                return None;
            }
            let id = u16::from_be_bytes([query[0], query[1]]);
            let flags = u16::from_be_bytes([query[2], query[3]]);
            let mut w = Writer::new(&mut buf, 512);
            wire::error_response(&mut w, query, Reject::FormErr { id, flags });
            let n = w.len();
            buf.truncate(n);
            shared.metrics.rcode(u16::from(wire::RCODE_FORMERR));
            return Some(buf);
        }
    };
    let capture = Capture {
        out: Arc::default(),
        max_size: limit as u16,
    };
    let info = shared
        .zone
        .catalog
        .handle_request::<_, TokioTime>(&request, capture.clone())
        .await;
    let out = capture
        .out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let mut resp = out?;
    shared.metrics.rcode(u16::from(info.response_code));
    if let Some(e) = ecs {
        wire::append_ecs_scope0(&mut resp, e, limit);
    }
    Some(resp)
}

// === impl the listeners ===

/// One UDP worker: receives on its own (`SO_REUSEPORT`) socket and answers the hot path in place.
pub async fn udp_worker(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    shutdown: Shutdown,
    slow_permits: Arc<Semaphore>,
) {
    let mut buf = vec![0u8; UDP_QUERY_BYTES_MAX];
    let mut out = vec![0u8; usize::from(wire::UDP_PAYLOAD_MAX)];
    loop {
        let (n, src) = tokio::select! {
            () = shutdown.wait() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        shared.metrics.queries_udp.fetch_add(1, Relaxed);
        match fast(&shared, &buf[..n], src.ip(), Transport::Udp, &mut out) {
            Fast::Answered(len) => {
                let _ = socket.send_to(&out[..len], src).await;
            }
            Fast::Drop => {}
            Fast::Slow(ecs) => {
                let Ok(permit) = slow_permits.clone().try_acquire_owned() else {
                    shared.metrics.queries_dropped.fetch_add(1, Relaxed);
                    continue;
                };
                let (shared, socket, query) = (shared.clone(), socket.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    if let Some(resp) = slow(&shared, &query, src, Transport::Udp, ecs).await {
                        let _ = socket.send_to(&resp, src).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Accepts TCP connections (RFC 7766): length-prefixed queries, answered in order.
pub async fn tcp_listener(shared: Arc<Shared>, listener: TcpListener, shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(TCP_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, src) = tokio::select! {
            () = shutdown.wait() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.wait() => {}
                () = tcp_connection(&shared, stream, src) => {}
            }
            drop(permit);
        });
    }
}

async fn tcp_connection(shared: &Shared, mut stream: tokio::net::TcpStream, src: SocketAddr) {
    let mut out = vec![0u8; usize::from(u16::MAX)];
    let mut query = vec![0u8; usize::from(u16::MAX)];
    for _ in 0..TCP_QUERIES_PER_CONNECTION_MAX {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let n = usize::from(u16::from_be_bytes(len));
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut query[..n])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        shared.metrics.queries_tcp.fetch_add(1, Relaxed);
        let resp: Option<&[u8]>;
        let slow_resp;
        match fast(shared, &query[..n], src.ip(), Transport::Tcp, &mut out) {
            Fast::Answered(len) => resp = Some(&out[..len]),
            Fast::Drop => return,
            Fast::Slow(ecs) => {
                slow_resp = slow(shared, &query[..n], src, Transport::Tcp, ecs).await;
                resp = slow_resp.as_deref();
            }
        }
        let Some(resp) = resp else { return };
        let mut framed = Vec::with_capacity(resp.len() + 2);
        framed.extend_from_slice(&(resp.len() as u16).to_be_bytes());
        framed.extend_from_slice(resp);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steered_answers_truncate_when_they_do_not_fit() {
        // A question name of 200 bytes and 8 AAAA records do not fit in 512 bytes.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..4 {
            q.push(49);
            q.extend_from_slice(&[b'a'; 49]);
        }
        q.extend_from_slice(&[0, 0, 28, 0, 1]);
        let p = wire::parse(&q).expect("parses");
        let soa = [0u8; 30];
        let mut out = [0u8; 4096];
        let n = steered_response(&p, None, &soa, &mut out, 512);
        assert!(n <= 512);
        let n_big = steered_response(&p, None, &[0u8; 400], &mut out, 512);
        assert!(n_big <= 512, "{n_big}");
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(
            &out[6..10],
            &[0, 0, 0, 0],
            "no answer or authority records in a truncated reply"
        );
        let n_tcp = steered_response(&p, None, &[0u8; 400], &mut out, usize::from(u16::MAX));
        assert!(
            n_tcp > 512 && out[2] & 0x02 == 0,
            "over TCP the whole answer: {n_tcp}"
        );
    }
}
