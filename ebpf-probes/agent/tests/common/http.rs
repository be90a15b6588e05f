//! A tiny real HTTP/1.1 server for the tests (a fake steerd, a fake inference server): one
//! thread per connection, bounded reads, and a switch that closes the listener ("unreachable").
#![allow(
    clippy::disallowed_types,
    reason = "real sockets and real processes are timed by the real monotonic clock (no tokio here)"
)]

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steering_core::telemetry::wire::{GateCommand, GateMode, Report, ReportReply};

use super::Netns;

/// The request head and body are cut off here.
const REQUEST_BYTES_MAX: usize = 2 << 20;
/// A hanging answer holds the connection at most this long.
const HANG_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Lowercase names.
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

/// What the server does with one request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Respond(u16, String),
    /// Read the request, answer nothing, hold the connection (bounded by `HANG_MAX`).
    Hang,
}

type Handler = Arc<dyn Fn(&Request) -> Answer + Send + Sync>;

/// A server on 127.0.0.1 (of the namespace it was started in); stopped on drop.
pub(crate) struct FakeHttp {
    pub(crate) addr: SocketAddr,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FakeHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHttp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeHttp {
    /// Starts serving in `ns` (a thread enters it) with `handler`.
    pub(crate) fn start(ns: &Netns, handler: Handler) -> FakeHttp {
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0"));
        let addr = listener.local_addr().expect("local addr");
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s, name) = (Arc::clone(&down), Arc::clone(&stop), ns.name.clone());
        std::thread::spawn(move || {
            Netns { name }.enter_and_forget();
            serve(Some(listener), addr, &d, &s, &handler);
        });
        FakeHttp { addr, down, stop }
    }

    /// `true` closes the listener (connects are refused) until set back to `false`.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    down: &AtomicBool,
    stop: &AtomicBool,
    handler: &Handler,
) {
    while !stop.load(Ordering::SeqCst) {
        if down.load(Ordering::SeqCst) {
            listener = None;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let l = listener.get_or_insert_with(|| {
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("rebinding {addr}: {e}"))
        });
        l.set_nonblocking(true).expect("nonblocking");
        match l.accept() {
            Ok((c, _)) => {
                let h = Arc::clone(handler);
                std::thread::spawn(move || handle(c, &h));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept on {addr}: {e}"),
        }
    }
}

fn handle(mut c: TcpStream, handler: &Handler) {
    c.set_nonblocking(false).expect("blocking");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let Some(req) = read_request(&mut c) else {
        return;
    };
    match handler(&req) {
        Answer::Respond(status, body) => {
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Answer::Hang => {
            // Hold the connection until the client gives up (EOF) or HANG_MAX.
            let started = Instant::now();
            c.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let mut b = [0u8; 64];
            while started.elapsed() < HANG_MAX {
                if let Ok(0) = c.read(&mut b) {
                    break;
                }
            }
        }
    }
}

fn read_request(c: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > REQUEST_BYTES_MAX {
            return None;
        }
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(REQUEST_BYTES_MAX);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

// === fake steerd ===

/// How the fake steerd answers reports.
#[derive(Debug, Clone)]
pub(crate) enum SteerdMode {
    /// 200 with this reply (the report is recorded as accepted).
    Reply(ReportReply),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 500.
    Error,
    /// No answer.
    Hang,
}

/// A report the fake steerd accepted, with the request's authorization header.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub(crate) authorization: Option<String>,
    pub(crate) report: Report,
}

pub(crate) struct FakeSteerd {
    pub(crate) http: FakeHttp,
    mode: Arc<Mutex<SteerdMode>>,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    /// Requests seen in any mode.
    seen: Arc<Mutex<u64>>,
}

pub(crate) fn reply(mode: GateMode, rate_per_s: u32, burst: u32, interval_ms: u32) -> ReportReply {
    ReportReply {
        gate: GateCommand {
            mode,
            rate_per_s,
            burst,
        },
        interval_ms,
    }
}

impl FakeSteerd {
    pub(crate) fn start(ns: &Netns, mode: SteerdMode) -> FakeSteerd {
        let mode = Arc::new(Mutex::new(mode));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(0));
        let (m, a, s) = (Arc::clone(&mode), Arc::clone(&accepted), Arc::clone(&seen));
        let handler: Handler = Arc::new(move |req: &Request| {
            *s.lock().unwrap() += 1;
            if req.method != "POST" || req.path != "/v1/reports" {
                return Answer::Respond(404, format!("no route {} {}", req.method, req.path));
            }
            let mode = m.lock().unwrap().clone();
            match mode {
                SteerdMode::Reply(r) => {
                    let report: Report = serde_json::from_slice(&req.body).unwrap_or_else(|e| {
                        panic!(
                            "the agent sent a report that does not parse: {e}: {}",
                            String::from_utf8_lossy(&req.body)
                        )
                    });
                    a.lock().unwrap().push(Accepted {
                        authorization: req.headers.get("authorization").cloned(),
                        report,
                    });
                    Answer::Respond(200, serde_json::to_string(&r).expect("reply json"))
                }
                SteerdMode::Garbage => Answer::Respond(200, "<html>not json</html>".into()),
                SteerdMode::Error => Answer::Respond(500, "{\"error\":\"boom\"}".into()),
                SteerdMode::Hang => Answer::Hang,
            }
        });
        FakeSteerd {
            http: FakeHttp::start(ns, handler),
            mode,
            accepted,
            seen,
        }
    }

    pub(crate) fn set_mode(&self, mode: SteerdMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub(crate) fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }

    pub(crate) fn seen(&self) -> u64 {
        *self.seen.lock().unwrap()
    }

    /// Waits (bounded) until `ok` holds for the accepted reports; panics with `what` otherwise.
    pub(crate) fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&[Accepted]) -> bool) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if ok(&self.accepted.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = self.accepted.lock().unwrap().len();
        panic!("timed out after {timeout:?} waiting for {what} ({n} reports accepted)");
    }
}
