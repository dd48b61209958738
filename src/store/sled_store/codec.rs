//! How the packed trees' keys and values are laid out, and read back:
//! blocks of records, sorted arrays of index entries, search entries, hash
//! buckets and expiry keys. Every reader treats stored bytes as untrusted: a
//! value that does not parse is reported, never a panic.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{StoreError, TokenRecord, corrupt};
use crate::store::{AllowedIps, Filter, Previous, Scope};
use crate::token::TokenHash;

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(corrupt)
}

pub(super) fn u64_of(bytes: Option<sled::IVec>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

pub(super) fn expiry_key(valid_until: u64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&valid_until.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn id_of_index_key(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

/// The value formats of the packed trees. Every function takes the stored
/// bytes (empty for a missing key) and treats them as untrusted: a value
/// that does not parse is reported, never a panic.
pub(super) mod block {
    /// Entries of 16 consecutive ids share a key of `records` and `search`.
    pub const BITS: u32 = 4;

    pub fn key(id: u64) -> [u8; 8] {
        (id >> BITS).to_be_bytes()
    }

    /// The entries of a block, by id: id (8 bytes), length (4 bytes), the
    /// payload. Yields `(id, payload)`.
    pub fn entries(bytes: &[u8]) -> Entries<'_> {
        Entries { rest: bytes }
    }

    pub struct Entries<'a> {
        rest: &'a [u8],
    }

    impl<'a> Iterator for Entries<'a> {
        type Item = Result<(u64, &'a [u8]), String>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.rest.is_empty() {
                return None;
            }
            let parsed = (|| {
                let (id, rest) = self.rest.split_first_chunk::<8>()?;
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
                let payload = rest.get(..len)?;
                Some((u64::from_be_bytes(*id), payload, rest.get(len..)?))
            })();
            match parsed {
                Some((id, payload, rest)) => {
                    self.rest = rest;
                    Some(Ok((id, payload)))
                }
                None => {
                    self.rest = &[];
                    Some(Err("a truncated block".into()))
                }
            }
        }
    }

    fn push(out: &mut Vec<u8>, id: u64, payload: &[u8]) -> Result<(), String> {
        let len = u32::try_from(payload.len()).map_err(|_| "an entry over 4 GiB".to_string())?;
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The payload of `id`, if the block holds it. The whole block is
    /// checked, so that a damaged block fails for every id in it alike
    /// (reads as well as the writes, which rebuild the block).
    pub fn find(bytes: &[u8], id: u64) -> Result<Option<&[u8]>, String> {
        let mut found = None;
        for entry in entries(bytes) {
            let (at, payload) = entry?;
            if at == id {
                found = Some(payload);
            }
        }
        Ok(found)
    }

    /// The block with `payload` put in its place (replacing one of its id).
    pub fn put(bytes: &[u8], id: u64, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(bytes.len() + payload.len() + 12);
        let mut placed = false;
        for entry in entries(bytes) {
            let (at, other) = entry?;
            if !placed && at >= id {
                push(&mut out, id, payload)?;
                placed = true;
            }
            if at != id {
                push(&mut out, at, other)?;
            }
        }
        if !placed {
            push(&mut out, id, payload)?;
        }
        Ok(out)
    }

    /// The payload of a removed entry, and the block without it.
    pub type Removed<'a> = Option<(&'a [u8], Vec<u8>)>;

    /// The payload of `id` and the block without it.
    pub fn remove(bytes: &[u8], id: u64) -> Result<Removed<'_>, String> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut removed = None;
        for entry in entries(bytes) {
            let (at, payload) = entry?;
            if at == id {
                removed = Some(payload);
            } else {
                push(&mut out, at, payload)?;
            }
        }
        Ok(removed.map(|p| (p, out)))
    }
}

/// A record as layouts 1 to 3 wrote it (postcard, these fields in this
/// order). Records of this form are still read: a store is not rewritten
/// when it moves to layout 4, its records change form as they are written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RecordV1 {
    pub id: u64,
    pub hash: TokenHash,
    pub description: String,
    pub user_key: String,
    pub user_name: String,
    pub created_by: String,
    pub created: u64,
    pub valid_until: u64,
    pub last_accessed: u64,
    pub scope: Scope,
}

