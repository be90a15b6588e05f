//! The real binaries: built once per test process with the workspace's cargo, then asked for their
//! `--help` or searched for the names they read (environment variables, metric names).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the built `steerd` and `steer-probe`.
#[derive(Debug, Clone)]
pub struct Bins {
    pub steerd: PathBuf,
    pub steer_probe: PathBuf,
}

/// Builds `dns-server` and `steer-probe` (a no-op when they are up to date) and returns the
/// executables cargo reports. `STEERD_BIN` and `STEER_PROBE_BIN` override both.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        if let (Ok(a), Ok(b)) = (std::env::var("STEERD_BIN"), std::env::var("STEER_PROBE_BIN")) {
            return Bins {
                steerd: a.into(),
                steer_probe: b.into(),
            };
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .current_dir(crate::root())
            .args([
                "build",
                "-p",
                "dns-server",
                "-p",
                "steer-probe",
                "--bins",
                "--message-format=json",
            ])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo build -p dns-server -p steer-probe failed"
        );
        let mut steerd = None;
        let mut probe = None;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let exe = v.get("executable").and_then(serde_json::Value::as_str);
            match (v.pointer("/target/name").and_then(serde_json::Value::as_str), exe) {
                (Some("steerd"), Some(e)) => steerd = Some(PathBuf::from(e)),
                (Some("steer-probe"), Some(e)) => probe = Some(PathBuf::from(e)),
                _ => {}
            }
        }
        Bins {
            steerd: steerd.expect("cargo built steerd"),
            steer_probe: probe.expect("cargo built steer-probe"),
        }
    })
}

/// What `BIN ARGS... --help` prints.
#[must_use]
pub fn help(bin: &std::path::Path, sub: &[&str]) -> String {
    let out = Command::new(bin)
        .args(sub)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {sub:?} --help: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The long flags (`--name`) that a clap help text lists.
#[must_use]
pub fn flags_of_help(help: &str) -> Vec<String> {
    let mut v = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        let t = t
            .strip_prefix("-h, ")
            .or_else(|| t.strip_prefix("-V, "))
            .unwrap_or(t);
        let t = if t.len() > 4 && t.as_bytes()[0] == b'-' && t.as_bytes()[2] == b',' {
            &t[4..]
        } else {
            t
        };
        if let Some(rest) = t.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                v.push(format!("--{name}"));
            }
        }
    }
    v
}

/// Whether the executable's bytes contain `word` not followed by `_` (so `steer_probe_gate` does
/// not pass for `steer_probe_gate_mode`): a string literal the program uses, such as an environment
/// variable's or a metric's name. Literals sit back to back in the binary, so nothing is asked of
/// the byte before, nor of a following letter, which may start the next literal.
#[must_use]
pub fn contains_word(bin: &std::path::Path, word: &str) -> bool {
    let bytes = std::fs::read(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let w = word.as_bytes();
    bytes
        .windows(w.len())
        .enumerate()
        .any(|(i, win)| win == w && bytes.get(i + w.len()) != Some(&b'_'))
}

#[cfg(test)]
mod tests {
    use super::flags_of_help;

    #[test]
    fn help_flags() {
        let h = "Options:\n      --config <CONFIG>  A file\n  -p, --pin-dir <PIN_DIR>\n  -h, --help  Print help\n";
        assert_eq!(flags_of_help(h), ["--config", "--pin-dir", "--help"]);
    }
}
