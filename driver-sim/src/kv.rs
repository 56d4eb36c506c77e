//! The simulated JetStream KV store: one map per bucket, a revision per write, durable across
//! broker outages (JetStream persists to disk).

use std::collections::BTreeMap;

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

    /// Stores `value` under `key`; returns the new revision.
    pub fn put(&mut self, bucket: Bucket, key: String, value: Bytes) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        self.bucket_mut(bucket)
            .insert(key, KvValue { revision, value });
        revision
    }

    /// Deletes `key`.
    pub fn delete(&mut self, bucket: Bucket, key: &str) {
        self.revision += 1;
        self.bucket_mut(bucket).remove(key);
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
        let map = self.bucket(bucket);
        let literal = filter.find(['*', '>']).map_or(filter, |i| &filter[..i]);
        map.range(literal.to_owned()..)
            .take_while(|(k, _)| k.starts_with(literal))
            .filter(|(k, _)| subject_matches(filter, k))
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect()
    }
}

/// NATS subject matching: tokens split on `.`, `*` matches one token, `>` one or more.
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