impl From<RecordV1> for TokenRecord {
    fn from(r: RecordV1) -> TokenRecord {
        TokenRecord {
            id: r.id,
            hash: r.hash,
            description: r.description,
            user_key: r.user_key,
            user_name: r.user_name,
            created_by: r.created_by,
            created: r.created,
            valid_until: r.valid_until,
            last_accessed: r.last_accessed,
            scope: r.scope,
            allowed_ips: AllowedIps::default(),
            last_accessed_from: None,
            previous: None,
        }
    }
}

impl From<&TokenRecord> for RecordV1 {
    fn from(r: &TokenRecord) -> RecordV1 {
        RecordV1 {
            id: r.id,
            hash: r.hash,
            description: r.description.clone(),
            user_key: r.user_key.clone(),
            user_name: r.user_name.clone(),
            created_by: r.created_by.clone(),
            created: r.created,
            valid_until: r.valid_until,
            last_accessed: r.last_accessed,
            scope: r.scope,
        }
    }
}

/// A record as layout 4 writes it: [`RECORD_V2`], then postcard of this.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordV2 {
    base: RecordV1,
    /// Networks as (address, prefix length).
    allowed_ips: Vec<(IpAddr, u8)>,
    last_accessed_from: Option<IpAddr>,
    /// The secret a rotation replaced and until when it works.
    previous: Option<(TokenHash, u64)>,
}

/// The first two bytes of a record of form 2. A record of form 1 starts with
/// its id as a postcard varint, whose first byte is 0 only for id 0, which
/// no token has.
const RECORD_V2: [u8; 2] = [0, 2];

pub(super) fn decode_record(payload: &[u8]) -> Result<TokenRecord, String> {
    let Some(v2) = payload.strip_prefix(&RECORD_V2) else {
        if payload.first() == Some(&0) {
            return Err("a record of an unknown form (written by a newer version?)".into());
        }
        return postcard::from_bytes::<RecordV1>(payload)
            .map(TokenRecord::from)
            .map_err(|e| e.to_string());
    };
    let r: RecordV2 = postcard::from_bytes(v2).map_err(|e| e.to_string())?;
    let mut nets = Vec::with_capacity(r.allowed_ips.len());
    for (addr, prefix) in r.allowed_ips {
        nets.push(IpNet::new(addr, prefix).map_err(|e| format!("allowedIps: {e}"))?);
    }
    Ok(TokenRecord {
        allowed_ips: AllowedIps::from_nets(nets),
        last_accessed_from: r.last_accessed_from,
        previous: r.previous.map(|(hash, until)| Previous { hash, until }),
        ..TokenRecord::from(r.base)
    })
}

pub(super) fn encode_record(r: &TokenRecord) -> Result<Vec<u8>, String> {
    let v2 = RecordV2 {
        base: RecordV1::from(r),
        allowed_ips: r
            .allowed_ips
            .iter()
            .map(|n| (n.addr(), n.prefix_len()))
            .collect(),
        last_accessed_from: r.last_accessed_from,
        previous: r.previous.map(|p| (p.hash, p.until)),
    };
    postcard::to_extend(&v2, RECORD_V2.to_vec()).map_err(|e| e.to_string())
}

/// The record of `id` in a `records` block.
pub(super) fn record_in(block: &[u8], id: u64) -> Result<Option<TokenRecord>, StoreError> {
    block::find(block, id)
        .and_then(|p| p.map(decode_record).transpose())
        .map_err(StoreError::Corrupt)
}

/// A `search` entry: what the description, scope and `allowedIpsSet`
/// filters look at, without reading the record. The scope code (with
/// [`ALLOWED_IPS_SET`] when the token has `allowedIps`), then the description
/// in lower case, as [`Filter::matches`] compares it.
pub(super) fn search_entry(r: &TokenRecord) -> Vec<u8> {
    let mut flags = r.scope.code();
    if !r.allowed_ips.is_empty() {
        flags |= ALLOWED_IPS_SET;
    }
    let mut e = vec![flags];
    e.extend_from_slice(r.description.to_lowercase().as_bytes());
    e
}

