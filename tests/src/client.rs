//! A streaming client that behaves like a real SDK user: resolve the service name through a given DNS server (the
//! site's resolver), connect to the answer, stream a chat completion and count its tokens; on a failure before the
//! stream starts, back off exponentially with full jitter, re-resolve and try again.
//!
//! A stream cut after it started is reported as broken and not retried (SDKs surface that error to the
//! application), unless [`ClientConfig::retry_broken`] is set.
//!
//! Sockets are created by the calling thread: to run clients inside a site's namespace, run their tokio runtime
//! on a thread from [`crate::netns::NetNs::spawn_thread`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::time::{Instant, timeout};

/// Most attempts one session may make.
pub const ATTEMPTS_MAX: u32 = 20;
/// Bytes of SSE data one stream may deliver before it is cut off as runaway.
const STREAM_BYTES_MAX: usize = 64 << 20;
/// DNS query tries per resolution.
const DNS_TRIES: u32 = 3;

/// Errors of one attempt.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
pub enum ClientError {
    /// The name did not resolve (timeout, error code, no A record).
    #[error("resolve: {0}")]
    Resolve(String),
    /// The TCP connection failed.
    #[error("connect {addr}: {reason}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server answered with a non-2xx status.
    #[error("status {0}")]
    Status(u16),
    /// The request or stream failed or timed out.
    #[error("stream: {0}")]
    Stream(String),
}

/// How clients behave.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The service name, e.g. `api.infer.example.com`.
    pub name: String,
    /// The DNS server to ask (the site's resolver).
    pub dns_server: SocketAddr,
    /// Port of the inference endpoint.
    pub port: u16,
    /// Tokens to ask for.
    pub max_tokens: u32,
    /// Attempts per session (bounded by [`ATTEMPTS_MAX`]).
    pub attempts_max: u32,
    /// First backoff; doubles per failed attempt.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Timeout of one DNS query.
    pub dns_timeout: Duration,
    /// Timeout of the TCP connect.
    pub connect_timeout: Duration,
    /// Timeout of a whole stream.
    pub request_timeout: Duration,
    /// Longest silence between two chunks before the stream counts as broken.
    pub idle_timeout: Duration,
    /// Retry a stream that broke after its first token.
    pub retry_broken: bool,
    /// Seed of the jitter PRNG.
    pub seed: u64,
}

impl ClientConfig {
    /// Defaults like an SDK's: 5 attempts, backoff 100 ms doubling to 2 s.
    #[must_use]
    pub fn new(name: &str, dns_server: SocketAddr, port: u16) -> Self {
        ClientConfig {
            name: name.to_owned(),
            dns_server,
            port,
            max_tokens: 16,
            attempts_max: 5,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            dns_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_mins(1),
            idle_timeout: Duration::from_secs(5),
            retry_broken: false,
            seed: 1,
        }
    }
}

/// One attempt of a session.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The address connected to, if the name resolved.
    pub addr: Option<IpAddr>,
    /// TTL of the DNS answer used, in seconds.
    pub dns_ttl_s: Option<u32>,
    /// Region named by the server (`x-steer-region`).
    pub region: Option<String>,
    /// Tokens received.
    pub tokens: u32,
    /// Whether `[DONE]` arrived.
    pub completed: bool,
    /// Time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Duration of the attempt, ms.
    pub duration_ms: f64,
    /// What failed, if anything.
    pub error: Option<ClientError>,
}

/// The outcome of one session (all its attempts).
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// The last address connected to.
    pub resolved: Option<IpAddr>,
    /// The region of the last attempt.
    pub region: Option<String>,
    /// Tokens of the last attempt.
    pub tokens: u32,
    /// Whether the last attempt finished with `[DONE]`.
    pub completed: bool,
    /// Whether a stream was cut after its first token.
    pub broken: bool,
    /// Time to first token of the last attempt, ms.
    pub ttft_ms: Option<f64>,
    /// From the session's start to its end, ms.
    pub duration_ms: f64,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
}

