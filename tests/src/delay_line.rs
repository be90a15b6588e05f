//! The WAN delay line: a userspace NFQUEUE that holds each forwarded packet for the one-way delay configured for
//! its (source subnet, destination subnet) pair, then accepts it. This kernel has no netem, so this is how the lab
//! gets WAN latency.
//!
//! Design:
//! - The core namespace sends every forwarded packet to an NFQUEUE ([`iptables_queue_rule`]). The delay line speaks the
//!   nfnetlink queue protocol directly over a netlink socket (safe `nix` calls, no C library), copying only the
//!   first [`COPY_RANGE_BYTES`] of each packet: the IPv4 addresses are all it needs.
//! - The first rule whose source and destination CIDRs match decides the delay. Each rule has one FIFO; with a
//!   constant delay per FIFO, packets leave in arrival order, so order within a flow is kept.
//! - The queue is bounded ([`Config::queue_max`] packets over all FIFOs). A packet that arrives when it is full is
//!   dropped (`NF_DROP`) and counted in `dropped_overflow`, like a router's tail drop.
//! - A rule may carry a loss percentage: such packets are dropped on arrival (`dropped_loss`), from a seeded PRNG
//!   so runs are repeatable.
//! - Packets matching no rule (and non-IPv4 packets) are accepted at once (`unmatched`).
//! - One thread: `ppoll` on the netlink socket and a signalfd, with the timeout set to the earliest head-of-line
//!   deadline. SIGUSR1 prints the counters, SIGTERM/SIGINT print them and exit. Packets still queued at exit are
//!   dropped by the kernel when the socket closes.

use std::fmt::Write as _;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::str::FromStr;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, setsockopt,
    socket, sockopt,
};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Bytes of each packet copied to userspace: enough for an IPv4 header with options.
pub const COPY_RANGE_BYTES: u16 = 128;
/// Default bound of packets held over all FIFOs.
pub const QUEUE_MAX_DEFAULT: usize = 4096;
/// Extra room in the kernel's queue beyond ours, so the kernel never drops before we can count.
const KERNEL_QUEUE_HEADROOM: usize = 16_384;
/// Receive buffer of the netlink socket (forced, needs `CAP_NET_ADMIN`), so bursts are not lost in the kernel.
const RCVBUF_BYTES: usize = 16 << 20;
/// Packets read per wakeup before due packets are released again.
const RECV_BATCH_MAX: usize = 1024;
/// Longest sleep when nothing is queued; bounds how stale a missed wakeup could ever be.
const IDLE_WAIT_MS: u64 = 1_000;
/// Rules in one config.
pub const RULES_MAX: usize = 4096;

/// Errors of the delay line.
#[derive(Debug, thiserror::Error)]
pub enum DelayLineError {
    /// A config line or flag is malformed.
    #[error("config line {line}: {reason}")]
    Config {
        /// 1-based line number (0 for a flag).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A netlink or poll system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// The kernel rejected a configuration message.
    #[error("kernel rejected {what}: {source}")]
    Kernel {
        /// Which message.
        what: &'static str,
        /// The errno it returned.
        source: nix::Error,
    },
    /// Writing the counters failed.
    #[error("write output: {0}")]
    Output(#[from] std::io::Error),
}

// === config ===

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    addr: u32,
    len: u8,
}

impl Ipv4Cidr {
    /// A prefix from an address and a length (host bits are cleared).
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, String> {
        if len > 32 {
            return Err(format!("prefix length {len} > 32"));
        }
        let mask = Self::mask(len);
        Ok(Ipv4Cidr {
            addr: u32::from(addr) & mask,
            len,
        })
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// Whether `ip` is inside the prefix.
    #[must_use]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == self.addr
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len: u8 = l.parse().map_err(|e| format!("{s:?}: {e}"))?;
        Self::new(addr, len)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

/// One line of the config: traffic from `src` to `dst` is held `delay` and lost with `loss_pct` percent.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Source prefix.
    pub src: Ipv4Cidr,
    /// Destination prefix.
    pub dst: Ipv4Cidr,
    /// One-way delay.
    pub delay: Duration,
    /// Loss percentage, 0..=100.
    pub loss_pct: f64,
}

impl Rule {
    /// Parses `SRC_CIDR DST_CIDR DELAY_MS [LOSS_PCT]`.
    pub fn parse(line: &str) -> Result<Self, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if !(3..=4).contains(&f.len()) {
            return Err(format!(
                "expected `SRC_CIDR DST_CIDR DELAY_MS [LOSS_PCT]`, got {line:?}"
            ));
        }
        let delay_ms: f64 = f[2].parse().map_err(|e| format!("delay {:?}: {e}", f[2]))?;
        if !(0.0..=60_000.0).contains(&delay_ms) {
            return Err(format!("delay {delay_ms} ms is outside 0..=60000"));
        }
        let loss_pct: f64 = match f.get(3) {
            Some(l) => l.parse().map_err(|e| format!("loss {l:?}: {e}"))?,
            None => 0.0,
        };
        if !(0.0..=100.0).contains(&loss_pct) {
            return Err(format!("loss {loss_pct}% is outside 0..=100"));
        }
        Ok(Rule {
            src: f[0].parse()?,
            dst: f[1].parse()?,
            delay: Duration::from_secs_f64(delay_ms / 1000.0),
            loss_pct,
        })
    }