/// The `search` block for a `records` block: derived whole on every
/// write, so that it cannot drift from the records (and a damaged one is
/// replaced rather than blocking writes).
pub(super) fn search_block(records: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for entry in block::entries(records) {
        let (id, payload) = entry?;
        out = block::put(&out, id, &search_entry(&decode_record(payload)?))?;
    }
    Ok(out)
}

/// In a search entry's first byte: the token has `allowedIps`. Entries
/// written before layout 4 never have it, as no token then had `allowedIps`.
const ALLOWED_IPS_SET: u8 = 0x80;

pub(super) fn search_matches(filter: &Filter, entry: &[u8]) -> bool {
    let Some((&flags, description)) = entry.split_first() else {
        return false;
    };
    if filter
        .scope
        .is_some_and(|s| s.code() != flags & !ALLOWED_IPS_SET)
    {
        return false;
    }
    if filter
        .allowed_ips_set
        .is_some_and(|set| set != (flags & ALLOWED_IPS_SET != 0))
    {
        return false;
    }
    match &filter.description {
        Some(needle) => std::str::from_utf8(description).is_ok_and(|d| d.contains(needle.as_str())),
        None => true,
    }
}

/// Sorted arrays of fixed-width entries, compared on their first bytes:
/// `hash_index` buckets (SHA-256 ‖ id) and `owners` lists (id).
pub(super) mod sorted {
    use std::cmp::Ordering;

    /// Where the entry whose first bytes are `key` is, or would go.
    fn position(bytes: &[u8], width: usize, key: &[u8]) -> Result<usize, usize> {
        let (mut low, mut high) = (0, bytes.len() / width);
        while low < high {
            let mid = low + (high - low) / 2;
            let at = bytes
                .get(mid * width..mid * width + key.len())
                .unwrap_or_default();
            match at.cmp(key) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// The entry whose first bytes are `key`.
    pub fn find<'a>(bytes: &'a [u8], width: usize, key: &[u8]) -> Option<&'a [u8]> {
        let i = position(bytes, width, key).ok()?;
        bytes.get(i * width..(i + 1) * width)
    }

    /// `bytes` with `entry` added; `None` if an entry with its key is there.
    pub fn insert(bytes: &[u8], width: usize, key_len: usize, entry: &[u8]) -> Option<Vec<u8>> {
        let i = position(bytes, width, entry.get(..key_len)?).err()?;
        let at = (i * width).min(bytes.len());
        let mut out = Vec::with_capacity(bytes.len() + width);
        out.extend_from_slice(bytes.get(..at)?);
        out.extend_from_slice(entry);
        out.extend_from_slice(bytes.get(at..)?);
        Some(out)
    }

    /// `bytes` without the entry whose first bytes are `key`; `None` if absent.
    pub fn remove(bytes: &[u8], width: usize, key: &[u8]) -> Option<Vec<u8>> {
        let i = position(bytes, width, key).ok()?;
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(bytes.get(..i * width)?);
        out.extend_from_slice(bytes.get((i + 1) * width..)?);
        Some(out)
    }
}

/// A `hash_index` entry: SHA-256 ‖ id.
pub(super) const HASH_ENTRY: usize = 40;

pub(super) fn bucket_key(hash: &TokenHash) -> [u8; 2] {
    [hash.0[0], hash.0[1]]
}

pub(super) fn hash_entry(hash: &TokenHash, id: u64) -> [u8; HASH_ENTRY] {
    let mut e = [0u8; HASH_ENTRY];
    e[..32].copy_from_slice(&hash.0);
    e[32..].copy_from_slice(&id.to_be_bytes());
    e
}

/// The id stored for `hash` in its bucket.
pub(super) fn id_in_bucket(bucket: &[u8], hash: &TokenHash) -> Option<u64> {
    let entry = sorted::find(bucket, HASH_ENTRY, &hash.0)?;
    Some(u64::from_be_bytes(entry.get(32..)?.try_into().ok()?))
}

/// The ids of an `owners` value.
pub(super) fn owner_ids(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
}
