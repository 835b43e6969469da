//! Instance metadata: the map type and the `preserved.*` keys Nacos reads from it.

use serde::Serializer;

/// Metadata key of the beat interval, in ms (a Nacos convention).
pub const PRESERVED_HEART_BEAT_INTERVAL: &str = "preserved.heart.beat.interval";
/// Metadata key of the time without beats after which the instance is unhealthy, in ms.
pub const PRESERVED_HEART_BEAT_TIMEOUT: &str = "preserved.heart.beat.timeout";
/// Metadata key of the time without beats after which the instance is deleted, in ms.
pub const PRESERVED_IP_DELETE_TIMEOUT: &str = "preserved.ip.delete.timeout";
/// Metadata key naming who registered the instance (informational).
pub const PRESERVED_REGISTER_SOURCE: &str = "preserved.register.source";

/// An instance's metadata: string keys and values, sorted by key, held in one vector (a
/// [`litemap::LiteMap`]).
///
/// A `BTreeMap<String, String>` takes a 540-byte node however few entries it holds, and
/// a process that registers thousands of instances holds two maps per registration (the
/// configuration's and the instance's): a map of a few entries costs a tenth of that here.
///
/// Look up with `get("key")`, add with `insert`; `Instance` and `BeatInfo` serialise it as
/// a JSON object (even when empty), and [`metadata_json`] gives the text sent to Nacos.
pub type Metadata = litemap::LiteMap<String, String>;

/// `metadata` as a JSON object, the form Nacos takes: `{"k":"v"}`, `{}` when empty.
pub fn metadata_json(metadata: &Metadata) -> String {
    let mut out = Vec::with_capacity(64);
    // Writing string pairs into a Vec cannot fail.
    drop(metadata_as_map(
        metadata,
        &mut serde_json::Serializer::new(&mut out),
    ));
    String::from_utf8(out).unwrap_or_default()
}

/// Serialises metadata as a map, empty or not (a `LiteMap` serialises an empty map as a
/// sequence in human-readable formats).
pub(crate) fn metadata_as_map<S: Serializer>(
    metadata: &Metadata,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(metadata.iter())
}
