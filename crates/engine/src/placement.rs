//! Where a new member goes among a network partition's partitions.

use cairn_model::{NetworkPartitionPlacement, PartitionAlgorithm};

use crate::state::Member;

/// The partition for the next member, or `None` when every partition is at its max.
pub(crate) fn choose(placement: &NetworkPartitionPlacement, members: &[Member]) -> Option<String> {
    let count = |partition: &str| {
        members
            .iter()
            .filter(|m| m.status.is_live() && m.partition == partition)
            .count() as u32
    };
    let open = placement.partitions.iter().filter(|p| count(&p.id) < p.max);
    let chosen = match placement.algorithm {
        PartitionAlgorithm::OneAfterAnother => open.into_iter().next(),
        // Fewest members first; ties go to the partition listed first.
        PartitionAlgorithm::RoundRobin => open.min_by_key(|p| count(&p.id)),
    };
    chosen.map(|p| p.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemberStatus, Millis};
    use cairn_model::PartitionPlacement;

    fn check(
        algorithm: PartitionAlgorithm,
        maxes: &[u32],
        existing: &[&str],
        expected: Option<&str>,
    ) {
        let placement = NetworkPartitionPlacement {
            id: "np".into(),
            algorithm,
            partitions: maxes
                .iter()
                .enumerate()
                .map(|(i, &max)| PartitionPlacement {
                    id: format!("p{}", i + 1),
                    max,
                })
                .collect(),
        };
        let members: Vec<Member> = existing
            .iter()
            .map(|p| Member {
                id: String::new(),
                status: MemberStatus::Active,
                network_partition: "np".into(),
                partition: p.to_string(),
                host: None,
                ports: Default::default(),
                pid: None,
                created_at: Millis(0),
                active_at: None,
                since: Millis(0),
                load: Default::default(),
                stop_at: None,
                faulted: false,
                killed: false,
            })
            .collect();
        assert_eq!(choose(&placement, &members).as_deref(), expected);
    }

    #[test]
    fn one_after_another_fills_in_order() {
        check(
            PartitionAlgorithm::OneAfterAnother,
            &[2, 2],
            &[],
            Some("p1"),
        );
        check(
            PartitionAlgorithm::OneAfterAnother,
            &[2, 2],
            &["p1"],
            Some("p1"),
        );
        check(
            PartitionAlgorithm::OneAfterAnother,
            &[2, 2],
            &["p1", "p1"],
            Some("p2"),
        );
        check(
            PartitionAlgorithm::OneAfterAnother,
            &[1, 1],
            &["p1", "p2"],
            None,
        );
    }

    #[test]
    fn round_robin_spreads() {
        check(PartitionAlgorithm::RoundRobin, &[5, 5], &[], Some("p1"));
        check(PartitionAlgorithm::RoundRobin, &[5, 5], &["p1"], Some("p2"));
        check(
            PartitionAlgorithm::RoundRobin,
            &[5, 5],
            &["p1", "p2"],
            Some("p1"),
        );
        check(PartitionAlgorithm::RoundRobin, &[1, 5], &["p1"], Some("p2"));
        check(PartitionAlgorithm::RoundRobin, &[1, 1], &["p1", "p2"], None);
    }
}
