//! Names on the wire: subjects, KV buckets and KV keys, and the reversible token encoding that
//! makes arbitrary UTF-8 names safe in all three.
//!
//! Layout (one permission per cluster covers everything: `gslb.<cluster>.>`):
//!
//! | what | name |
//! | --- | --- |
//! | heartbeats of node N | subject `gslb.<cluster>.hb.<N>` |
//! | health report batches of node N | subject `gslb.<cluster>.health.<N>` |
//! | membership records | KV bucket `gslb_<cluster>_members`, key `<N>` |
//! | health reports | KV bucket `gslb_<cluster>_health`, key `<N>.<endpoint>` |
//!
//! Every `<...>` is a [token](encode_token): bytes in `[A-Za-z0-9-]` stay as they are, every
//! other byte becomes `_` and two upper-case hex digits. Tokens therefore use only
//! `[A-Za-z0-9_-]`, which is legal in subjects, KV keys and bucket names, and never contain the
//! `.` separator, so a key or subject splits back unambiguously.

use std::fmt::Write as _;

/// Longest endpoint name, in bytes of UTF-8.
pub const MAX_ENDPOINT_NAME_BYTES: usize = 255;
/// Longest node or cluster id, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 64;
/// The second token of a snapshot chunk's key ([`Names::chunk_key`]).
const CHUNK_TOKEN: &str = "_SNAP";

/// Why a name or token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than its bound.
    TooLong {
        /// Length in bytes.
        len_bytes: usize,
        /// The bound in bytes.
        max_bytes: usize,
    },
    /// A token holds a character that no encoder produces, or a broken `_XX` escape.
    BadToken,
    /// A token decodes to bytes that are not UTF-8.
    NotUtf8,
    /// A subject or key does not have the expected shape.
    Shape,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => f.write_str("name is empty"),
            NameError::TooLong {
                len_bytes,
                max_bytes,
            } => write!(f, "name is {len_bytes} bytes, longer than {max_bytes}"),
            NameError::BadToken => f.write_str("malformed token"),
            NameError::NotUtf8 => f.write_str("token is not UTF-8"),
            NameError::Shape => f.write_str("unexpected subject or key shape"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks an endpoint name: 1 to [`MAX_ENDPOINT_NAME_BYTES`] bytes of UTF-8.
pub fn check_endpoint_name(name: &str) -> Result<(), NameError> {
    check_len(name, MAX_ENDPOINT_NAME_BYTES)
}

/// Checks a node or cluster id: 1 to [`MAX_ID_BYTES`] bytes of UTF-8.
pub fn check_id(id: &str) -> Result<(), NameError> {
    check_len(id, MAX_ID_BYTES)
}

fn check_len(name: &str, max_bytes: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_bytes {
        return Err(NameError::TooLong {
            len_bytes: name.len(),
            max_bytes,
        });
    }
    Ok(())
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Encodes any string into a token of `[A-Za-z0-9_-]`, reversibly (see the module docs).
pub fn encode_token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    push_token(&mut out, name);
    out
}

fn push_token(out: &mut String, name: &str) {
    for &b in name.as_bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "_{b:02X}");
        }
    }
}

/// Decodes a token made by [`encode_token`]. Only the exact encoder output is accepted
/// (upper-case hex, escapes only where needed), so every name has exactly one token.
pub fn decode_token(token: &str) -> Result<String, NameError> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain(b) {
            out.push(b);
            i += 1;
        } else if b == b'_' && i + 2 < bytes.len() {
            let hi = hex_digit(bytes[i + 1]).ok_or(NameError::BadToken)?;
            let lo = hex_digit(bytes[i + 2]).ok_or(NameError::BadToken)?;
            let decoded = hi << 4 | lo;
            if is_plain(decoded) {
                return Err(NameError::BadToken);
            }
            out.push(decoded);
            i += 3;
        } else {
            return Err(NameError::BadToken);
        }
    }
    String::from_utf8(out).map_err(|_| NameError::NotUtf8)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// How long a record stays in a KV bucket after it was last written (the buckets' `max_age`).
///
/// A live node rewrites its membership record every heartbeat and each of its reports about
/// once every quarter of this (spread evenly, a few writes per tick), so records of nodes that
/// are gone for good age out, while a live node's never do.
pub const RECORD_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The KV buckets of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Bucket {
    /// One membership record per node.
    Members,
    /// One health report per (node, endpoint).
    Health,
}

