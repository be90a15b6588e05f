//! How a manifest, a unit or a Containerfile runs one of steer's binaries: its arguments and
//! environment.

use k8s_openapi::api::core::v1::Container;

/// The two binaries.
pub const STEERD: &str = "steerd";
pub const STEER_PROBE: &str = "steer-probe";

/// One way a binary is started.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Where it was found, for messages.
    pub origin: String,
    /// [`STEERD`] or [`STEER_PROBE`].
    pub binary: &'static str,
    /// The arguments after the program name; the first is the subcommand.
    pub args: Vec<String>,
    /// Names of the environment variables set for it.
    pub env: Vec<String>,
}

impl Invocation {
    /// The subcommand (`serve`, `run`, ...).
    #[must_use]
    pub fn subcommand(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }

    /// The long flags passed, without values (`--dns=0.0.0.0:53` and `--dns 0.0.0.0:53` give `--dns`).
    #[must_use]
    pub fn flags(&self) -> Vec<String> {
        self.args
            .iter()
            .filter(|a| a.starts_with("--"))
            .map(|a| a.split('=').next().unwrap_or(a).to_owned())
            .collect()
    }

    /// Variables that Kubernetes substitutes into the arguments (`$(HOST_IP)`): kubelet reads them,
    /// not the binary.
    #[must_use]
    pub fn substituted_vars(&self) -> Vec<String> {
        let mut v = Vec::new();
        for a in &self.args {
            let mut rest = a.as_str();
            while let Some(i) = rest.find("$(") {
                let tail = &rest[i + 2..];
                let Some(end) = tail.find(')') else { break };
                v.push(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
        v
    }
}

fn binary_of(image_or_path: &str) -> Option<&'static str> {
    let last = image_or_path.rsplit('/').next().unwrap_or(image_or_path);
    let name = last.split(':').next().unwrap_or(last);
    match name {
        "steerd" => Some(STEERD),
        "steer-probe" => Some(STEER_PROBE),
        _ => None,
    }
}

/// The invocation of a container whose image is one of steer's (others, like the init step's
/// kubectl, are not ours to check).
#[must_use]
pub fn of_container(origin: &str, c: &Container) -> Option<Invocation> {
    let binary = binary_of(c.image.as_deref()?)?;
    let mut args: Vec<String> = Vec::new();
    if let Some(cmd) = &c.command {
        // An explicit command must be the binary itself.
        let first = cmd.first().expect("a non-empty command");
        assert_eq!(
            binary_of(first),
            Some(binary),
            "{origin}: container {} runs {first}",
            c.name
        );
        args.extend(cmd[1..].iter().cloned());
    }
    args.extend(c.args.iter().flatten().cloned());
    let env = c.env.iter().flatten().map(|e| e.name.clone()).collect();
    Some(Invocation {
        origin: format!("{origin} container {}", c.name),
        binary,
        args,
        env,
    })
}

/// The `ExecStart=` and `Environment=` of a systemd unit.
#[must_use]
pub fn of_unit(origin: &str, text: &str) -> Vec<Invocation> {
    let mut env = Vec::new();
    let mut starts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Environment=") {
            for kv in v.split_whitespace() {
                env.push(kv.trim_matches('"').split('=').next().unwrap_or("").to_owned());
            }
        } else if let Some(v) = line.strip_prefix("ExecStart=") {
            let words: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
            let prog = words
                .first()
                .expect("ExecStart names a program")
                .trim_start_matches(['-', '@', '+', '!', ':']);
            let binary = binary_of(prog)
                .unwrap_or_else(|| panic!("{origin}: ExecStart runs {prog}, not a steer binary"));
            starts.push((binary, words[1..].to_vec()));
        }
    }
    starts
        .into_iter()
        .map(|(binary, args)| Invocation {
            origin: origin.to_owned(),
            binary,
            args,
            env: env.clone(),
        })
        .collect()
}

/// `ENTRYPOINT` plus `CMD` (exec form) of a Containerfile, and its `ENV` names.
#[must_use]
pub fn of_containerfile(origin: &str, text: &str) -> Option<Invocation> {
    let mut entry: Vec<String> = Vec::new();
    let mut cmd: Vec<String> = Vec::new();
    let mut env = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let json = |rest: &str| -> Vec<String> {
            serde_json::from_str(rest.trim())
                .unwrap_or_else(|e| panic!("{origin}: {line}: exec form expected: {e}"))
        };
        if let Some(r) = line.strip_prefix("ENTRYPOINT ") {
            entry = json(r);
        } else if let Some(r) = line.strip_prefix("CMD ") {
            cmd = json(r);
        } else if let Some(r) = line.strip_prefix("ENV ") {
            env.push(r.split(['=', ' ']).next().unwrap_or("").to_owned());
        }
    }
    let binary = binary_of(entry.first()?)?;
    let mut args = entry[1..].to_vec();
    args.extend(cmd);
    Some(Invocation {
        origin: origin.to_owned(),
        binary,
        args,
        env,
    })
}
