//! A history of what a workload did, and a checker of the guarantees over all of it.
//!
//! The workload records every acknowledged send, every delivery (with the claim, i.e. the
//! generation, it happened under), every commit and its outcome. The store contributes two
//! totally ordered facts: the stream contents at the end, and every write of each group's
//! state in revision order (an audit trigger on PostgreSQL, a recording driver in process).
//! Revisions order those writes even when they came from several processes, so fencing and
//! monotonic commits are checked against what the store actually accepted, not against what
//! the consumers believed. Guarantee numbers are the README's (and the crate docs'), as
//! everywhere in the project.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A send that returned `Ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Target stream.
    pub stream: String,
    /// The offset `send` returned.
    pub offset: u64,
    /// The payload the workload sent (its unique id).
    pub payload: String,
}

/// A message `next()` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Which consumer (an id unique in the history).
    pub consumer: String,
    /// The group it belongs to.
    pub group: String,
    /// The generation of the claim it was delivered under.
    pub generation: u64,
    /// The offset.
    pub offset: u64,
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `commit` returned `Ok`.
    Accepted,
    /// `commit` returned `Error::Fenced`.
    Fenced,
    /// Any other error (storage, standby).
    Failed,
}

/// A call to `commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Which consumer.
    pub consumer: String,
    /// The group.
    pub group: String,
    /// The generation of the claim the committed messages were delivered under.
    pub generation: u64,
    /// The offset committed.
    pub offset: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// One accepted write of a group's state, as the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupWrite {
    /// The group.
    pub group: String,
    /// The record revision this write produced.
    pub revision: u64,
    /// Owner written.
    pub owner: String,
    /// Generation written.
    pub generation: u64,
    /// Whether the owner is active.
    pub active: bool,
    /// Committed offset written.
    pub committed: u64,
}

/// Everything a workload observed. Per-consumer events must be pushed in the order that
/// consumer saw them.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Acknowledged sends.
    pub acks: Vec<Ack>,
    /// Deliveries.
    pub deliveries: Vec<Delivery>,
    /// Commits.
    pub commits: Vec<Commit>,
    /// Accepted group-state writes (any order; the checker sorts by revision).
    pub writes: Vec<GroupWrite>,
    /// The stream contents at the end: stream -> (offset, payload), read back from the store.
    pub stored: BTreeMap<String, Vec<(u64, String)>>,
    /// The groups that were expected to consume each stream.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Per group: the offsets of the messages it dead-lettered, in the order of its
    /// dead-letter stream (read back from the store).
    pub dead_letters: BTreeMap<String, Vec<u64>>,
    /// For a run whose handlers commit in their own transaction (`commit_in`): per stream
    /// (log), the offset of every effect row that transaction stored, as often as it is
    /// stored. `None` for other runs.
    pub effects: Option<BTreeMap<String, Vec<u64>>>,
    /// Resets an operator made (`Admin::reset_group`): per group, the generations whose first
    /// write was a reset. Only such a write may move a committed offset back, and only the
    /// offsets such a write moves it forward over may go undelivered.
    pub resets: BTreeMap<String, BTreeSet<u64>>,
}

