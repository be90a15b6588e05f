//! Bearer tokens for the admin and ingest API, from a file of lines `admin <token>` and
//! `region <name> <token>` (`#` starts a comment). Tokens are compared in constant time.

use std::path::Path;

use anyhow::{Context as _, bail};
use subtle::ConstantTimeEq as _;

/// Tokens shorter than this are refused: they can be guessed.
pub const TOKEN_BYTES_MIN: usize = 16;

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Region(String),
}

#[derive(Debug, Default)]
pub struct Tokens {
    /// `None`: no token file; the API is open (only allowed on a loopback admin listener).
    entries: Option<Vec<(Principal, Vec<u8>)>>,
}

impl Tokens {
    #[must_use]
    pub fn open() -> Tokens {
        Tokens { entries: None }
    }

    #[must_use]
    pub fn is_open(&self) -> bool {
        self.entries.is_none()
    }

    pub fn load(path: &Path) -> anyhow::Result<Tokens> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Tokens::parse(&text).with_context(|| path.display().to_string())
    }

    pub fn parse(text: &str) -> anyhow::Result<Tokens> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let (p, tok) = match words.as_slice() {
                ["admin", tok] => (Principal::Admin, *tok),
                ["region", name, tok] => (Principal::Region((*name).to_owned()), *tok),
                _ => bail!("line {}: expected `admin TOKEN` or `region NAME TOKEN`", i + 1),
            };
            if tok.len() < TOKEN_BYTES_MIN {
                bail!(
                    "line {}: tokens must have at least {TOKEN_BYTES_MIN} characters",
                    i + 1
                );
            }
            entries.push((p, tok.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            bail!("no tokens");
        }
        Ok(Tokens {
            entries: Some(entries),
        })
    }

    /// Who presents `token`. Every entry is compared, in constant time, whatever matches.
    #[must_use]
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let entries = self.entries.as_ref()?;
        let mut found = None;
        for (p, t) in entries {
            if bool::from(t.as_slice().ct_eq(token.as_bytes())) && found.is_none() {
                found = Some(p.clone());
            }
        }
        found
    }

    /// Whether `header` (an `Authorization` value) may act as `want`. Admin tokens may do anything.
    #[must_use]
    pub fn allows(&self, header: Option<&str>, want: &Principal) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(tok) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        match self.principal(tok.trim()) {
            Some(Principal::Admin) => true,
            Some(p) => &p == want,
            None => false,
        }
    }
}