/// What a subject under `gslb.<cluster>.` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// Heartbeats: `gslb.<cluster>.hb.<node>`.
    Heartbeat,
    /// Health report batches: `gslb.<cluster>.health.<node>`.
    Health,
}

impl SubjectKind {
    /// The subject token that names this kind.
    pub const fn token(self) -> &'static str {
        match self {
            SubjectKind::Heartbeat => "hb",
            SubjectKind::Health => "health",
        }
    }
}

/// All names of one cluster, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    cluster_id: String,
    prefix: String,
    members_bucket: String,
    health_bucket: String,
}

impl Names {
    /// The names of cluster `cluster_id`.
    pub fn new(cluster_id: &str) -> Self {
        let token = encode_token(cluster_id);
        Names {
            cluster_id: cluster_id.to_owned(),
            prefix: format!("gslb.{token}."),
            members_bucket: format!("gslb_{token}_members"),
            health_bucket: format!("gslb_{token}_health"),
        }
    }

    /// The cluster id these names belong to.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The wildcard subject a node subscribes to: `gslb.<cluster>.>`.
    pub fn subscription(&self) -> String {
        format!("{}>", self.prefix)
    }

    /// The subject on which `node` publishes messages of `kind`.
    pub fn subject(&self, kind: SubjectKind, node: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 8 + node.len());
        s.push_str(&self.prefix);
        s.push_str(kind.token());
        s.push('.');
        push_token(&mut s, node);
        s
    }

    /// Splits a subject of this cluster into its kind and the node it claims to come from.
    pub fn parse_subject(&self, subject: &str) -> Result<(SubjectKind, String), NameError> {
        self.parse_subject_ref(subject)
            .map(|(kind, node)| (kind, node.into_owned()))
    }

    /// [`Names::parse_subject`] without copying a node id that needs no decoding.
    pub fn parse_subject_ref<'a>(
        &self,
        subject: &'a str,
    ) -> Result<(SubjectKind, std::borrow::Cow<'a, str>), NameError> {
        let rest = subject.strip_prefix(&self.prefix).ok_or(NameError::Shape)?;
        let (kind, token) = rest.split_once('.').ok_or(NameError::Shape)?;
        let kind = match kind {
            "hb" => SubjectKind::Heartbeat,
            "health" => SubjectKind::Health,
            _ => return Err(NameError::Shape),
        };
        let node = if token.bytes().all(is_plain) {
            std::borrow::Cow::Borrowed(token)
        } else {
            std::borrow::Cow::Owned(decode_token(token)?)
        };
        check_id(&node)?;
        Ok((kind, node))
    }

    /// The name of `bucket` of region `region`: [`Names::bucket`] for the empty region (a
    /// deployment without regions), else `gslb_<cluster>_<kind>_<region>` (tokens never hold a
    /// raw `_`, so the name is unambiguous).
    pub fn region_bucket(&self, bucket: Bucket, region: &str) -> String {
        let mut s = self.bucket(bucket).to_owned();
        if !region.is_empty() {
            s.push('_');
            push_token(&mut s, region);
        }
        s
    }

    /// The name of a KV bucket of this cluster (of a deployment without regions).
    pub fn bucket(&self, bucket: Bucket) -> &str {
        match bucket {
            Bucket::Members => &self.members_bucket,
            Bucket::Health => &self.health_bucket,
        }
    }

    /// The KV key of `node`'s membership record.
    pub fn member_key(&self, node: &str) -> String {
        encode_token(node)
    }

    /// The KV key of `node`'s report on `endpoint`.
    pub fn report_key(&self, node: &str, endpoint: &str) -> String {
        let mut s = String::with_capacity(node.len() + endpoint.len() + 1);
        push_token(&mut s, node);
        s.push('.');
        push_token(&mut s, endpoint);
        s
    }

    /// The KV key filter that matches every report of `node`: `<node>.*` (its snapshot
    /// chunks, [`Names::chunk_key`], have more tokens and do not match).
    pub fn report_key_filter(&self, node: &str) -> String {
        let mut s = encode_token(node);
        s.push_str(".*");
        s
    }

    /// The KV key filter that matches every report of every node, and no snapshot chunk.
    pub const REPORTS_FILTER: &'static str = "*.*";

    /// The KV key of chunk `index` of `node`'s compacted snapshot number `generation`:
    /// `<node>._SNAP.<generation mod 2>.<index>`. Two slots: a compaction writes the slot the
    /// snapshot its record names does not use, so a crash part-way leaves that one whole.
    /// `_SNAP` is no token [`encode_token`] makes, so no report key is a chunk key.
    pub fn chunk_key(&self, node: &str, generation: u64, index: u32) -> String {
        let mut s = encode_token(node);
        let _ = write!(s, ".{CHUNK_TOKEN}.{}.{index}", generation % 2);
        s
    }

    /// Splits a chunk key ([`Names::chunk_key`]) into (node, slot, index).
    pub fn parse_chunk_key(&self, key: &str) -> Result<(String, u64, u32), NameError> {
        let mut parts = key.split('.');
        let (Some(node), Some(CHUNK_TOKEN), Some(slot), Some(index), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(NameError::Shape);
        };
        let node = decode_token(node)?;
        check_id(&node)?;
        let slot = match slot {
            "0" => 0,
            "1" => 1,
            _ => return Err(NameError::Shape),
        };
        let index: u32 = index.parse().map_err(|_| NameError::Shape)?;
        if index.to_string().len() != key.rsplit('.').next().map_or(0, str::len) {
            return Err(NameError::Shape);
        }
        Ok((node, slot, index))
    }

    /// Splits a health-bucket key into (node, endpoint).
    pub fn parse_report_key(&self, key: &str) -> Result<(String, String), NameError> {
        let (node, endpoint) = key.split_once('.').ok_or(NameError::Shape)?;
        let node = decode_token(node)?;
        let endpoint = decode_token(endpoint)?;
        check_id(&node)?;
        check_endpoint_name(&endpoint)?;
        Ok((node, endpoint))
    }

    /// Decodes a members-bucket key into a node id.
    pub fn parse_member_key(&self, key: &str) -> Result<String, NameError> {
        let node = decode_token(key)?;
        check_id(&node)?;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokens_are_safe_and_reversible() {
        for name in [
            "web",
            "web.example.com:443",
            "a_b",
            "ünïcødé ☃",
            "-",
            "*",
            ">",
            " ",
        ] {
            let t = encode_token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{t}"
            );
            assert_eq!(decode_token(&t).unwrap(), name);
        }
        assert_eq!(encode_token("web.example"), "web_2Eexample");
    }

    #[test]
    fn decoding_refuses_non_canonical_tokens() {
        assert_eq!(decode_token("_2e"), Err(NameError::BadToken));
        assert_eq!(
            decode_token("_41"),
            Err(NameError::BadToken),
            "A needs no escape"
        );
        assert_eq!(decode_token("_4"), Err(NameError::BadToken));
        assert_eq!(decode_token("a.b"), Err(NameError::BadToken));
        assert_eq!(decode_token("_FF"), Err(NameError::NotUtf8));
    }

    #[test]
    fn subjects_and_keys_round_trip() {
        let n = Names::new("prod-global");
        assert_eq!(
            n.subject(SubjectKind::Heartbeat, "eu-1"),
            "gslb.prod-global.hb.eu-1"
        );
        assert_eq!(n.bucket(Bucket::Health), "gslb_prod-global_health");
        assert_eq!(
            n.region_bucket(Bucket::Health, ""),
            "gslb_prod-global_health"
        );
        assert_eq!(
            n.region_bucket(Bucket::Members, "eu-west"),
            "gslb_prod-global_members_eu-west"
        );
        assert_eq!(
            n.region_bucket(Bucket::Health, "eu_1.a"),
            "gslb_prod-global_health_eu_5F1_2Ea"
        );
        assert_eq!(
            n.parse_subject("gslb.prod-global.health.eu_2E1").unwrap(),
            (SubjectKind::Health, "eu.1".to_owned())
        );
        assert!(n.parse_subject("gslb.other.hb.eu-1").is_err());
        assert!(n.parse_subject("gslb.prod-global.cfg.eu-1").is_err());
        assert!(n.parse_subject("gslb.prod-global.hb.a.b").is_err());
        let key = n.report_key("eu-1", "www.example.com");
        assert_eq!(key, "eu-1.www_2Eexample_2Ecom");
        assert_eq!(
            n.parse_report_key(&key).unwrap(),
            ("eu-1".to_owned(), "www.example.com".to_owned())
        );
    }

    #[test]
    fn chunk_keys_have_two_slots_and_are_no_report_keys() {
        let n = Names::new("c");
        assert_eq!(n.chunk_key("eu-1", 1, 0), "eu-1._SNAP.1.0");
        assert_eq!(n.chunk_key("eu-1", 2, 17), "eu-1._SNAP.0.17");
        assert_eq!(
            n.chunk_key("eu-1", 4, 17),
            n.chunk_key("eu-1", 2, 17),
            "same slot"
        );
        assert_eq!(
            n.chunk_key("a.b", u64::MAX, u32::MAX),
            "a_2Eb._SNAP.1.4294967295"
        );
        assert_eq!(
            n.parse_chunk_key("a_2Eb._SNAP.1.4294967295"),
            Ok(("a.b".to_owned(), 1, u32::MAX))
        );
        assert_eq!(
            n.parse_chunk_key("eu-1._SNAP.0.17"),
            Ok(("eu-1".to_owned(), 0, 17))
        );
        // No report key is a chunk key, and no chunk key a report key.
        let key = n.chunk_key("eu-1", 3, 2);
        assert!(n.parse_report_key(&key).is_err());
        assert!(n.parse_chunk_key(&n.report_key("eu-1", "_SNAP")).is_err());
        assert!(
            n.parse_chunk_key(&n.report_key("eu-1", "_SNAP.0.1"))
                .is_err()
        );
        for bad in [
            "eu-1._SNAP.2.0",
            "eu-1._SNAP.1",
            "eu-1._SNAP.1.0.0",
            "eu-1._SNAP.1.01",
            "eu-1._SNAP.1.+1",
            "eu-1._SNAP.1.-1",
            "eu-1._SNAP.1.",
            "eu-1._SNAP.1.4294967296",
            "eu-1._snap.1.0",
            "eu-1.SNAP.1.0",
            "eu_2e1._SNAP.1.0",
            "._SNAP.1.0",
            "eu-1._SNAP.01.0",
        ] {
            assert!(n.parse_chunk_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn report_filters_match_report_keys_only() {
        let n = Names::new("c");
        assert_eq!(n.report_key_filter("eu-1"), "eu-1.*");
        assert_eq!(n.report_key_filter("a.b"), "a_2Eb.*");
        assert_eq!(Names::REPORTS_FILTER, "*.*");
        // Report keys have exactly two tokens, chunk keys four: a `*` filter of two tokens
        // tells them apart.
        let tokens = |key: &str| key.split('.').count();
        assert_eq!(tokens(&n.report_key("a.b", "www.example.com")), 2);
        assert_eq!(tokens(&n.chunk_key("a.b", 1, 3)), 4);
        assert_eq!(tokens(Names::REPORTS_FILTER), 2);
        assert_eq!(tokens(&n.report_key_filter("a.b")), 2);
    }

    proptest! {
        #[test]
        fn chunk_keys_round_trip(node in "\\PC{1,16}", generation in any::<u64>(), index in any::<u32>()) {
            let n = Names::new("c");
            let key = n.chunk_key(&node, generation, index);
            prop_assert_eq!(key.split('.').count(), 4);
            prop_assert_eq!(n.parse_chunk_key(&key), Ok((node.clone(), generation % 2, index)));
            prop_assert!(n.parse_report_key(&key).is_err());
        }

        #[test]
        fn parsed_chunk_keys_are_canonical(key in "[a-z_0-9A-F]{0,6}\\._SNAP\\.[0-9+]{1,2}\\.[0-9+-]{0,12}") {
            let n = Names::new("c");
            if let Ok((node, slot, index)) = n.parse_chunk_key(&key) {
                prop_assert_eq!(n.chunk_key(&node, slot, index), key);
            }
        }

        #[test]
        fn any_string_round_trips(name in any::<String>()) {
            let t = encode_token(&name);
            prop_assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(decode_token(&t).unwrap(), name);
        }

        #[test]
        fn decode_never_panics(token in "[ -~]{0,40}") {
            if let Ok(name) = decode_token(&token) {
                prop_assert_eq!(encode_token(&name), token);
            }
        }
    }
}