/// One broken guarantee, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Guarantee 3: an acknowledged message never reached a group.
    NotDelivered {
        /// Group.
        group: String,
        /// Offset.
        offset: u64,
    },
    /// Guarantee 2: a consumer's deliveries within one claim went backwards or skipped an
    /// offset.
    OutOfOrder {
        /// Consumer.
        consumer: String,
        /// Offset delivered before.
        previous: u64,
        /// Offset delivered next.
        next: u64,
    },
    /// Guarantee 7: the stored committed offset of a group went down.
    CommittedDecreased {
        /// Group.
        group: String,
        /// Revision at which it happened.
        revision: u64,
        /// Before.
        from: u64,
        /// After.
        to: u64,
    },
    /// Guarantees 4 and 6: the store accepted a write from a generation that had been
    /// superseded, or a consumer saw a commit accepted after being told it was fenced.
    FencedWriteAccepted {
        /// Group.
        group: String,
        /// What happened.
        detail: String,
    },
    /// Guarantee 3: a message was delivered again although it had been committed before the
    /// claim that redelivered it began (delivery resumes right after the last commit).
    UnjustifiedRedelivery {
        /// Group.
        group: String,
        /// Offset.
        offset: u64,
        /// The claim that redelivered it.
        generation: u64,
        /// Where that claim resumed.
        resumed_after: u64,
    },
    /// Guarantees 6 and 7: a commit the store holds does not match what the claim delivered,
    /// or a commit reported accepted is not in the store.
    CommitMismatch {
        /// Group.
        group: String,
        /// What is wrong.
        detail: String,
    },
    /// A delivery or commit names a claim (generation) the store never recorded.
    UnknownClaim {
        /// Group.
        group: String,
        /// The generation.
        generation: u64,
    },
    /// A message was copied to its group's dead-letter stream more than once.
    DeadLetteredTwice {
        /// Group.
        group: String,
        /// Offset.
        offset: u64,
    },
    /// Exactly once: a handler that commits in its own transaction stored the effect of an
    /// acknowledged message other than once (0: lost; 2 or more: applied again after its
    /// commit, or by a fenced consumer).
    NotExactlyOnce {
        /// Stream (log).
        stream: String,
        /// Offset.
        offset: u64,
        /// How many effects of it are stored.
        applied: usize,
    },
    /// Guarantees 1, 2 and 10: a stream has a hole, or an acknowledged message is missing or
    /// different.
    NotDense {
        /// Stream.
        stream: String,
        /// What is wrong.
        detail: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl History {
    /// Checks every guarantee over the whole history; returns all violations found.
    pub fn check(&self) -> Result<(), Vec<Violation>> {
        let mut violations = Vec::new();
        self.check_dense(&mut violations);
        self.check_delivered(&mut violations);
        self.check_order(&mut violations);
        self.check_writes(&mut violations);
        self.check_redelivery(&mut violations);
        self.check_commits_after_fencing(&mut violations);
        self.check_commits_match(&mut violations);
        self.check_dead_letters(&mut violations);
        self.check_exactly_once(&mut violations);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    /// Panics with a readable report if any guarantee is broken.
    pub fn assert_valid(&self) {
        if let Err(violations) = self.check() {
            let shown: Vec<String> = violations
                .iter()
                .take(20)
                .map(|v| format!("  {v}"))
                .collect();
            panic!(
                "{} violation(s) in a history of {} acks, {} deliveries, {} commits, {} writes:\n{}",
                violations.len(),
                self.acks.len(),
                self.deliveries.len(),
                self.commits.len(),
                self.writes.len(),
                shown.join("\n")
            );
        }
    }

    /// The offset a claim of `group` hands out after `offset`: the next one not dead-lettered
    /// by the group (a consumer dead-letters a crash suspect without handing it out).
    fn next_handed_out(&self, group: &str, offset: u64) -> u64 {
        let dead = self.dead_letters.get(group);
        let mut next = offset + 1;
        while dead.is_some_and(|d| d.contains(&next)) {
            next += 1;
        }
        next
    }

    /// Whether a claim of `group` may hand out `next` right after `previous`: the next
    /// offset, or the first one past the dead letters that follow (a crash suspect is
    /// dead-lettered without being handed out; a nacked one was handed out first).
    fn follows(&self, group: &str, previous: u64, next: u64) -> bool {
        next == previous + 1 || next == self.next_handed_out(group, previous)
    }

    /// In a run with effects: every acknowledged message's effect is stored exactly once, and
    /// no message's effect twice.
    fn check_exactly_once(&self, violations: &mut Vec<Violation>) {
        let Some(effects) = &self.effects else {
            return;
        };
        let mut counts: BTreeMap<(&str, u64), usize> = BTreeMap::new();
        for (stream, offsets) in effects {
            for &offset in offsets {
                *counts.entry((stream.as_str(), offset)).or_default() += 1;
            }
        }
        let mut wrong: BTreeMap<(&str, u64), usize> = counts
            .iter()
            .filter(|(_, applied)| **applied > 1)
            .map(|(key, applied)| (*key, *applied))
            .collect();
        for ack in &self.acks {
            let key = (ack.stream.as_str(), ack.offset);
            let applied = counts.get(&key).copied().unwrap_or(0);
            if applied != 1 {
                wrong.insert(key, applied);
            }
        }
        for ((stream, offset), applied) in wrong {
            violations.push(Violation::NotExactlyOnce {
                stream: stream.to_owned(),
                offset,
                applied,
            });
        }
    }

    /// Each message is dead-lettered at most once by a group.
    fn check_dead_letters(&self, violations: &mut Vec<Violation>) {
        for (group, offsets) in &self.dead_letters {
            let mut seen = BTreeSet::new();
            for &offset in offsets {
                if !seen.insert(offset) {
                    violations.push(Violation::DeadLetteredTwice {
                        group: group.clone(),
                        offset,
                    });
                }
            }
        }
    }

    /// Guarantees 1, 2 and 10: stored offsets are 1..=n without holes, and every
    /// acknowledged message is stored at its offset with its payload.
    fn check_dense(&self, violations: &mut Vec<Violation>) {
        for (stream, stored) in &self.stored {
            for (index, (offset, _)) in stored.iter().enumerate() {
                if *offset != index as u64 + 1 {
                    violations.push(Violation::NotDense {
                        stream: stream.clone(),
                        detail: format!("position {} holds offset {offset}", index + 1),
                    });
                    break;
                }
            }
        }
        for ack in &self.acks {
            let stored = self.stored.get(&ack.stream).and_then(|s| {
                let index = usize::try_from(ack.offset).ok()?.checked_sub(1)?;
                s.get(index)
            });
            if stored != Some(&(ack.offset, ack.payload.clone())) {
                violations.push(Violation::NotDense {
                    stream: ack.stream.clone(),
                    detail: format!(
                        "acknowledged {:?} at {} but the store has {stored:?}",
                        ack.payload, ack.offset
                    ),
                });
            }
        }
    }

    /// Per group, the offsets a recorded reset skipped: those after the committed offset
    /// stored before the reset's first write, up to the one it stored.
    fn skipped_by_resets(&self) -> HashMap<&str, Vec<(u64, u64)>> {
        let mut skipped: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for (group, writes) in self.writes_by_group() {
            let Some(resets) = self.resets.get(group) else {
                continue;
            };
            let mut seen = BTreeSet::new();
            for pair in writes.windows(2) {
                let (before, after) = (pair[0], pair[1]);
                if seen.insert(after.generation)
                    && resets.contains(&after.generation)
                    && after.committed > before.committed
                {
                    skipped
                        .entry(group)
                        .or_default()
                        .push((before.committed + 1, after.committed));
                }
            }
        }
        skipped
    }

    /// Guarantee 3: every acknowledged message reached every group of its stream, unless an
    /// operator's reset skipped it.
    fn check_delivered(&self, violations: &mut Vec<Violation>) {
        let skipped = self.skipped_by_resets();
        let mut delivered: HashMap<&str, BTreeSet<u64>> = HashMap::new();
        for d in &self.deliveries {
            delivered.entry(&d.group).or_default().insert(d.offset);
        }
        // A dead-lettered message was handled by its group, whether it was handed out or not.
        for (group, offsets) in &self.dead_letters {
            delivered.entry(group).or_default().extend(offsets);
        }
        for ack in &self.acks {
            for group in self.groups.get(&ack.stream).into_iter().flatten() {
                let reached = delivered
                    .get(group.as_str())
                    .is_some_and(|s| s.contains(&ack.offset));
                let reset_past = skipped.get(group.as_str()).is_some_and(|ranges| {
                    ranges
                        .iter()
                        .any(|(from, to)| (*from..=*to).contains(&ack.offset))
                });
                if !reached && !reset_past {
                    violations.push(Violation::NotDelivered {
                        group: group.clone(),
                        offset: ack.offset,
                    });
                }
            }
        }
    }

    /// Guarantee 2: within one claim, a consumer delivers consecutive offsets, in order.
    fn check_order(&self, violations: &mut Vec<Violation>) {
        let mut last: HashMap<(&str, u64), u64> = HashMap::new();
        for d in &self.deliveries {
            if let Some(previous) = last.insert((&d.consumer, d.generation), d.offset)
                && !self.follows(&d.group, previous, d.offset)
            {
                violations.push(Violation::OutOfOrder {
                    consumer: d.consumer.clone(),
                    previous,
                    next: d.offset,
                });
            }
        }
    }

    fn writes_by_group(&self) -> BTreeMap<&str, Vec<&GroupWrite>> {
        let mut by_group: BTreeMap<&str, Vec<&GroupWrite>> = BTreeMap::new();
        for w in &self.writes {
            by_group.entry(&w.group).or_default().push(w);
        }
        for writes in by_group.values_mut() {
            writes.sort_by_key(|w| w.revision);
        }
        by_group
    }

    /// Guarantees 7 and 4, on what the store accepted: in revision order the committed offset
    /// never goes down (except by the first write of a generation an operator's reset made),
    /// the generation never goes down, and each generation has a single owner.
    fn check_writes(&self, violations: &mut Vec<Violation>) {
        for (group, writes) in self.writes_by_group() {
            let mut owners: HashMap<u64, &str> = HashMap::new();
            let reset = self.resets.get(group);
            for pair in writes.windows(2) {
                let (before, after) = (pair[0], pair[1]);
                let by_reset = after.generation > before.generation
                    && reset.is_some_and(|r| r.contains(&after.generation));
                if after.committed < before.committed && !by_reset {
                    violations.push(Violation::CommittedDecreased {
                        group: group.to_owned(),
                        revision: after.revision,
                        from: before.committed,
                        to: after.committed,
                    });
                }
                if after.generation < before.generation {
                    violations.push(Violation::FencedWriteAccepted {
                        group: group.to_owned(),
                        detail: format!(
                            "revision {} was written by generation {} after generation {}",
                            after.revision, after.generation, before.generation
                        ),
                    });
                }
            }
            for w in &writes {
                let owner = owners.entry(w.generation).or_insert(&w.owner);
                if *owner != w.owner {
                    violations.push(Violation::FencedWriteAccepted {
                        group: group.to_owned(),
                        detail: format!(
                            "generation {} written by {} and by {}",
                            w.generation, owner, w.owner
                        ),
                    });
                }
            }
        }
    }

    /// Guarantee 3: a claim only delivers messages past the committed offset it resumed after,
    /// so a message is delivered twice only if a takeover came between its delivery and its
    /// commit.
    fn check_redelivery(&self, violations: &mut Vec<Violation>) {
        let by_group = self.writes_by_group();
        // Where each claim resumed: the committed offset of the first write of its generation.
        let mut resumed: HashMap<(&str, u64), u64> = HashMap::new();
        for (group, writes) in &by_group {
            for w in writes {
                resumed.entry((group, w.generation)).or_insert(w.committed);
            }
        }
        let mut started: BTreeSet<(&str, u64)> = BTreeSet::new();
        for d in &self.deliveries {
            let Some(&resumed_after) = resumed.get(&(d.group.as_str(), d.generation)) else {
                violations.push(Violation::UnknownClaim {
                    group: d.group.clone(),
                    generation: d.generation,
                });
                continue;
            };
            if d.offset <= resumed_after {
                violations.push(Violation::UnjustifiedRedelivery {
                    group: d.group.clone(),
                    offset: d.offset,
                    generation: d.generation,
                    resumed_after,
                });
            } else if started.insert((&d.consumer, d.generation))
                && !self.follows(&d.group, resumed_after, d.offset)
            {
                // A claim's first delivery is the message right after where it resumed (or
                // after the dead letters that follow it).
                violations.push(Violation::OutOfOrder {
                    consumer: d.consumer.clone(),
                    previous: resumed_after,
                    next: d.offset,
                });
            }
        }
    }

    /// Guarantees 6 and 7 against the store: within a claim the stored committed offset never
    /// passes what that claim delivered (or where it resumed), and every commit reported
    /// accepted is in the store, written by its claim.
    fn check_commits_match(&self, violations: &mut Vec<Violation>) {
        let mut delivered: HashMap<(&str, u64), u64> = HashMap::new();
        for d in &self.deliveries {
            let top = delivered.entry((&d.group, d.generation)).or_default();
            *top = (*top).max(d.offset);
        }
        for (group, writes) in self.writes_by_group() {
            let mut resumed: HashMap<u64, u64> = HashMap::new();
            for w in &writes {
                let start = *resumed.entry(w.generation).or_insert(w.committed);
                let reach = delivered.get(&(group, w.generation)).copied().unwrap_or(0);
                // A claim also moves past the messages it dead-letters, handed out or not.
                let reach = self.next_handed_out(group, start.max(reach)) - 1;
                if w.committed > reach {
                    violations.push(Violation::CommitMismatch {
                        group: group.to_owned(),
                        detail: format!(
                            "revision {} commits {} in generation {}, which delivered up to {reach} after resuming at {start}",
                            w.revision, w.committed, w.generation
                        ),
                    });
                }
            }
        }
        for c in self
            .commits
            .iter()
            .filter(|c| c.outcome == Outcome::Accepted)
        {
            let stored = self.writes.iter().any(|w| {
                w.group == c.group && w.generation == c.generation && w.committed >= c.offset
            });
            if !stored {
                violations.push(Violation::CommitMismatch {
                    group: c.group.clone(),
                    detail: format!(
                        "{} reported commit {} accepted in generation {}, the store never had it",
                        c.consumer, c.offset, c.generation
                    ),
                });
            }
        }
    }

    /// Guarantee 6, as the consumers saw it: once a consumer was told a claim is fenced, no
    /// commit of that claim is accepted.
    fn check_commits_after_fencing(&self, violations: &mut Vec<Violation>) {
        let mut fenced: BTreeSet<(&str, u64)> = BTreeSet::new();
        for c in &self.commits {
            let claim = (c.consumer.as_str(), c.generation);
            match c.outcome {
                Outcome::Fenced => {
                    fenced.insert(claim);
                }
                Outcome::Accepted if fenced.contains(&claim) => {
                    violations.push(Violation::FencedWriteAccepted {
                        group: c.group.clone(),
                        detail: format!(
                            "{} had a commit of {} accepted after it was fenced in generation {}",
                            c.consumer, c.offset, c.generation
                        ),
                    });
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(revision: u64, owner: &str, generation: u64, committed: u64) -> GroupWrite {
        GroupWrite {
            group: "g".into(),
            revision,
            owner: owner.into(),
            generation,
            active: true,
            committed,
        }
    }

    fn delivery(consumer: &str, generation: u64, offset: u64) -> Delivery {
        Delivery {
            consumer: consumer.into(),
            group: "g".into(),
            generation,
            offset,
        }
    }

    /// Three messages; `a` delivers 1..=3 and commits 1, crashes; `b` takes over after 1 and
    /// redelivers 2 and 3.
    fn valid() -> History {
        let mut h = History::default();
        for offset in 1..=3 {
            h.acks.push(Ack {
                stream: "s".into(),
                offset,
                payload: format!("p{offset}"),
            });
        }
        h.stored
            .insert("s".into(), (1..=3).map(|o| (o, format!("p{o}"))).collect());
        h.groups.insert("s".into(), vec!["g".into()]);
        h.deliveries.extend([
            delivery("a", 1, 1),
            delivery("a", 1, 2),
            delivery("a", 1, 3),
        ]);
        h.commits.push(Commit {
            consumer: "a".into(),
            group: "g".into(),
            generation: 1,
            offset: 1,
            outcome: Outcome::Accepted,
        });
        h.writes.extend([
            write(1, "a", 1, 0),
            write(2, "a", 1, 1),
            write(3, "b", 2, 1),
        ]);
        h.deliveries
            .extend([delivery("b", 2, 2), delivery("b", 2, 3)]);
        h.writes.push(write(4, "b", 2, 3));
        h
    }

    fn violations(h: &History) -> Vec<Violation> {
        h.check().err().unwrap_or_default()
    }

    #[test]
    fn a_valid_history_passes() {
        assert_eq!(valid().check(), Ok(()));
    }

    /// `b` has committed 3; an operator resets the group to 1 (generation 3, same owner); `b`
    /// delivers 2 and 3 again and commits them.
    fn with_a_reset() -> History {
        let mut h = valid();
        h.writes.push(write(5, "b", 3, 1));
        h.deliveries
            .extend([delivery("b", 3, 2), delivery("b", 3, 3)]);
        h.writes.push(write(6, "b", 3, 3));
        h
    }

    #[test]
    fn only_a_recorded_reset_moves_the_committed_offset_back() {
        let unrecorded = with_a_reset();
        assert!(
            violations(&unrecorded)
                .iter()
                .any(|v| matches!(v, Violation::CommittedDecreased { to: 1, .. })),
            "{:?}",
            violations(&unrecorded)
        );
        let mut recorded = with_a_reset();
        recorded.resets.insert("g".into(), BTreeSet::from([3]));
        assert_eq!(recorded.check(), Ok(()));

        // A commit of the claim before the reset, accepted after it: fenced, never accepted.
        recorded.writes.push(write(7, "b", 2, 3));
        assert!(
            violations(&recorded)
                .iter()
                .any(|v| matches!(v, Violation::FencedWriteAccepted { .. })),
            "{:?}",
            violations(&recorded)
        );
        // A claim after a reset starts right after the reset's position.
        let mut skipped = with_a_reset();
        skipped.resets.insert("g".into(), BTreeSet::from([3]));
        skipped
            .deliveries
            .retain(|d| !(d.generation == 3 && d.offset == 2));
        assert!(
            violations(&skipped)
                .iter()
                .any(|v| matches!(v, Violation::OutOfOrder { .. })),
            "{:?}",
            violations(&skipped)
        );
    }

    /// `b` has committed 1 (of five messages); an operator resets the group forward to 3
    /// (generation 3): 2 and 3 are never delivered; `b` delivers 4 and 5.
    fn with_a_forward_reset() -> History {
        let mut h = History::default();
        for offset in 1..=5 {
            h.acks.push(Ack {
                stream: "s".into(),
                offset,
                payload: format!("p{offset}"),
            });
        }
        h.stored
            .insert("s".into(), (1..=5).map(|o| (o, format!("p{o}"))).collect());
        h.groups.insert("s".into(), vec!["g".into()]);
        h.deliveries.push(delivery("b", 2, 1));
        h.writes.extend([write(1, "b", 2, 0), write(2, "b", 2, 1)]);
        h.writes.push(write(3, "b", 3, 3));
        h.deliveries
            .extend([delivery("b", 3, 4), delivery("b", 3, 5)]);
        h.writes.push(write(4, "b", 3, 5));
        h
    }

    #[test]
    fn only_a_recorded_reset_skips_messages() {
        let unrecorded = with_a_forward_reset();
        assert_eq!(
            violations(&unrecorded),
            [
                Violation::NotDelivered {
                    group: "g".into(),
                    offset: 2
                },
                Violation::NotDelivered {
                    group: "g".into(),
                    offset: 3
                }
            ]
        );
        let mut recorded = with_a_forward_reset();
        recorded.resets.insert("g".into(), BTreeSet::from([3]));
        assert_eq!(recorded.check(), Ok(()));

        // A message past the reset's position still has to arrive.
        recorded.deliveries.retain(|d| d.offset != 5);
        recorded.writes.retain(|w| w.revision != 4);
        assert_eq!(
            violations(&recorded),
            [Violation::NotDelivered {
                group: "g".into(),
                offset: 5
            }]
        );
    }

    /// `b` resumes after 1, dead-letters 2 without handing it out (a crash suspect), delivers
    /// 3 and commits it.
    fn with_a_dead_letter() -> History {
        let mut h = valid();
        h.deliveries.retain(|d| d.consumer != "b");
        h.writes.retain(|w| w.revision != 4);
        h.dead_letters.insert("g".into(), vec![2]);
        h.writes.push(write(4, "b", 2, 2));
        h.deliveries.push(delivery("b", 2, 3));
        h.writes.push(write(5, "b", 2, 3));
        h
    }

    #[test]
    fn a_dead_letter_counts_as_handled_once() {
        assert_eq!(with_a_dead_letter().check(), Ok(()));
        let mut twice = with_a_dead_letter();
        twice.dead_letters.insert("g".into(), vec![2, 2]);
        assert_eq!(
            violations(&twice),
            [Violation::DeadLetteredTwice {
                group: "g".into(),
                offset: 2
            }]
        );
        let mut neither = with_a_dead_letter();
        neither.dead_letters.clear();
        neither.deliveries.retain(|d| d.offset != 2);
        assert!(violations(&neither).contains(&Violation::NotDelivered {
            group: "g".into(),
            offset: 2
        }));
    }

    #[test]
    fn effects_applied_other_than_once_are_caught() {
        let mut h = valid();
        h.effects = Some(BTreeMap::from([("s".to_owned(), vec![1, 2, 3])]));
        assert_eq!(h.check(), Ok(()));
        h.effects = Some(BTreeMap::from([("s".to_owned(), vec![1, 2, 2, 4, 4])]));
        let found = violations(&h);
        for (offset, applied) in [(2, 2), (3, 0), (4, 2)] {
            assert!(
                found.contains(&Violation::NotExactlyOnce {
                    stream: "s".into(),
                    offset,
                    applied
                }),
                "{offset}: {found:?}"
            );
        }
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn undelivered_message_is_caught() {
        let mut h = valid();
        h.deliveries.retain(|d| d.offset != 3);
        assert!(violations(&h).contains(&Violation::NotDelivered {
            group: "g".into(),
            offset: 3
        }));
    }

    #[test]
    fn out_of_order_or_skipping_delivery_is_caught() {
        let mut h = valid();
        h.deliveries.swap(1, 2);
        assert!(matches!(
            violations(&h)[..],
            [Violation::OutOfOrder { .. }, ..]
        ));
        let mut h = valid();
        h.deliveries.remove(1);
        assert!(violations(&h).iter().any(|v| matches!(
            v,
            Violation::OutOfOrder {
                previous: 1,
                next: 3,
                ..
            }
        )));
    }

    #[test]
    fn decreasing_commit_is_caught() {
        let mut h = valid();
        h.writes.push(write(5, "b", 2, 2));
        assert!(
            violations(&h)
                .iter()
                .any(|v| matches!(v, Violation::CommittedDecreased { from: 3, to: 2, .. }))
        );
    }

    #[test]
    fn write_from_a_fenced_generation_is_caught() {
        let mut h = valid();
        // The zombie `a` (generation 1) got a commit in after `b` took over.
        h.writes.push(write(5, "a", 1, 3));
        assert!(
            violations(&h)
                .iter()
                .any(|v| matches!(v, Violation::FencedWriteAccepted { .. }))
        );
    }

    #[test]
    fn generation_with_two_owners_is_caught() {
        let mut h = valid();
        h.writes.push(write(5, "c", 2, 3));
        assert!(
            violations(&h)
                .iter()
                .any(|v| matches!(v, Violation::FencedWriteAccepted { .. }))
        );
    }

    #[test]
    fn accepted_commit_after_being_fenced_is_caught() {
        let mut h = valid();
        for outcome in [Outcome::Fenced, Outcome::Accepted] {
            h.commits.push(Commit {
                consumer: "a".into(),
                group: "g".into(),
                generation: 1,
                offset: 3,
                outcome,
            });
        }
        assert!(
            violations(&h)
                .iter()
                .any(|v| matches!(v, Violation::FencedWriteAccepted { .. }))
        );
    }

    #[test]
    fn redelivery_of_a_committed_message_is_caught() {
        let mut h = valid();
        // `b` resumed after 1 but delivered 1 again.
        h.deliveries.insert(3, delivery("b", 2, 1));
        assert!(violations(&h).iter().any(|v| matches!(
            v,
            Violation::UnjustifiedRedelivery {
                offset: 1,
                generation: 2,
                resumed_after: 1,
                ..
            }
        )));
    }

    #[test]
    fn delivery_under_an_unknown_claim_is_caught() {
        let mut h = valid();
        h.deliveries.push(delivery("z", 7, 3));
        assert!(violations(&h).contains(&Violation::UnknownClaim {
            group: "g".into(),
            generation: 7
        }));
    }

    #[test]
    fn commit_past_what_the_claim_delivered_is_caught() {
        let mut h = valid();
        // `a` delivered up to 3 in generation 1 but a write of generation 1 claims 5.
        h.writes.insert(2, write(3, "a", 1, 5));
        for (i, w) in h.writes.iter_mut().enumerate() {
            w.revision = i as u64 + 1;
        }
        let found = violations(&h);
        assert!(
            found
                .iter()
                .any(|v| matches!(v, Violation::CommitMismatch { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn accepted_commit_missing_from_the_store_is_caught() {
        let mut h = valid();
        h.commits.push(Commit {
            consumer: "b".into(),
            group: "g".into(),
            generation: 2,
            offset: 9,
            outcome: Outcome::Accepted,
        });
        assert!(
            violations(&h)
                .iter()
                .any(|v| matches!(v, Violation::CommitMismatch { .. }))
        );
    }

    #[test]
    fn hole_or_lost_acknowledged_message_is_caught() {
        let mut h = valid();
        h.stored
            .insert("s".into(), vec![(1, "p1".into()), (3, "p3".into())]);
        let found = violations(&h);
        assert!(
            found
                .iter()
                .any(|v| matches!(v, Violation::NotDense { .. })),
            "{found:?}"
        );
        let mut h = valid();
        h.stored.insert(
            "s".into(),
            vec![(1, "p1".into()), (2, "other".into()), (3, "p3".into())],
        );
        assert!(
            violations(&h)
                .iter()
                .any(|v| matches!(v, Violation::NotDense { .. }))
        );
    }
}
