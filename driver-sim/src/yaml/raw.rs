//! The scenario file as written: serde's model of the YAML, every value with its line
//! ([`Spanned`]), before anything is checked. `mod.rs` turns it into a
//! [`crate::Scenario`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// The line of a value in the file.
pub(super) fn line_of<T>(value: &Spanned<T>) -> Option<u64> {
    Some(value.referenced.line())
}

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    /// Free text, shown by `gslb-sim run`.
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) seed: Option<Spanned<u64>>,
    pub(super) duration: Option<Spanned<String>>,
    pub(super) state: Option<Spanned<RawState>>,
    pub(super) network: Option<Spanned<RawNetwork>>,
    pub(super) nodes: Option<Spanned<Vec<Spanned<RawNode>>>>,
    pub(super) events: Option<Vec<Spanned<RawEvent>>>,
    pub(super) expect: Option<Vec<Spanned<RawExpect>>>,
}

/// `state:`, handed on to the core's configuration parser.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawState {
    pub(super) health_policy: Option<Spanned<String>>,
    pub(super) quorum_min_percent: Option<Spanned<i64>>,
    pub(super) heartbeat_interval: Option<Spanned<String>>,
    #[serde(rename = "heartbeatTTL")]
    pub(super) heartbeat_ttl: Option<Spanned<String>>,
    pub(super) quorum_scope: Option<Spanned<String>>,
    pub(super) hold_up: Option<Spanned<String>>,
    pub(super) hold_down: Option<Spanned<String>>,
}

/// `network:`, or the `network:` of an event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawNetwork {
    pub(super) latency: Option<Spanned<String>>,
    pub(super) jitter: Option<Spanned<String>>,
    pub(super) loss: Option<Spanned<f64>>,
    pub(super) duplicate: Option<Spanned<f64>>,
    pub(super) reorder: Option<Spanned<f64>>,
    pub(super) links: Option<Vec<Spanned<RawLink>>>,
    pub(super) region_latency: Option<Spanned<RawRegionLatency>>,
}

/// `network.regionLatency`: region → region → extra one-way delay, like
/// `{eu: {us: 40ms, ap: 120ms}, us: {ap: 90ms}}` (each pair once, in either order).
pub(super) type RawRegionLatency = BTreeMap<String, Spanned<BTreeMap<String, Spanned<String>>>>;

/// One entry of `network.links`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLink {
    pub(super) between: Spanned<Vec<String>>,
    pub(super) latency: Option<Spanned<String>>,
    pub(super) jitter: Option<Spanned<String>>,
    pub(super) loss: Option<Spanned<f64>>,
    pub(super) duplicate: Option<Spanned<f64>>,
    pub(super) reorder: Option<Spanned<f64>>,
}

/// A node: a plain id, or a map with its clock.
pub(super) enum RawNode {
    Id(String),
    Full(Box<RawNodeMap>),
}

/// A node written as a map.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawNodeMap {
    pub(super) id: Spanned<String>,
    pub(super) region: Option<String>,
    pub(super) start: Option<Spanned<String>>,
    pub(super) clock_offset: Option<Spanned<String>>,
    pub(super) drift: Option<Spanned<f64>>,
    pub(super) monotonic_offset: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id, or a map like {id: ap-1, clockOffset: -20s}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNode, E> {
                Ok(RawNode::Id(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawNode, E> {
                Ok(RawNode::Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawNode, E> {
                Ok(RawNode::Id(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawNode, A::Error> {
                RawNodeMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|m| RawNode::Full(Box::new(m)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `Some(None)` for an explicit `null`, `None` when the key is absent.
fn explicit_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

/// One entry of `events:`; exactly one kind of event must be given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvent {
    pub(super) at: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "explicit_null")]
    pub(super) healthy: Option<Option<bool>>,
    pub(super) partition: Option<Spanned<RawPartition>>,
    pub(super) heal: Option<Spanned<bool>>,
    pub(super) crash: Option<Spanned<String>>,
    pub(super) leave: Option<Spanned<String>>,
    pub(super) restart: Option<Spanned<RawRestart>>,
    pub(super) broker: Option<Spanned<String>>,
    pub(super) isolate: Option<Spanned<String>>,
    pub(super) rejoin: Option<Spanned<String>>,
    pub(super) clock: Option<Spanned<RawClock>>,
    pub(super) network: Option<Spanned<RawNetwork>>,
}

/// A partition: groups of node ids (`[[eu-1], [us-1, ap-1]]`), or groups of regions
/// (`{regions: [[eu], [us, ap]]}`).
pub(super) enum RawPartition {
    Nodes(Vec<Vec<String>>),
    Regions(RawRegionPartition),
}

/// A partition written as a map: by region.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegionPartition {
    pub(super) regions: Spanned<Vec<Vec<String>>>,
}

impl<'de> Deserialize<'de> for RawPartition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPartition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "groups of node ids like [[eu-1], [us-1, ap-1]], or of regions like \
                     {regions: [[eu], [us, ap]]}",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawPartition, A::Error> {
                Vec::<Vec<String>>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(RawPartition::Nodes)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPartition, A::Error> {
                RawRegionPartition::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawPartition::Regions)
            }
        }
        d.deserialize_any(V)
    }
}

/// A restart: a plain node id, or a map with the wall clock it restarts with.
pub(super) enum RawRestart {
    Id(String),
    Full(RawRestartMap),
}

/// A restart written as a map.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawRestartMap {
    pub(super) node: Spanned<String>,
    pub(super) clock_offset: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawRestart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRestart;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id, or a map like {node: us-1, clockOffset: -1h}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRestart, E> {
                Ok(RawRestart::Id(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRestart, E> {
                Ok(RawRestart::Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRestart, E> {
                Ok(RawRestart::Id(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRestart, A::Error> {
                RawRestartMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawRestart::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// A `clock:` event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClock {
    pub(super) node: Spanned<String>,
    pub(super) offset: Option<Spanned<String>>,
    pub(super) drift: Option<Spanned<f64>>,
}

/// One entry of `expect:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    pub(super) at: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "explicit_null")]
    pub(super) healthy: Option<Option<bool>>,
    pub(super) source: Option<Spanned<String>>,
    #[serde(alias = "healthyReports")]
    pub(super) healthy_reports: Option<Spanned<u32>>,
    #[serde(alias = "totalReports")]
    pub(super) total_reports: Option<Spanned<u32>>,
    #[serde(alias = "healthyRegions")]
    pub(super) healthy_regions: Option<Spanned<u32>>,
    #[serde(alias = "totalRegions")]
    pub(super) total_regions: Option<Spanned<u32>>,
    pub(super) pending: Option<Spanned<String>>,
    #[serde(alias = "activeMembers")]
    pub(super) active_members: Option<Spanned<Vec<String>>>,
}
