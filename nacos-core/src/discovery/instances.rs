//! A service's instances as a caller sees them, and the choice of one: same cluster first,
//! then weighted random by Nacos weight (what Spring Cloud Alibaba's `NacosLoadBalancer`
//! and the Java client's `Chooser` do).

use std::time::SystemTime;

use crate::instance::Instance;

/// A snapshot of a watched service: its `healthy && enabled` instances, in a stable order
/// (by `ip:port`), with what is needed to pick one in a few nanoseconds.
///
/// Cheap to hold: a [`ServiceWatch`](super::ServiceWatch) hands out `Arc<Instances>` and
/// replaces the whole snapshot when the list changes, so a reader never sees half an
/// update.
#[derive(Debug, Clone, Default)]
pub struct Instances {
    all: Vec<Instance>,
    /// Cumulative weights over `all` (weight <= 0 or not finite counts as 0: never picked).
    all_weights: Vec<f64>,
    /// Indexes into `all` of the instances in the preferred cluster.
    preferred: Vec<usize>,
    /// Cumulative weights over `preferred`.
    preferred_weights: Vec<f64>,
    version: u64,
    updated: Option<SystemTime>,
    reach_protection_threshold: bool,
    /// How many instances the server listed, unhealthy and disabled ones included.
    listed: usize,
}

impl Instances {
    /// Builds a snapshot from a server's list: keeps `healthy && enabled` instances,
    /// prefers `cluster` (when given) for [`pick`](Self::pick).
    pub(crate) fn new(
        listed: Vec<Instance>,
        cluster: Option<&str>,
        version: u64,
        reach_protection_threshold: bool,
    ) -> Self {
        let listed_count = listed.len();
        let mut all: Vec<Instance> = listed
            .into_iter()
            .filter(|i| i.healthy && i.enabled)
            .collect();
        all.sort_by(|a, b| (&a.ip, a.port).cmp(&(&b.ip, b.port)));
        all.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
        let all_weights = cumulative(all.iter());
        let preferred: Vec<usize> = match cluster {
            Some(cluster) => (0..all.len())
                .filter(|&i| all[i].cluster_name == cluster)
                .collect(),
            None => Vec::new(),
        };
        let preferred_weights = cumulative(preferred.iter().map(|&i| &all[i]));
        Instances {
            all,
            all_weights,
            preferred,
            preferred_weights,
            version,
            updated: Some(SystemTime::now()),
            reach_protection_threshold,
            listed: listed_count,
        }
    }

    /// A snapshot of `listed` as a watch builds it from a server's answer (keeping
    /// `healthy && enabled` instances, preferring `preferred_cluster` when picking): for
    /// tests, benchmarks and lists that come from elsewhere.
    pub fn from_instances(listed: Vec<Instance>, preferred_cluster: Option<&str>) -> Self {
        Self::new(listed, preferred_cluster, 1, false)
    }

    /// The instances, `healthy && enabled`, ordered by `ip:port`.
    pub fn all(&self) -> &[Instance] {
        &self.all
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// How many instances the server listed, unhealthy and disabled ones included (the
    /// snapshot keeps the `healthy && enabled` ones).
    pub fn listed(&self) -> usize {
        self.listed
    }

    /// Increases by one with every change of the list; 0 before the first answer.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the list was last taken from Nacos; `None` before the first answer.
    pub fn updated(&self) -> Option<SystemTime> {
        self.updated
    }

    /// Whether the server said the service is below its protect threshold: it then lists
    /// unhealthy instances as healthy, so that callers do not pile onto the few healthy
    /// ones (Nacos's `reachProtectionThreshold`, v1 API only). Calls may then reach an
    /// instance that is down; a refused connection is retried on another one.
    pub fn reach_protection_threshold(&self) -> bool {
        self.reach_protection_threshold
    }

    /// Picks an instance: among the preferred cluster's when it has any with a positive
    /// weight, else among all; weighted random by Nacos weight. Instances of weight 0 are
    /// never picked. `None` when no instance can be.
    pub fn pick(&self) -> Option<&Instance> {
        self.pick_with(fastrand::f64())
    }

    /// As [`pick`](Self::pick), but never `avoid` (`ip`, `port`): for a retry on another
    /// instance. `None` when no other instance can be picked.
    pub fn pick_other(&self, avoid: (&str, u16)) -> Option<&Instance> {
        self.pick_avoiding(|i| i.ip == avoid.0 && i.port == avoid.1)
    }

    /// As [`pick`](Self::pick), among the instances for which `is_avoided` is false (same
    /// cluster first, then by weight). `None` when no such instance can be picked.
    pub fn pick_avoiding(&self, is_avoided: impl Fn(&Instance) -> bool) -> Option<&Instance> {
        let first = self.pick()?;
        if !is_avoided(first) {
            return Some(first);
        }
        // Weighted among the others: the same rule without the avoided one.
        let others: Vec<&Instance> = self.all.iter().filter(|i| !is_avoided(i)).collect();
        let preferred: Vec<&Instance> = self
            .preferred
            .iter()
            .map(|&i| &self.all[i])
            .filter(|i| !is_avoided(i))
            .collect();
        let pool = if cumulative(preferred.iter().copied()).last() > Some(&0.0) {
            preferred
        } else {
            others
        };
        let weights = cumulative(pool.iter().copied());
        choose(&weights, fastrand::f64()).map(|i| pool[i])
    }

    /// The pick for a uniform random `r` in `[0, 1)`.
    pub(crate) fn pick_with(&self, r: f64) -> Option<&Instance> {
        if let Some(i) = choose(&self.preferred_weights, r) {
            return Some(&self.all[self.preferred[i]]);
        }
        choose(&self.all_weights, r).map(|i| &self.all[i])
    }
}

/// The usable weight of an instance: Nacos ignores weights that are not positive.
fn weight(instance: &Instance) -> f64 {
    if instance.weight.is_finite() && instance.weight > 0.0 {
        instance.weight
    } else {
        0.0
    }
}

fn cumulative<'a>(instances: impl Iterator<Item = &'a Instance>) -> Vec<f64> {
    let mut sum = 0.0;
    instances
        .map(|i| {
            sum += weight(i);
            sum
        })
        .collect()
}