/// Resolves `name`'s A records through `server` (UDP, recursion desired); returns the addresses and the TTL.
pub async fn resolve_a(
    server: SocketAddr,
    name: &str,
    per_try: Duration,
) -> Result<(Vec<Ipv4Addr>, u32), ClientError> {
    let qname = Name::from_str(name).map_err(|e| ClientError::Resolve(format!("bad name {name:?}: {e}")))?;
    let mut msg = Message::query();
    msg.add_query(Query::query(qname, RecordType::A));
    msg.metadata.recursion_desired = true;
    let wire = msg.to_vec().map_err(|e| ClientError::Resolve(e.to_string()))?;
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        "[::]:0".parse().expect("addr")
    };
    let sock = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| ClientError::Resolve(e.to_string()))?;
    sock.connect(server)
        .await
        .map_err(|e| ClientError::Resolve(e.to_string()))?;
    let mut last = String::from("no answer");
    let mut buf = vec![0u8; 4096];
    for _ in 0..DNS_TRIES {
        sock.send(&wire)
            .await
            .map_err(|e| ClientError::Resolve(e.to_string()))?;
        let deadline = Instant::now() + per_try;
        while let Ok(r) = timeout(
            deadline.saturating_duration_since(Instant::now()),
            sock.recv(&mut buf),
        )
        .await
        {
            let n = r.map_err(|e| ClientError::Resolve(e.to_string()))?;
            let Ok(resp) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if resp.metadata.id != msg.metadata.id {
                continue;
            }
            if resp.metadata.response_code != ResponseCode::NoError {
                return Err(ClientError::Resolve(format!(
                    "{name}: {}",
                    resp.metadata.response_code
                )));
            }
            let mut addrs = Vec::new();
            let mut ttl = u32::MAX;
            for rec in &resp.answers {
                if let RData::A(a) = &rec.data {
                    addrs.push(a.0);
                    ttl = ttl.min(rec.ttl);
                }
            }
            if addrs.is_empty() {
                return Err(ClientError::Resolve(format!("{name}: no A record")));
            }
            return Ok((addrs, ttl));
        }
        last = format!("timeout after {per_try:?}");
    }
    Err(ClientError::Resolve(format!("{name} via {server}: {last}")))
}

/// One streamed chat completion to `addr`; `host` is the HTTP Host header.
pub async fn stream_completion(cfg: &ClientConfig, addr: SocketAddr, host: &str) -> Attempt {
    let start = Instant::now();
    let mut at = Attempt {
        addr: Some(addr.ip()),
        dns_ttl_s: None,
        region: None,
        tokens: 0,
        completed: false,
        ttft_ms: None,
        duration_ms: 0.0,
        error: None,
    };
    let r = timeout(cfg.request_timeout, stream_inner(cfg, addr, host, start, &mut at)).await;
    at.error = match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(ClientError::Stream(format!(
            "timeout after {:?}",
            cfg.request_timeout
        ))),
    };
    at.duration_ms = ms(start.elapsed());
    at
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn stream_inner(
    cfg: &ClientConfig,
    addr: SocketAddr,
    host: &str,
    start: Instant,
    at: &mut Attempt,
) -> Result<(), ClientError> {
    let connect_err = |reason: String| ClientError::Connect { addr, reason };
    let tcp = timeout(cfg.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| connect_err(format!("timeout after {:?}", cfg.connect_timeout)))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let conn_task = tokio::spawn(conn);
    let body = serde_json::json!({
        "model": "mock",
        "stream": true,
        "max_tokens": cfg.max_tokens,
        "messages": [{"role": "user", "content": "steer lab"}],
    });
    let req = hyper::Request::post("/v1/chat/completions")
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| ClientError::Stream(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Stream(e.to_string()));
    let result = async {
        let resp = resp?;
        at.region = resp
            .headers()
            .get("x-steer-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !resp.status().is_success() {
            return Err(ClientError::Status(resp.status().as_u16()));
        }
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        let mut seen = 0usize;
        loop {
            let frame = match timeout(cfg.idle_timeout, body.frame()).await {
                Err(_) => return Err(ClientError::Stream(format!("idle for {:?}", cfg.idle_timeout))),
                Ok(None) => return Err(ClientError::Stream("stream ended without [DONE]".into())),
                Ok(Some(Err(e))) => return Err(ClientError::Stream(e.to_string())),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else { continue };
            seen += data.len();
            if seen > STREAM_BYTES_MAX {
                return Err(ClientError::Stream(format!("more than {STREAM_BYTES_MAX} bytes")));
            }
            pending.extend_from_slice(&data);
            // SSE events end with a blank line.
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                for line in String::from_utf8_lossy(&event).lines() {
                    let Some(payload) = line.strip_prefix("data: ") else {
                        continue;
                    };
                    if payload.trim() == "[DONE]" {
                        at.completed = true;
                        return Ok(());
                    }
                    if has_content(payload) {
                        if at.tokens == 0 {
                            at.ttft_ms = Some(ms(start.elapsed()));
                        }
                        at.tokens += 1;
                    }
                }
            }
        }
    }
    .await;
    conn_task.abort();
    result
}

/// Whether an SSE chunk carries a token (non-empty `choices[0].delta.content`).
fn has_content(payload: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(|s| !s.is_empty())
        })
        .unwrap_or(false)
}

