//! A KV store for tests: one region's members and health buckets, each with its own
//! revisions (one per write or delete), NATS key filters, and the driver's side of every read
//! and write the core asks for.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use gslb_state_core::{Bucket, Input, KvRead, Node, Now, Output};

/// NATS key-filter matching: tokens split at `.`, `*` matches exactly one token, `>` (last)
/// one or more trailing tokens.
pub fn filter_matches(filter: &str, key: &str) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    for (i, t) in f.iter().enumerate() {
        if *t == ">" {
            return i + 1 == f.len() && k.len() > i;
        }
        match k.get(i) {
            Some(token) if *t == "*" || t == token => {}
            _ => return false,
        }
    }
    f.len() == k.len()
}

/// One bucket: the live entries with the revision of their latest write.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// The revision of the latest write or delete.
    pub revision: u64,
    pub entries: BTreeMap<String, (u64, Bytes)>,
}

impl Store {
    /// Stores `value` under `key` at the next revision; returns it.
    pub fn put(&mut self, key: &str, value: Bytes) -> u64 {
        self.revision += 1;
        self.entries.insert(key.to_owned(), (self.revision, value));
        self.revision
    }

    /// Deletes `key` (a write at the next revision).
    pub fn delete(&mut self, key: &str) {
        self.revision += 1;
        self.entries.remove(key);
    }

    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.get(key).map(|(_, v)| v)
    }

    /// The live entries whose key matches `filter`, written at or after `from_revision`.
    pub fn matching(&self, filter: &str, from_revision: u64) -> Vec<(String, Bytes)> {
        self.entries
            .iter()
            .filter(|(k, (rev, _))| *rev >= from_revision && filter_matches(filter, k))
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }
}

/// In which order a report read hands in its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The chunks, then the keys of the filters.
    ChunksFirst,
    /// The keys of the filters, then the chunks.
    FiltersFirst,
}

/// The members and health buckets of one region (""), as a driver would use them.
#[derive(Debug, Clone)]
pub struct Kv {
    pub members: Store,
    pub health: Store,
    /// The order of a report read's entries.
    pub order: Order,
}

impl Default for Kv {
    fn default() -> Self {
        Kv {
            members: Store::default(),
            health: Store::default(),
            order: Order::ChunksFirst,
        }
    }
}

impl Kv {
    pub fn bucket(&mut self, bucket: Bucket) -> &mut Store {
        match bucket {
            Bucket::Members => &mut self.members,
            Bucket::Health => &mut self.health,
        }
    }

    /// Carries out a write: stores a `KvPut` (returning the `KvPutOk` that acknowledges it,
    /// not handed in) or a `KvDelete`. `None` for any other output.
    pub fn store(&mut self, out: &Output) -> Option<Input> {
        match out {
            Output::KvPut {
                bucket,
                key,
                value,
                seq,
                ..
            } => {
                let revision = self.bucket(*bucket).put(key, value.clone());
                Some(Input::KvPutOk {
                    bucket: *bucket,
                    key: key.clone(),
                    seq: *seq,
                    revision,
                })
            }
            Output::KvDelete { bucket, key } => {
                self.bucket(*bucket).delete(key);
                None
            }
            _ => None,
        }
    }

    /// Hands in to `n` what the read `out` asks for, then its end. Returns false (and does
    /// nothing) when `out` is no read.
    pub fn answer(&self, n: &mut Node, now: Now, out: &Output) -> bool {
        let (entries, read) = match out {
            Output::ReadSnapshot => (self.members_entries(), KvRead::Snapshot),
            Output::ReadMembers => (self.members_entries(), KvRead::Members),
            Output::ReadSnapshotReports {
                region,
                chunks,
                key_filters,
            } => {
                assert_eq!(region, "", "a report read of another region's bucket");
                let chunks: Vec<Input> = chunks
                    .iter()
                    .filter_map(|key| self.health.get(key).map(|value| health_entry(key, value)))
                    .collect();
                let mut keys = BTreeSet::new();
                let mut filtered = Vec::new();
                for (filter, from) in key_filters {
                    for (key, value) in self.health.matching(filter, *from) {
                        if keys.insert(key.clone()) {
                            filtered.push(health_entry(&key, &value));
                        }
                    }
                }
                let entries = match self.order {
                    Order::ChunksFirst => chunks.into_iter().chain(filtered).collect(),
                    Order::FiltersFirst => filtered.into_iter().chain(chunks).collect(),
                };
                (
                    entries,
                    KvRead::SnapshotReports {
                        region: region.clone(),
                    },
                )
            }
            Output::Resync {
                node, key_filter, ..
            } => (
                self.health
                    .matching(key_filter, 0)
                    .iter()
                    .map(|(k, v)| health_entry(k, v))
                    .collect(),
                KvRead::Reports { node: node.clone() },
            ),
            _ => return false,
        };
        for entry in entries {
            n.handle(now, entry);
        }
        n.handle(
            now,
            Input::KvReadDone {
                read,
                complete: true,
            },
        );
        true
    }

    fn members_entries(&self) -> Vec<Input> {
        self.members
            .entries
            .iter()
            .map(|(key, (_, value))| Input::KvEntry {
                bucket: Bucket::Members,
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// Drains `n`, answering its reads (until it asks for none), carrying out its writes and
    /// acknowledging them at once when `writes` is true; returns every output, in order.
    pub fn serve(&mut self, n: &mut Node, now: Now, writes: bool) -> Vec<Output> {
        let mut all = Vec::new();
        while let Some(out) = n.poll_output() {
            if !self.answer(n, now, &out)
                && writes
                && let Some(ack) = self.store(&out)
            {
                n.handle(now, ack);
            }
            all.push(out);
        }
        all
    }
}

fn health_entry(key: &str, value: &Bytes) -> Input {
    Input::KvEntry {
        bucket: Bucket::Health,
        key: key.to_owned(),
        value: value.clone(),
    }
}
