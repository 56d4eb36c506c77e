//! The simulated JetStream KV store: one map per bucket, a revision per write, durable across
//! broker outages (JetStream persists to disk).
//!
//! Revisions count every write (put or delete) of the whole store from 1, as a JetStream
//! stream's sequence counts every message of its bucket: one counter for both buckets keeps
//! them growing by one per write within each bucket's order too, which is all a reader relies on
//! (the core compares revisions of the health bucket only). A key keeps the revision and value
//! of its last put; a delete removes the value (reads skip it) but takes a revision all the
//! same.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use gslb_state_core::Bucket;

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvValue {
    /// The bucket revision of the write that stored it.
    pub revision: u64,
    /// The value.
    pub value: Bytes,
}

/// The members and health buckets of the simulated cluster.
#[derive(Debug, Default)]
pub struct Kv {
    members: BTreeMap<String, KvValue>,
    health: BTreeMap<String, KvValue>,
    revision: u64,
}

impl Kv {
    fn bucket(&self, bucket: Bucket) -> &BTreeMap<String, KvValue> {
        match bucket {
            Bucket::Members => &self.members,
            Bucket::Health => &self.health,
        }
    }

    fn bucket_mut(&mut self, bucket: Bucket) -> &mut BTreeMap<String, KvValue> {
        match bucket {
            Bucket::Members => &mut self.members,
            Bucket::Health => &mut self.health,
        }
    }

    /// Stores `value` under `key`; returns the revision it was stored at.
    pub fn put(&mut self, bucket: Bucket, key: String, value: Bytes) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        self.bucket_mut(bucket)
            .insert(key, KvValue { revision, value });
        revision
    }

    /// Deletes `key` (a write: it takes the next revision, whether or not `key` held a
    /// value); returns that revision.
    pub fn delete(&mut self, bucket: Bucket, key: &str) -> u64 {
        self.revision += 1;
        self.bucket_mut(bucket).remove(key);
        self.revision
    }

    /// The value under `key` and the revision it was stored at (a direct get), if the key
    /// holds one.
    pub fn get(&self, bucket: Bucket, key: &str) -> Option<&KvValue> {
        self.bucket(bucket).get(key)
    }

    /// The latest revision of any write.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Number of keys in `bucket`.
    pub fn len(&self, bucket: Bucket) -> usize {
        self.bucket(bucket).len()
    }

    /// Whether both buckets are empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.health.is_empty()
    }

    /// Every entry of `bucket` whose key matches the NATS-style `filter` (`>` matches the
    /// rest, `*` one token), in key order.
    pub fn read(&self, bucket: Bucket, filter: &str) -> Vec<(String, Bytes)> {
        self.entries(bucket, filter)
            .map(|(k, v)| (k.to_owned(), v.value.clone()))
            .collect()
    }

    /// Every entry of `bucket` whose key matches `filter` ([`subject_matches`]), with its
    /// revision, in key order.
    pub fn entries<'a>(
        &'a self,
        bucket: Bucket,
        filter: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a KvValue)> + 'a {
        // Every key that matches starts with what comes before the filter's first wildcard.
        let literal = filter.find(['*', '>']).map_or(filter, |i| &filter[..i]);
        self.bucket(bucket)
            .range::<str, _>((Bound::Included(literal), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(literal))
            .filter(move |(k, _)| subject_matches(filter, k))
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// NATS subject matching, as a KV key filter matches keys: tokens split on `.`, a `*` token
/// matches exactly one token, a `>` token (last) one or more trailing tokens, any other token
/// only itself. `<node>.*` matches `<node>`'s report keys (two tokens) and not its snapshot
/// chunks (`<node>._SNAP.<slot>.<index>`, four); `*.*` every report key and no chunk.
pub fn subject_matches(filter: &str, key: &str) -> bool {
    let mut f = filter.split('.');
    let mut k = key.split('.');
    loop {
        match (f.next(), k.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_nats() {
        assert!(subject_matches("a.>", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.>", "ab.c"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches(">", "x"));
        assert!(subject_matches("a", "a"));
        assert!(!subject_matches("a", "a.b"));
        assert!(!subject_matches("a.b", "a"));
        assert!(subject_matches("*.b.>", "x.b.c.d"));
        assert!(!subject_matches("*.b.>", "x.c.c.d"));
    }

    #[test]
    fn report_filters_match_report_keys_and_no_chunk_key() {
        let chunk = "n1._SNAP.0.3";
        assert!(subject_matches("n1.*", "n1.web"));
        assert!(!subject_matches("n1.*", chunk), "a chunk has four tokens");
        assert!(!subject_matches("n1.*", "n10.web"));
        assert!(!subject_matches("n1.*", "n1"));
        assert!(subject_matches("*.*", "n1.web"));
        assert!(subject_matches("*.*", "n10.db"));
        assert!(!subject_matches("*.*", chunk));
        assert!(!subject_matches("*.*", "n1"));
        assert!(subject_matches("n1.>", chunk));
        assert!(subject_matches("n1._SNAP.*.*", chunk));
    }

    #[test]
    fn entries_carry_the_revision_of_the_last_write_and_deletes_take_one() {
        let mut kv = Kv::default();
        assert_eq!(
            kv.put(Bucket::Health, "n1.web".into(), Bytes::from_static(b"1")),
            1
        );
        assert_eq!(
            kv.put(Bucket::Members, "n1".into(), Bytes::from_static(b"m")),
            2
        );
        assert_eq!(
            kv.put(
                Bucket::Health,
                "n1._SNAP.1.0".into(),
                Bytes::from_static(b"c")
            ),
            3
        );
        assert_eq!(
            kv.put(Bucket::Health, "n1.web".into(), Bytes::from_static(b"2")),
            4
        );
        assert_eq!(
            kv.delete(Bucket::Health, "n1.db"),
            5,
            "a delete of nothing too"
        );
        assert_eq!(
            kv.get(Bucket::Health, "n1.web").map(|v| v.revision),
            Some(4)
        );
        assert_eq!(kv.get(Bucket::Health, "n1.db"), None);
        let got: Vec<(&str, u64)> = kv
            .entries(Bucket::Health, "*.*")
            .map(|(k, v)| (k, v.revision))
            .collect();
        assert_eq!(got, [("n1.web", 4)]);
        assert_eq!(kv.entries(Bucket::Health, "n1.*").count(), 1);
        assert_eq!(kv.entries(Bucket::Health, "n1.>").count(), 2);
        assert_eq!(kv.delete(Bucket::Health, "n1.web"), 6);
        assert_eq!(kv.entries(Bucket::Health, "*.*").count(), 0);
    }

    #[test]
    fn reads_by_prefix_with_revisions() {
        let mut kv = Kv::default();
        kv.put(Bucket::Health, "n1.web".into(), Bytes::from_static(b"1"));
        kv.put(Bucket::Health, "n10.web".into(), Bytes::from_static(b"2"));
        kv.put(Bucket::Health, "n1.db".into(), Bytes::from_static(b"3"));
        kv.put(Bucket::Members, "n1".into(), Bytes::from_static(b"m"));
        let got: Vec<String> = kv
            .read(Bucket::Health, "n1.>")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, ["n1.db", "n1.web"]);
        assert_eq!(kv.read(Bucket::Health, ">").len(), 3);
        assert_eq!(kv.revision(), 4);
        kv.delete(Bucket::Health, "n1.db");
        assert_eq!(kv.len(Bucket::Health), 2);
        assert_eq!(kv.revision(), 5);
    }
}