/// A client with a DNS cache that lives for the answer's TTL and is dropped after any failure.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    cache: Option<(Vec<Ipv4Addr>, u32, Instant)>,
    rng: u64,
    next_addr: usize,
}

impl Client {
    /// A client with `cfg`.
    #[must_use]
    pub fn new(cfg: ClientConfig) -> Self {
        let rng = cfg.seed | 1;
        Client {
            cfg,
            cache: None,
            rng,
            next_addr: 0,
        }
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        max.mul_f64((self.rng >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// The delay before attempt `n + 1` after `n` failures: full jitter over `base x 2^(n-1)`, capped.
    fn backoff(&mut self, failures: u32) -> Duration {
        let exp = self
            .cfg
            .backoff_base
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        let cap = exp.min(self.cfg.backoff_max);
        self.jitter(cap)
    }

    async fn resolve(&mut self) -> Result<(Ipv4Addr, u32), ClientError> {
        let now = Instant::now();
        if let Some((addrs, ttl, exp)) = &self.cache
            && now < *exp
        {
            self.next_addr = self.next_addr.wrapping_add(1);
            return Ok((addrs[self.next_addr % addrs.len()], *ttl));
        }
        let (addrs, ttl) = resolve_a(self.cfg.dns_server, &self.cfg.name, self.cfg.dns_timeout).await?;
        let first = addrs[0];
        self.cache = Some((addrs, ttl, now + Duration::from_secs(u64::from(ttl))));
        self.next_addr = 0;
        Ok((first, ttl))
    }

    /// Runs one session: attempts until a stream completes, breaks (unless retried), or attempts run out.
    pub async fn session(&mut self) -> SessionRecord {
        let start = Instant::now();
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut broken = false;
        let attempts_max = self.cfg.attempts_max.clamp(1, ATTEMPTS_MAX);
        for n in 0..attempts_max {
            if n > 0 {
                let wait = self.backoff(n);
                tokio::time::sleep(wait).await;
            }
            let t = Instant::now();
            let at = match self.resolve().await {
                Err(e) => Attempt {
                    addr: None,
                    dns_ttl_s: None,
                    region: None,
                    tokens: 0,
                    completed: false,
                    ttft_ms: None,
                    duration_ms: ms(t.elapsed()),
                    error: Some(e),
                },
                Ok((ip, ttl)) => {
                    let mut at =
                        stream_completion(&self.cfg, SocketAddr::from((ip, self.cfg.port)), &self.cfg.name)
                            .await;
                    at.dns_ttl_s = Some(ttl);
                    at
                }
            };
            let failed = at.error.is_some();
            let cut = failed && at.tokens > 0;
            broken |= cut;
            attempts.push(at);
            if !failed || (cut && !self.cfg.retry_broken) {
                break;
            }
            // Like an SDK behind the OS resolver: after a failure, ask DNS again.
            self.cache = None;
        }
        let last = attempts.last().cloned().expect("at least one attempt");
        SessionRecord {
            resolved: last.addr,
            region: last.region,
            tokens: last.tokens,
            completed: last.completed,
            broken,
            ttft_ms: last.ttft_ms,
            duration_ms: ms(start.elapsed()),
            attempts,
        }
    }
}

/// A plain HTTP/1.1 request (for `/health`, `/metrics`, `/control`); returns the status and the body text.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    limit: Duration,
) -> Result<(u16, String), ClientError> {
    let run = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| ClientError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let conn_task = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .map_err(|e| ClientError::Stream(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Stream(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Stream(e.to_string()))?
            .to_bytes();
        conn_task.abort();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    timeout(limit, run)
        .await
        .map_err(|_| ClientError::Stream(format!("timeout after {limit:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let mut cfg = ClientConfig::new("a.example.", "127.0.0.1:53".parse().unwrap(), 80);
        cfg.backoff_base = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(800);
        let mut c = Client::new(cfg);
        for failures in 1..10u32 {
            let cap = Duration::from_millis(100 * (1 << (failures - 1)).min(8));
            let waits: Vec<_> = (0..50).map(|_| c.backoff(failures)).collect();
            assert!(
                waits.iter().all(|w| *w <= cap),
                "{failures}: {waits:?} over {cap:?}"
            );
            assert!(waits.iter().any(|w| *w != waits[0]), "no jitter: {waits:?}");
        }
    }

    #[test]
    fn counts_only_chunks_with_content() {
        assert!(has_content(r#"{"choices":[{"delta":{"content":"t0 "}}]}"#));
        assert!(!has_content(
            r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#
        ));
        assert!(!has_content("garbage"));
    }
}
