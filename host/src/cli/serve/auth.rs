//! The bearer token: read once from `--token-file`, kept as its BLAKE3 hash, and compared
//! with what a client presents in constant time (over the two hashes, so neither the
//! token's bytes nor its length show in the time a refusal takes).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context};
use subtle::ConstantTimeEq;

/// Shortest token accepted: 16 bytes (a random one of that length cannot be guessed).
const MIN_TOKEN: usize = 16;

pub struct Token {
    hash: [u8; 32],
}

impl Token {
    /// The token in the file at `path`, whitespace around it ignored.
    pub fn load(path: &Path) -> anyhow::Result<Token> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = bytes.trim_ascii();
        if token.len() < MIN_TOKEN {
            bail!(
                "the token in {} is {} bytes; a token must be at least {MIN_TOKEN} (e.g. `head -c 32 /dev/urandom | base64 > {}`)",
                path.display(),
                token.len(),
                path.display()
            );
        }
        Ok(Token::new(token))
    }

    fn new(token: &[u8]) -> Token {
        Token {
            hash: *blake3::hash(token).as_bytes(),
        }
    }

    /// Whether `presented` is the token, in a time that depends on neither.
    pub fn matches(&self, presented: &[u8]) -> bool {
        blake3::hash(presented).as_bytes().ct_eq(&self.hash).into()
    }

    /// Whether an `Authorization` header value carries the token (`Bearer TOKEN`).
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        let presented = header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii);
        // A missing or malformed header is compared too, against nothing that can match.
        self.matches(presented.unwrap_or(b"")) && presented.is_some()
    }
}

/// Whether serving on `addr` needs a token: any address but a loopback one.
pub fn needs_token(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_is_admitted() {
        let t = Token::new(b"0123456789abcdef");
        assert!(t.admits(Some(b"Bearer 0123456789abcdef")));
        assert!(t.admits(Some(b"Bearer  0123456789abcdef ")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcdeF")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcde")));
        assert!(!t.admits(Some(b"0123456789abcdef")));
        assert!(!t.admits(Some(b"Basic 0123456789abcdef")));
        assert!(!t.admits(Some(b"Bearer ")));
        assert!(!t.admits(None));
    }

    #[test]
    fn public_addresses_need_a_token() {
        assert!(!needs_token(&"127.0.0.1:80".parse().unwrap()));
        assert!(!needs_token(&"[::1]:80".parse().unwrap()));
        assert!(needs_token(&"0.0.0.0:80".parse().unwrap()));
        assert!(needs_token(&"[::]:80".parse().unwrap()));
        assert!(needs_token(&"192.168.1.2:80".parse().unwrap()));
    }

    #[test]
    fn short_or_missing_token_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "short\n").unwrap();
        let e = Token::load(&path).err().unwrap().to_string();
        assert!(e.contains("at least 16"), "{e}");
        std::fs::write(&path, "  0123456789abcdef\n").unwrap();
        assert!(Token::load(&path)
            .unwrap()
            .admits(Some(b"Bearer 0123456789abcdef")));
        assert!(Token::load(&dir.path().join("none")).is_err());
    }
}
