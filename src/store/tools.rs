//! Store maintenance (`tokengate store stats|export|import`), on either
//! backend. On sled, run while the gateway is stopped (sled's lock refuses
//! a store that a running gateway holds); PostgreSQL takes them while
//! gateways run.
//!
//! Export is JSON lines: a header with the id counter, then one line per
//! token of hashes and metadata — never a plain token, which the store does
//! not have. Import is idempotent, keeps ids, and raises the id counter so
//! that ids deleted before the export are not handed out again.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{AllowedIps, Backend, Previous, Scope, StoreError, TokenRecord};
use crate::token::TokenHash;

/// The highest id an import accepts: 2^53, exact in every JSON reader.
const MAX_ID: u64 = 1 << 53;

/// One exported token, in the API's field names plus the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exported {
    pub id: u64,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    pub description: String,
    pub token_for_user_key: String,
    pub token_for_user_name: String,
    pub token_created_by_user_key: String,
    pub created: u64,
    pub valid_until: u64,
    pub last_accessed: u64,
    pub token_scope: u8,
    /// Left out when empty, so that an export of tokens without it reads as
    /// an older version's (which refuses lines with fields it does not know).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_accessed_from: Option<std::net::IpAddr>,
    /// The secret a rotation replaced (SHA-256, hex) and until when it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<u64>,
}

impl From<&TokenRecord> for Exported {
    fn from(r: &TokenRecord) -> Exported {
        Exported {
            id: r.id,
            sha256: r.hash.to_hex(),
            description: r.description.clone(),
            token_for_user_key: r.user_key.clone(),
            token_for_user_name: r.user_name.clone(),
            token_created_by_user_key: r.created_by.clone(),
            created: r.created,
            valid_until: r.valid_until,
            last_accessed: r.last_accessed,
            token_scope: r.scope.code(),
            allowed_ips: r.allowed_ips.to_strings(),
            last_accessed_from: r.last_accessed_from,
            previous_sha256: r.previous.map(|p| p.hash.to_hex()),
            previous_valid_until: r.previous.map(|p| p.until),
        }
    }
}

impl Exported {
    fn record(self) -> Result<TokenRecord, String> {
        let hash = TokenHash::from_hex(&self.sha256).ok_or("sha256 must be 64 hex digits")?;
        let scope =
            Scope::from_code(i64::from(self.token_scope)).ok_or("tokenScope must be 1 or 2")?;
        // Above 2^53 a JSON client reading ids as doubles (JavaScript) would
        // confuse them; the store counts up from the highest id.
        if self.id == 0 || self.id > MAX_ID {
            return Err(format!("id must be between 1 and {MAX_ID}"));
        }
        if self.token_for_user_key.is_empty() || self.token_for_user_name.is_empty() {
            return Err("tokenForUserKey and tokenForUserName must not be empty".into());
        }
        if self.allowed_ips.len() > super::MAX_ALLOWED_IPS {
            return Err(format!(
                "allowedIps holds more than {} entries",
                super::MAX_ALLOWED_IPS
            ));
        }
        let mut nets = Vec::with_capacity(self.allowed_ips.len());
        for entry in &self.allowed_ips {
            nets.push(
                AllowedIps::parse_entry(entry)
                    .ok_or_else(|| format!("allowedIps: {entry:?} is not an IP address or CIDR"))?,
            );
        }
        let previous = match (self.previous_sha256, self.previous_valid_until) {
            (None, None) => None,
            (Some(hex), Some(until)) => Some(Previous {
                hash: TokenHash::from_hex(&hex).ok_or("previousSha256 must be 64 hex digits")?,
                until,
            }),
            _ => return Err("previousSha256 and previousValidUntil go together".into()),
        };
        Ok(TokenRecord {
            id: self.id,
            hash,
            description: self.description,
            user_key: self.token_for_user_key,
            user_name: self.token_for_user_name,
            created_by: self.token_created_by_user_key,
            created: self.created,
            valid_until: self.valid_until,
            last_accessed: self.last_accessed,
            scope,
            allowed_ips: AllowedIps::from_nets(nets),
            last_accessed_from: self.last_accessed_from,
            previous,
        })
    }
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    pub tokengate_export: u32,
    pub next_id: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Header(Header),
    Token(Box<Exported>),
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("line {line}: {message}")]
    Input { line: usize, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What `store stats` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub tokens: u64,
    pub users: u64,
    pub expired: u64,
    pub never_expire: u64,
    pub read_only: u64,
    pub highest_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_on_disk: Option<u64>,
}