    /// The rule as a config line.
    #[must_use]
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.src,
            self.dst,
            self.delay.as_secs_f64() * 1000.0,
            self.loss_pct
        )
    }
}

/// Parses a config file: one rule per line, `#` starts a comment.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, DelayLineError> {
    let mut rules = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let rule = Rule::parse(line).map_err(|reason| DelayLineError::Config { line: i + 1, reason })?;
        rules.push(rule);
        if rules.len() > RULES_MAX {
            return Err(DelayLineError::Config {
                line: i + 1,
                reason: format!("more than {RULES_MAX} rules"),
            });
        }
    }
    Ok(rules)
}

/// The delay line's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// NFQUEUE number to bind.
    pub queue_num: u16,
    /// Bound of packets held over all FIFOs; beyond it packets are dropped and counted.
    pub queue_max: usize,
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// Seed of the loss PRNG.
    pub seed: u64,
}

/// The `iptables` arguments that send every forwarded packet to queue `queue_num` in the core namespace. (This
/// kernel has no `nft_queue`, so nftables' own `queue` statement fails; iptables' NFQUEUE target works through
/// either backend.) Without a listener bound to the queue, forwarded packets are dropped: a dead delay line fails
/// loudly instead of silently removing the WAN delay.
#[must_use]
pub fn iptables_queue_rule(queue_num: u16) -> Vec<String> {
    ["-w", "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([queue_num.to_string()])
        .collect()
}

// === counters ===

/// Counters of one rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleCounters {
    /// The rule as a config line.
    pub rule: String,
    /// Packets accepted after the delay.
    pub accepted: u64,
    /// Packets dropped by the configured loss.
    pub dropped_loss: u64,
    /// Packets dropped because the queue was full.
    pub dropped_overflow: u64,
}

/// What the delay line did; printed as `counters {json}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    /// Packets read from the kernel.
    pub received: u64,
    /// Packets accepted after their delay.
    pub delayed_accepted: u64,
    /// Packets matching no rule (or not IPv4), accepted at once.
    pub unmatched: u64,
    /// Packets dropped because the queue held `queue_max` packets.
    pub dropped_overflow: u64,
    /// Packets dropped by a rule's loss rate.
    pub dropped_loss: u64,
    /// Most packets held at once.
    pub queued_max: u64,
    /// Packets held now.
    pub queued_now: u64,
    /// Per rule, in config order.
    pub rules: Vec<RuleCounters>,
}

impl Counters {
    /// Parses a `counters {json}` line.
    #[must_use]
    pub fn parse_line(line: &str) -> Option<Self> {
        serde_json::from_str(line.strip_prefix("counters ")?).ok()
    }
}

// === nfnetlink queue protocol ===

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_GSO: u32 = 4;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one nfnetlink queue message: nlmsghdr + nfgenmsg + attributes.
struct MsgBuilder {
    buf: Vec<u8>,
}

impl MsgBuilder {
    fn new(msg_type: u16, flags: u16, seq: u32, queue_num: u16) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg_type).to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, resource id = queue number (big endian).
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&queue_num.to_be_bytes());
        MsgBuilder { buf }
    }

    fn attr(mut self, kind: u16, payload: &[u8]) -> Self {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// A packet message from the kernel: its id and the first bytes of the packet.
struct PacketMsg<'a> {
    id: u32,
    payload: &'a [u8],
}

/// Walks the netlink messages of one datagram.
fn for_each_msg(mut data: &[u8], mut f: impl FnMut(u16, &[u8])) {
    while data.len() >= 16 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            return;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        f(kind, &data[16..len]);
        data = &data[align4(len).min(data.len())..];
    }
}

