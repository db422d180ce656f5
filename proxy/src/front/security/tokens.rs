//! Static bearer tokens (`security.tokens.path`), each for a tenant. Only their SHA-256
//! digests are kept, and a presented token is compared with every one of them in constant
//! time.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the tokens file {path} is not `tokens: [{{token | sha256, tenant}}]`: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("the tokens file {path}: entry {index} {problem}")]
    Entry {
        path: PathBuf,
        index: usize,
        problem: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensDocument {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: Option<String>,
    /// The hex SHA-256 of the token, for files that must not hold the token itself.
    sha256: Option<String>,
    tenant: Option<String>,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    /// The tenant, when the token names one.
    pub tenant: Option<String>,
}

#[derive(Debug)]
struct Known {
    digest: [u8; 32],
    bearer: Bearer,
}

/// The tokens memgate accepts.
#[derive(Debug)]
pub struct StaticTokens {
    known: Vec<Known>,
}

impl StaticTokens {
    /// Reads `path`; with `tenants_required` (tenant scoping on), every token must name one.
    pub fn load(path: &Path, tenants_required: bool) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: TokensDocument =
            serde_yaml::from_str(&text).map_err(|source| TokenFileError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let entry_error = |index: usize, problem| TokenFileError::Entry {
            path: path.to_path_buf(),
            index,
            problem,
        };
        let mut known = Vec::with_capacity(file.tokens.len());
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let digest = match (entry.token, entry.sha256) {
                (Some(token), None) if token.len() >= 16 => digest_of(&token),
                (Some(_), None) => {
                    return Err(entry_error(index, "has a token shorter than 16 characters"))
                }
                (None, Some(hex)) => parse_digest(&hex)
                    .ok_or_else(|| entry_error(index, "has a sha256 that is not 64 hex digits"))?,
                _ => {
                    return Err(entry_error(
                        index,
                        "must have exactly one of `token` and `sha256`",
                    ))
                }
            };
            let tenant = entry.tenant.filter(|tenant| !tenant.trim().is_empty());
            if tenants_required && tenant.is_none() {
                return Err(entry_error(
                    index,
                    "names no tenant, and tenant scoping is on",
                ));
            }
            known.push(Known {
                digest,
                bearer: Bearer { tenant },
            });
        }
        if known.is_empty() {
            return Err(entry_error(0, "is missing: the file holds no token"));
        }
        Ok(Self { known })
    }

    /// Who `presented` speaks for, if it is a known token. Every known digest is compared,
    /// each in constant time, whatever matches.
    pub fn bearer(&self, presented: &str) -> Option<&Bearer> {
        let digest = digest_of(presented);
        let mut found = None;
        for known in &self.known {
            if bool::from(known.digest.ct_eq(&digest)) {
                found = Some(&known.bearer);
            }
        }
        found
    }
}

/// The tokens of a file that may change (a mounted Secret the kubelet rewrites): read again
/// when its content changes; a file that stops parsing keeps the tokens read before.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    tenants_required: bool,
    current: std::sync::RwLock<(std::sync::Arc<StaticTokens>, [u8; 32])>,
}

impl TokenFile {
    pub fn load(path: &Path, tenants_required: bool) -> Result<Self, TokenFileError> {
        let tokens = StaticTokens::load(path, tenants_required)?;
        let digest = file_digest(path).unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            tenants_required,
            current: std::sync::RwLock::new((std::sync::Arc::new(tokens), digest)),
        })
    }

    /// The tokens now.
    pub fn tokens(&self) -> std::sync::Arc<StaticTokens> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.0.clone()
    }

    /// Reads the file again if its content changed; whether the tokens were replaced.
    pub fn reload_if_changed(&self) -> bool {
        let Some(digest) = file_digest(&self.path) else {
            return false;
        };
        let unchanged = self
            .current
            .read()
            .map(|current| current.1 == digest)
            .unwrap_or(false);
        if unchanged {
            return false;
        }
        match StaticTokens::load(&self.path, self.tenants_required) {
            Ok(tokens) => {
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *current = (std::sync::Arc::new(tokens), digest);
                tracing::info!(path = %self.path.display(), "the tokens file changed: its tokens replace the ones before");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "the tokens file changed and cannot be read: the tokens before stay");
                false
            }
        }
    }
}

fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}

fn digest_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_digest(hex_digits: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digits.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    #[test]
    fn tokens_and_digests_name_their_tenants() {
        let digest = hex::encode(digest_of("bob-token-0123456789"));
        let tokens = file(&format!(
            "tokens:\n  - token: alice-token-0123456789\n    tenant: alice\n  - sha256: {digest}\n    tenant: bob\n"
        ));
        let tokens = StaticTokens::load(tokens.path(), true).expect("load");
        assert_eq!(
            tokens
                .bearer("alice-token-0123456789")
                .and_then(|b| b.tenant.as_deref()),
            Some("alice")
        );
        assert_eq!(
            tokens
                .bearer("bob-token-0123456789")
                .and_then(|b| b.tenant.as_deref()),
            Some("bob")
        );
        assert!(tokens.bearer("alice-token-012345678").is_none());
        assert!(tokens.bearer("").is_none());
    }

    #[test]
    fn a_changed_file_replaces_the_tokens_and_a_broken_one_does_not() {
        let file = file("tokens:\n  - token: first-token-0123456789\n    tenant: a\n");
        let tokens = TokenFile::load(file.path(), true).expect("load");
        assert!(!tokens.reload_if_changed(), "unchanged");
        std::fs::write(
            file.path(),
            "tokens:\n  - token: second-token-0123456789\n    tenant: a\n",
        )
        .expect("rotate");
        assert!(tokens.reload_if_changed());
        assert!(tokens.tokens().bearer("first-token-0123456789").is_none());
        assert!(tokens.tokens().bearer("second-token-0123456789").is_some());
        std::fs::write(file.path(), "tokens: [").expect("break");
        assert!(!tokens.reload_if_changed());
        assert!(tokens.tokens().bearer("second-token-0123456789").is_some());
    }

    #[test]
    fn bad_files_are_refused_with_the_entry() {
        for (text, problem) in [
            ("tokens: []\n", "no token"),
            (
                "tokens:\n  - token: short\n    tenant: a\n",
                "shorter than 16",
            ),
            ("tokens:\n  - sha256: abc\n    tenant: a\n", "64 hex digits"),
            ("tokens:\n  - tenant: a\n", "exactly one"),
            (
                "tokens:\n  - token: long-enough-token-123\n",
                "names no tenant",
            ),
            ("tokenz: []\n", "is not"),
        ] {
            let error = StaticTokens::load(file(text).path(), true).expect_err(text);
            assert!(error.to_string().contains(problem), "{text}: {error}");
        }
        let unscoped = file("tokens:\n  - token: long-enough-token-123\n");
        assert!(StaticTokens::load(unscoped.path(), false).is_ok());
    }
}
