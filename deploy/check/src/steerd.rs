//! A real steerd on loopback for the checks that need one (metrics, reloads).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running steerd on 127.0.0.1 (ports chosen by the kernel), killed on drop.
#[derive(Debug)]
pub struct Steerd {
    child: Child,
    /// Its admin listener.
    pub admin: SocketAddr,
}

impl Steerd {
    /// Starts `steerd serve` with `policy` and `zone` and waits for its address line.
    #[must_use]
    pub fn start(policy: &Path, zone: &Path) -> Steerd {
        let mut child = Command::new(&crate::bins::bins().steerd)
            .args([
                "serve",
                "--dns",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--policy",
            ])
            .arg(policy)
            .arg("--zone")
            .arg(zone)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("steerd starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("steerd prints its addresses");
        let admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("admin="))
            .unwrap_or_else(|| panic!("no admin= in {line:?}"))
            .parse()
            .expect("an address");
        Steerd { child, admin }
    }

    /// One raw HTTP/1.1 exchange with the admin listener (the request must say `Connection: close`).
    #[must_use]
    pub fn http(&self, request: &str) -> String {
        let mut s = TcpStream::connect_timeout(&self.admin, Duration::from_secs(5))
            .expect("connect to steerd's admin port");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        s.write_all(request.as_bytes()).expect("send");
        let mut out = String::new();
        s.take(4 << 20).read_to_string(&mut out).expect("read");
        out
    }

    /// Its /metrics reply (headers and body).
    #[must_use]
    pub fn metrics(&self) -> String {
        self.http("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    }
}

impl Drop for Steerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