fn parse_packet(body: &[u8]) -> Option<PacketMsg<'_>> {
    // Skip the 4-byte nfgenmsg, then walk the attributes.
    let mut attrs = body.get(4..)?;
    let mut id = None;
    let mut payload: &[u8] = &[];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match kind {
            NFQA_PACKET_HDR if value.len() >= 4 => {
                id = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]));
            }
            NFQA_PAYLOAD => payload = value,
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    Some(PacketMsg { id: id?, payload })
}

/// Source and destination of an IPv4 packet.
fn ipv4_addrs(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some((src, dst))
}

/// The netlink socket bound to one queue.
struct NfQueue {
    fd: OwnedFd,
    queue_num: u16,
    seq: u32,
    /// Verdict messages waiting to be sent in one `send`.
    pending: Vec<u8>,
}

impl NfQueue {
    fn open(queue_num: u16, kernel_queue_max: u32) -> Result<Self, DelayLineError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|source| DelayLineError::Sys {
            context: "netlink socket",
            source,
        })?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|source| DelayLineError::Sys {
            context: "bind",
            source,
        })?;
        // Best effort: without CAP_NET_ADMIN the default buffer stays, and bursts may be lost in the kernel.
        if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF_BYTES).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF_BYTES);
        }
        let mut q = NfQueue {
            fd,
            queue_num,
            seq: 0,
            pending: Vec::new(),
        };
        let mut cmd = [0u8; 4];
        cmd[0] = NFQNL_CFG_CMD_BIND;
        q.config("bind", NFQA_CFG_CMD, &cmd)?;
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&u32::from(COPY_RANGE_BYTES).to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        q.config("copy mode", NFQA_CFG_PARAMS, &params)?;
        q.config(
            "queue max length",
            NFQA_CFG_QUEUE_MAXLEN,
            &kernel_queue_max.to_be_bytes(),
        )?;
        // GSO packets come whole (we never touch the payload), which saves the kernel segmenting them.
        let msg = MsgBuilder::new(NFQNL_MSG_CONFIG, NLM_F_ACK, q.next_seq(), queue_num)
            .attr(NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes())
            .attr(NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes())
            .finish();
        q.request("flags", &msg)?;
        Ok(q)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn config(&mut self, what: &'static str, kind: u16, payload: &[u8]) -> Result<(), DelayLineError> {
        let msg = MsgBuilder::new(NFQNL_MSG_CONFIG, NLM_F_ACK, self.next_seq(), self.queue_num)
            .attr(kind, payload)
            .finish();
        self.request(what, &msg)
    }

    /// Sends a message with `NLM_F_ACK` and waits (bounded) for its ack.
    fn request(&mut self, what: &'static str, msg: &[u8]) -> Result<(), DelayLineError> {
        send(self.fd.as_raw_fd(), msg, MsgFlags::empty()).map_err(|source| DelayLineError::Sys {
            context: what,
            source,
        })?;
        let mut buf = vec![0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let _ = ppoll(
                &mut fds,
                Some(TimeSpec::from_duration(Duration::from_millis(100))),
                None,
            );
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(nix::Error::EAGAIN) => continue,
                Err(source) => {
                    return Err(DelayLineError::Sys {
                        context: what,
                        source,
                    });
                }
            };
            let mut result = None;
            for_each_msg(&buf[..n], |kind, body| {
                if kind == NLMSG_ERROR && body.len() >= 4 {
                    let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                    result = Some(errno);
                } else if kind == NLMSG_DONE {
                    result = Some(0);
                }
            });
            match result {
                Some(0) => return Ok(()),
                Some(e) => {
                    return Err(DelayLineError::Kernel {
                        what,
                        source: nix::Error::from_raw(e.abs()),
                    });
                }
                None => {}
            }
        }
        Err(DelayLineError::Kernel {
            what,
            source: nix::Error::ETIMEDOUT,
        })
    }

    fn push_verdict(&mut self, id: u32, verdict: u32) {
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&verdict.to_be_bytes());
        hdr[4..].copy_from_slice(&id.to_be_bytes());
        let seq = self.next_seq();
        let msg = MsgBuilder::new(NFQNL_MSG_VERDICT, 0, seq, self.queue_num)
            .attr(NFQA_VERDICT_HDR, &hdr)
            .finish();
        self.pending.extend_from_slice(&msg);
        // Netlink takes many messages per datagram; keep datagrams well under a page multiple.
        if self.pending.len() > 32 * 1024 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = send(self.fd.as_raw_fd(), &self.pending, MsgFlags::empty()) {
            // Lost verdicts leave packets in the kernel queue until the socket closes; say so loudly.
            tracing::error!(error = %e, "sending verdicts failed");
        }
        self.pending.clear();
    }
}

// === the line ===