/// Records per read of the backend while walking the whole store.
const SCAN_BATCH: usize = 1_000;

/// Every record by id ascending, `SCAN_BATCH` at a time.
async fn scan(
    backend: &dyn Backend,
    mut visit: impl FnMut(TokenRecord) -> Result<(), ToolError>,
) -> Result<(), ToolError> {
    let mut after = 0;
    loop {
        let batch = backend.scan_from(after, SCAN_BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = last.id;
        for r in batch {
            visit(r)?;
        }
    }
}

/// Counts what is in the store; `disk` is a sled store's directory, whose
/// size is reported too.
pub async fn stats(
    backend: &dyn Backend,
    disk: Option<&Path>,
    now_ms: u64,
) -> Result<Stats, ToolError> {
    let mut s = Stats {
        tokens: 0,
        users: 0,
        expired: 0,
        never_expire: 0,
        read_only: 0,
        highest_id: 0,
        bytes_on_disk: disk.map(dir_size),
    };
    let mut users = std::collections::HashSet::new();
    scan(backend, |r| {
        s.tokens += 1;
        s.highest_id = s.highest_id.max(r.id);
        if r.valid_until == 0 {
            s.never_expire += 1;
        } else if r.is_expired(now_ms) {
            s.expired += 1;
        }
        if r.scope == Scope::ReadOnly {
            s.read_only += 1;
        }
        users.insert(r.user_key);
        Ok(())
    })
    .await?;
    s.users = users.len() as u64;
    Ok(s)
}

/// Writes every token as one JSON line; returns how many.
pub async fn export(backend: &dyn Backend, out: &mut dyn Write) -> Result<u64, ToolError> {
    let header = Header {
        tokengate_export: 1,
        next_id: backend.next_id().await?,
    };
    writeln!(
        out,
        "{}",
        serde_json::to_string(&header).map_err(std::io::Error::other)?
    )?;
    let mut n = 0;
    scan(backend, |r| {
        let line = serde_json::to_string(&Exported::from(&r)).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
        n += 1;
        Ok(())
    })
    .await?;
    out.flush()?;
    Ok(n)
}

/// Reads JSON lines and adds the tokens that are not there yet (by id and by
/// hash). The whole input is checked before anything is written. Returns
/// `(added, already_present)`.
pub async fn import(
    backend: &dyn Backend,
    input: &mut dyn BufRead,
) -> Result<(u64, u64), ToolError> {
    let mut records = Vec::new();
    let mut next_id = 0;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| ToolError::Input {
            line: i + 1,
            message,
        };
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Header(h)) => next_id = next_id.max(h.next_id),
            Ok(Line::Token(t)) => records.push(t.record().map_err(bad)?),
            // Parsed again as a token, for the message that says which field is wrong.
            Err(_) => {
                return Err(bad(serde_json::from_str::<Exported>(&line)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default()));
            }
        }
    }
    let total = records.len() as u64;
    let mut added = 0;
    while !records.is_empty() {
        let rest = records.split_off(records.len().min(SCAN_BATCH));
        added += backend
            .restore(std::mem::replace(&mut records, rest))
            .await?;
    }
    backend.raise_next_id(next_id).await?;
    Ok((added, total - added))
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