/// The index whose cumulative-weight slot holds `r * total`; `None` when the total is 0.
fn choose(cumulative: &[f64], r: f64) -> Option<usize> {
    let total = *cumulative.last()?;
    if total <= 0.0 {
        return None;
    }
    let target = r * total;
    // The first slot whose upper bound is above the target (zero-width slots are skipped).
    let i = cumulative.partition_point(|&upper| upper <= target);
    Some(i.min(cumulative.len() - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(ip: &str, port: u16, weight: f64, cluster: &str) -> Instance {
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "ip": ip, "port": port, "weight": weight, "clusterName": cluster,
        }))
        .unwrap();
        i.healthy = true;
        i
    }

    #[test]
    fn keeps_healthy_enabled_instances_in_a_stable_order() {
        let mut sick = inst("10.0.0.3", 80, 1.0, "A");
        sick.healthy = false;
        let mut off = inst("10.0.0.4", 80, 1.0, "A");
        off.enabled = false;
        let list = vec![
            inst("10.0.0.2", 80, 1.0, "A"),
            sick,
            off,
            inst("10.0.0.1", 80, 1.0, "A"),
        ];
        let snapshot = Instances::new(list, None, 1, false);
        let ips: Vec<&str> = snapshot.all().iter().map(|i| i.ip.as_str()).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn picks_by_weight_and_never_weight_zero() {
        let list = vec![
            inst("10.0.0.1", 80, 1.0, "A"),
            inst("10.0.0.2", 80, 3.0, "A"),
            inst("10.0.0.3", 80, 0.0, "A"),
        ];
        let s = Instances::new(list, None, 1, false);
        assert_eq!(s.pick_with(0.0).unwrap().ip, "10.0.0.1");
        assert_eq!(s.pick_with(0.2499).unwrap().ip, "10.0.0.1");
        assert_eq!(s.pick_with(0.25).unwrap().ip, "10.0.0.2");
        assert_eq!(s.pick_with(0.9999).unwrap().ip, "10.0.0.2");
        let mut counts = [0; 3];
        for _ in 0..40_000 {
            let ip = &s.pick().unwrap().ip;
            counts[ip.rsplit('.').next().unwrap().parse::<usize>().unwrap() - 1] += 1;
        }
        assert_eq!(counts[2], 0, "weight 0 is never picked");
        let ratio = f64::from(counts[1]) / f64::from(counts[0]);
        assert!((2.7..3.3).contains(&ratio), "3:1 weights gave {counts:?}");
    }

    #[test]
    fn same_cluster_first_then_all() {
        let list = vec![
            inst("10.0.0.1", 80, 1.0, "A"),
            inst("10.0.0.2", 80, 1.0, "B"),
        ];
        let s = Instances::new(list.clone(), Some("B"), 1, false);
        for r in [0.0, 0.5, 0.99] {
            assert_eq!(s.pick_with(r).unwrap().ip, "10.0.0.2");
        }
        let s = Instances::new(list, Some("C"), 1, false);
        assert_eq!(s.pick_with(0.0).unwrap().ip, "10.0.0.1");
        assert_eq!(s.pick_with(0.99).unwrap().ip, "10.0.0.2");
    }

    #[test]
    fn nothing_to_pick() {
        assert!(Instances::default().pick().is_none());
        let zero = Instances::new(vec![inst("10.0.0.1", 80, 0.0, "A")], None, 1, false);
        assert!(zero.pick().is_none());
    }

    #[test]
    fn another_instance_for_a_retry() {
        let list = vec![
            inst("10.0.0.1", 80, 1.0, "A"),
            inst("10.0.0.2", 80, 1.0, "A"),
        ];
        let s = Instances::new(list, Some("A"), 1, false);
        for _ in 0..100 {
            assert_eq!(s.pick_other(("10.0.0.1", 80)).unwrap().ip, "10.0.0.2");
        }
        let one = Instances::new(vec![inst("10.0.0.1", 80, 1.0, "A")], None, 1, false);
        assert!(one.pick_other(("10.0.0.1", 80)).is_none());
    }

    #[test]
    fn avoided_instances_are_never_picked_while_another_can_be() {
        let list = vec![
            inst("10.0.0.1", 80, 1.0, "A"),
            inst("10.0.0.2", 80, 1.0, "A"),
            inst("10.0.0.3", 80, 1.0, "B"),
        ];
        let s = Instances::new(list, Some("A"), 1, false);
        let avoid = |i: &Instance| i.ip != "10.0.0.3";
        for _ in 0..100 {
            // The preferred cluster is all avoided: the other cluster's instance.
            assert_eq!(s.pick_avoiding(avoid).unwrap().ip, "10.0.0.3");
        }
        assert!(s.pick_avoiding(|_| true).is_none());
        assert_eq!(s.listed(), 3);
    }
}