/// xorshift64*: enough randomness for loss decisions, and seeded, so runs repeat.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The per-rule FIFOs and counters; pure, so it is unit-tested without a kernel.
#[derive(Debug)]
struct Line {
    rules: Vec<Rule>,
    fifos: Vec<std::collections::VecDeque<(Instant, u32)>>,
    queue_max: usize,
    queued: usize,
    rng: Rng,
    counters: Counters,
}

/// What to do with a packet right now.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Accept,
    Drop,
    Held,
}

impl Line {
    fn new(config: &Config) -> Self {
        Line {
            fifos: config
                .rules
                .iter()
                .map(|_| std::collections::VecDeque::new())
                .collect(),
            rules: config.rules.clone(),
            queue_max: config.queue_max,
            queued: 0,
            rng: Rng(config.seed | 1),
            counters: Counters {
                rules: config
                    .rules
                    .iter()
                    .map(|r| RuleCounters {
                        rule: r.to_line(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        }
    }

    fn arrive(&mut self, now: Instant, id: u32, packet: &[u8]) -> Action {
        self.counters.received += 1;
        let Some((src, dst)) = ipv4_addrs(packet) else {
            self.counters.unmatched += 1;
            return Action::Accept;
        };
        let Some(i) = self
            .rules
            .iter()
            .position(|r| r.src.contains(src) && r.dst.contains(dst))
        else {
            self.counters.unmatched += 1;
            return Action::Accept;
        };
        let rule = &self.rules[i];
        if rule.loss_pct > 0.0 && self.rng.next_f64() * 100.0 < rule.loss_pct {
            self.counters.dropped_loss += 1;
            self.counters.rules[i].dropped_loss += 1;
            return Action::Drop;
        }
        if self.queued >= self.queue_max {
            self.counters.dropped_overflow += 1;
            self.counters.rules[i].dropped_overflow += 1;
            return Action::Drop;
        }
        self.fifos[i].push_back((now + rule.delay, id));
        self.queued += 1;
        self.counters.queued_max = self.counters.queued_max.max(self.queued as u64);
        Action::Held
    }

    /// Pops every packet whose deadline has passed.
    fn release_due(&mut self, now: Instant, mut out: impl FnMut(u32)) {
        for (i, fifo) in self.fifos.iter_mut().enumerate() {
            while let Some(&(deadline, id)) = fifo.front() {
                if deadline > now {
                    break;
                }
                fifo.pop_front();
                self.queued -= 1;
                self.counters.delayed_accepted += 1;
                self.counters.rules[i].accepted += 1;
                out(id);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.fifos.iter().filter_map(|f| f.front().map(|&(d, _)| d)).min()
    }

    fn snapshot(&self) -> Counters {
        let mut c = self.counters.clone();
        c.queued_now = self.queued as u64;
        c
    }
}

fn write_counters(out: &mut impl Write, counters: &Counters) -> Result<(), DelayLineError> {
    let json = serde_json::to_string(counters).map_err(std::io::Error::other)?;
    writeln!(out, "counters {json}")?;
    out.flush()?;
    Ok(())
}

/// Runs the delay line until SIGTERM or SIGINT. Prints `ready queue=N rules=M` once bound, `counters {json}` on
/// SIGUSR1 and at exit.
///
/// Call it from the main thread of a process before any other thread starts: it blocks SIGTERM, SIGINT and
/// SIGUSR1 in the calling thread to receive them through a signalfd.
pub fn run(config: &Config, out: &mut impl Write) -> Result<Counters, DelayLineError> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1] {
        mask.add(s);
    }
    mask.thread_block().map_err(|source| DelayLineError::Sys {
        context: "block signals",
        source,
    })?;
    let sfd =
        SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(|source| {
            DelayLineError::Sys {
                context: "signalfd",
                source,
            }
        })?;

    let kernel_max = (config.queue_max + KERNEL_QUEUE_HEADROOM) as u32;
    let mut q = NfQueue::open(config.queue_num, kernel_max)?;
    let mut line = Line::new(config);
    writeln!(
        out,
        "ready queue={} rules={}",
        config.queue_num,
        config.rules.len()
    )?;
    out.flush()?;

    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        line.release_due(now, |id| q.push_verdict(id, NF_ACCEPT));
        q.flush();
        let wait = line
            .next_deadline()
            .map_or(Duration::from_millis(IDLE_WAIT_MS), |d| {
                d.saturating_duration_since(Instant::now())
            });
        let (nl_ready, sig_ready) = {
            let mut fds = [
                PollFd::new(q.fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(source) => {
                    return Err(DelayLineError::Sys {
                        context: "ppoll",
                        source,
                    });
                }
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            (ready(&fds[0]), ready(&fds[1]))
        };
        if nl_ready {
            for _ in 0..RECV_BATCH_MAX {
                let n = match recv(q.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => n,
                    Err(nix::Error::EAGAIN) => break,
                    // The kernel lost messages for us (socket buffer full): keep going, they were dropped.
                    Err(nix::Error::ENOBUFS) => continue,
                    Err(source) => {
                        return Err(DelayLineError::Sys {
                            context: "recv",
                            source,
                        });
                    }
                };
                let arrived = Instant::now();
                let mut verdicts = Vec::new();
                for_each_msg(&buf[..n], |kind, body| {
                    if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
                        && let Some(p) = parse_packet(body)
                    {
                        match line.arrive(arrived, p.id, p.payload) {
                            Action::Accept => verdicts.push((p.id, NF_ACCEPT)),
                            Action::Drop => verdicts.push((p.id, NF_DROP)),
                            Action::Held => {}
                        }
                    }
                });
                for (id, v) in verdicts {
                    q.push_verdict(id, v);
                }
            }
        }
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                write_counters(out, &line.snapshot())?;
                if info.ssi_signo != Signal::SIGUSR1 as u32 {
                    q.flush();
                    return Ok(line.snapshot());
                }
            }
        }
    }
}

/// Renders rules as a config file.
#[must_use]
pub fn rules_file(rules: &[Rule]) -> String {
    let mut s = String::from("# SRC_CIDR DST_CIDR DELAY_MS LOSS_PCT\n");
    for r in rules {
        let _ = writeln!(s, "{}", r.to_line());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn config(lines: &str, queue_max: usize) -> Config {
        Config {
            queue_num: 0,
            queue_max,
            rules: parse_rules(lines).unwrap(),
            seed: 7,
        }
    }

    #[test]
    fn parses_rules_and_rejects_bad_lines() {
        let rules =
            parse_rules("# c\n198.18.100.0/24 198.18.10.0/24 2.5\n198.18.10.0/24 198.18.100.0/24 10 1.5\n")
                .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].delay, Duration::from_micros(2500));
        assert!((rules[1].loss_pct - 1.5).abs() < f64::EPSILON);
        let err = parse_rules("198.18.0.0/24 198.18.1.0/24\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(parse_rules("198.18.0.0/33 198.18.1.0/24 1\n").is_err());
        assert!(parse_rules("198.18.0.0/24 198.18.1.0/24 1 101\n").is_err());
    }

    #[test]
    fn holds_in_order_releases_at_deadline_and_bounds_the_queue() {
        let mut line = Line::new(&config("198.18.100.0/24 198.18.10.0/24 10\n", 3));
        let t0 = Instant::now();
        let p = packet([198, 18, 100, 10], [198, 18, 10, 10]);
        for id in 1..=4 {
            let want = if id <= 3 { Action::Held } else { Action::Drop };
            assert_eq!(line.arrive(t0, id, &p), want);
        }
        assert_eq!(
            line.arrive(t0, 9, &packet([198, 18, 1, 1], [198, 18, 10, 10])),
            Action::Accept
        );
        let mut out = Vec::new();
        line.release_due(t0 + Duration::from_millis(9), |id| out.push(id));
        assert!(out.is_empty());
        line.release_due(t0 + Duration::from_millis(10), |id| out.push(id));
        assert_eq!(out, [1, 2, 3]);
        let c = line.snapshot();
        assert_eq!(
            (
                c.received,
                c.delayed_accepted,
                c.dropped_overflow,
                c.unmatched,
                c.queued_max
            ),
            (5, 3, 1, 1, 3)
        );
    }

    #[test]
    fn loss_rate_is_roughly_the_configured_one() {
        let mut line = Line::new(&config("0.0.0.0/0 0.0.0.0/0 0 20\n", 100_000));
        let p = packet([198, 18, 100, 10], [198, 18, 10, 10]);
        let now = Instant::now();
        for id in 0..10_000 {
            line.arrive(now, id, &p);
        }
        let lost = line.snapshot().dropped_loss;
        assert!((1_700..=2_300).contains(&lost), "lost {lost} of 10000 at 20%");
    }

    #[test]
    fn builds_aligned_netlink_messages() {
        let msg = MsgBuilder::new(NFQNL_MSG_CONFIG, NLM_F_ACK, 1, 5)
            .attr(NFQA_CFG_PARAMS, &[0; 5])
            .finish();
        assert_eq!(msg.len(), 16 + 4 + 12);
        assert_eq!(
            u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize,
            msg.len()
        );
        assert_eq!(&msg[18..20], &5u16.to_be_bytes());
    }
}
