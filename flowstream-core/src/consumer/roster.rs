//! The roster of a group over partitions: which members the group has, and which partition
//! each of them should own.
//!
//! One record per group (`roster/<stream>/<group>`), written only by compare-and-swap, and
//! only when membership changes: a member joins, leaves gracefully, or is evicted after
//! showing no sign of life while its partitions had messages pending. Every write recomputes
//! the assignment with [`assign`], so the assignment always matches the members the record
//! lists, and two different assignments never hold at once (the compare-and-swap orders every
//! change). Ownership itself stays in each partition's own group record (see
//! [`Membership`](super::membership::Membership)): the roster says who *should* own a
//! partition, the partition record who *does*, fenced by its generation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::driver::{Driver, DriverError, Expected, Record, Revision};
use crate::error::Error;
use std::sync::Arc;

/// The roster as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct StoredRoster {
    /// Member id -> the id of the consumer instance that holds it now. A member restarting
    /// with the same id replaces its old instance here and nothing else changes.
    pub(crate) members: BTreeMap<String, String>,
    /// Partition -> member id.
    pub(crate) assignment: Vec<String>,
    /// Members waiting to be admitted (member id -> instance id). A member joining a group
    /// that has members waits `join_delay` here, given nothing, and the first of the waiting
    /// members whose delay ends admits them all in one reassignment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) joining: BTreeMap<String, String>,
}

impl StoredRoster {
    /// Whether `instance` is the current instance of some member.
    pub(crate) fn has_instance(&self, instance: &str) -> bool {
        self.members.values().any(|i| i == instance)
    }

    /// The member whose current instance is `instance`.
    fn member_of(&self, instance: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(_, i)| *i == instance)
            .map(|(member, _)| member.as_str())
    }
}

/// Removes `member` from `map` if `instance` holds it there; whether it did.
fn remove_held(map: &mut BTreeMap<String, String>, member: &str, instance: &str) -> bool {
    if map.get(member).is_some_and(|held| held == instance) {
        map.remove(member);
        true
    } else {
        false
    }
}

/// Record key of a group's roster.
pub(crate) fn roster_key(stream: &str, group: &str) -> String {
    format!("roster/{stream}/{group}")
}

/// A balanced, sticky assignment of `partitions` partitions to `members` (none when there are
/// no members), given the `previous` one.
///
/// - Balanced: every member gets `P / M` or `P / M + 1` partitions.
/// - Sticky: a member keeps as many of the partitions it had as its share allows; only
///   partitions that must move do (those of departed members, and a surplus over the share).
/// - Deterministic: every process computes the same result from the same input.
pub(crate) fn assign(partitions: u32, members: &[&str], previous: &[String]) -> Vec<String> {
    let count = partitions as usize;
    if members.is_empty() {
        return vec![String::new(); count];
    }
    let mut held: BTreeMap<&str, Vec<usize>> = members.iter().map(|m| (*m, Vec::new())).collect();
    for (partition, member) in previous.iter().enumerate().take(count) {
        if let Some(list) = held.get_mut(member.as_str()) {
            list.push(partition);
        }
    }
    // Who gets the larger share: those holding the most already (fewer moves), then by id.
    let mut order: Vec<&str> = members.to_vec();
    order.sort_by(|a, b| held[b].len().cmp(&held[a].len()).then(a.cmp(b)));
    let base = count / members.len();
    let larger = count % members.len();
    let quota: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(rank, m)| (*m, base + usize::from(rank < larger)))
        .collect();
    let mut result = vec![String::new(); count];
    let mut have: BTreeMap<&str, usize> = BTreeMap::new();
    for (member, list) in &held {
        for &partition in list.iter().take(quota[member]) {
            result[partition] = (*member).to_owned();
            *have.entry(member).or_default() += 1;
        }
    }
    for slot in result.iter_mut().filter(|slot| slot.is_empty()) {
        // The member furthest below its share, in the same order as the shares.
        let taker = order
            .iter()
            .copied()
            .max_by(|a, b| {
                let gap = |m: &str| quota[m] - have.get(m).copied().unwrap_or(0);
                gap(a).cmp(&gap(b)).then(b.cmp(a))
            })
            .unwrap_or_default();
        *slot = taker.to_owned();
        *have.entry(taker).or_default() += 1;
    }
    result
}

/// Attempts of one roster change before giving up with a retryable error: conflicts come from
/// other members changing the roster at the same moment, each of which takes one round.
const MAX_ROSTER_ATTEMPTS: usize = 32;

/// One member's view of its group's roster, shared by its lanes.
#[derive(Debug)]
pub(crate) struct Roster {
    driver: Arc<dyn Driver>,
    pub(crate) key: String,
    group: String,
    partitions: u32,
    /// This member's id (stable across restarts when the application sets one).
    pub(crate) member: String,
    /// This consumer instance's id: the owner named in the partitions' group records.
    pub(crate) instance: String,
    view: Mutex<Option<(StoredRoster, Revision)>>,
    /// Bumped when the assignment seen changes, for the consumer's `wait`.
    changed: watch::Sender<u64>,
    /// Set once this member has left (shut down): it must not join again.
    left: AtomicBool,
}

impl Roster {
    pub(crate) fn new(
        driver: Arc<dyn Driver>,
        stream: &str,
        group: &str,
        partitions: u32,
        member: String,
        instance: String,
    ) -> Self {
        Roster {
            driver,
            key: roster_key(stream, group),
            group: group.to_owned(),
            partitions,
            member,
            instance,
            view: Mutex::new(None),
            changed: watch::channel(0).0,
            left: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<(StoredRoster, Revision)>> {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The roster as last seen.
    pub(crate) fn current(&self) -> Option<StoredRoster> {
        self.lock().as_ref().map(|(roster, _)| roster.clone())
    }

    /// Whether the roster as last seen gives `partition` to this member, held by this
    /// instance (an old instance of a member id that restarted is given nothing).
    pub(crate) fn assigned_to_me(&self, partition: u32) -> bool {
        self.lock().as_ref().is_some_and(|(roster, _)| {
            roster.members.get(&self.member) == Some(&self.instance)
                && roster
                    .assignment
                    .get(partition as usize)
                    .is_some_and(|m| *m == self.member)
        })
    }

    /// The partitions the roster as last seen gives this member.
    pub(crate) fn my_partitions(&self) -> Vec<u32> {
        let view = self.lock();
        let Some((roster, _)) = view.as_ref() else {
            return Vec::new();
        };
        if roster.members.get(&self.member) != Some(&self.instance) {
            return Vec::new();
        }
        (0..self.partitions)
            .filter(|p| roster.assignment.get(*p as usize) == Some(&self.member))
            .collect()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Takes in a roster read or written; revisions only grow, so an older one is ignored.
    fn observe(&self, roster: StoredRoster, revision: Revision) {
        let mut view = self.lock();
        if view.as_ref().is_some_and(|(_, seen)| *seen >= revision) {
            return;
        }
        let moved = view
            .as_ref()
            .is_none_or(|(old, _)| old.assignment != roster.assignment);
        *view = Some((roster, revision));
        drop(view);
        if moved {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn decode(&self, record: Record) -> Result<(StoredRoster, Revision), Error> {
        let roster: StoredRoster = serde_json::from_value(record.value).map_err(|e| {
            DriverError::failed(format!("record {:?} is not a valid roster", self.key)).caused_by(e)
        })?;
        Ok((roster, record.revision))
    }

    /// Reads the roster from storage.
    pub(crate) async fn refresh(&self) -> Result<Option<StoredRoster>, Error> {
        let Some(record) = self.driver.get_record(&self.key).await? else {
            return Ok(None);
        };
        let (roster, revision) = self.decode(record)?;
        self.observe(roster.clone(), revision);
        Ok(Some(roster))
    }

    /// Applies `change` to the stored roster by compare-and-swap until it sticks, then
    /// recomputes the assignment. `change` returns false when nothing needs writing; the
    /// result says whether something was written.
    async fn update(
        &self,
        what: &str,
        change: impl Fn(&mut StoredRoster) -> bool,
    ) -> Result<bool, Error> {
        let mut current = match self.driver.get_record(&self.key).await? {
            Some(record) => Some(self.decode(record)?),
            None => None,
        };
        for _ in 0..MAX_ROSTER_ATTEMPTS {
            let (mut roster, expected) = match &current {
                Some((roster, revision)) => (roster.clone(), Expected::Revision(*revision)),
                None => (StoredRoster::default(), Expected::Absent),
            };
            if let Some((stored, revision)) = &current {
                self.observe(stored.clone(), *revision);
            }
            if !change(&mut roster) {
                return Ok(false);
            }
            let members: Vec<&str> = roster.members.keys().map(String::as_str).collect();
            roster.assignment = assign(self.partitions, &members, &roster.assignment);
            let value = serde_json::to_value(&roster)
                .map_err(|e| DriverError::failed("encoding the roster").caused_by(e))?;
            match self
                .driver
                .put_record(&self.key, value, expected, true)
                .await
            {
                Ok(revision) => {
                    tracing::info!(
                        group = %self.group,
                        member = %self.member,
                        members = ?roster.members.keys().collect::<Vec<_>>(),
                        joining = ?roster.joining.keys().collect::<Vec<_>>(),
                        "{what}"
                    );
                    self.observe(roster, revision);
                    return Ok(true);
                }
                Err(DriverError::Conflict { current: now, .. }) => {
                    current = match now {
                        Some(record) => Some(self.decode(record)?),
                        None => None,
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Storage(DriverError::unavailable(format!(
            "group {:?}: the roster kept changing under {MAX_ROSTER_ATTEMPTS} attempts",
            self.group
        ))))
    }

    /// Puts this instance in the roster under its member id; returns whether it is a member
    /// now (rather than waiting to be admitted).
    ///
    /// - A member already listed (a restart with the same id) only has its instance replaced:
    ///   the assignment stays.
    /// - With `debounce`, a newcomer to a group that has members waits among the joining,
    ///   given nothing, until [`admit`](Roster::admit) (see [`StoredRoster::joining`]).
    /// - Otherwise (the group's first member, or no debounce) it becomes a member at once.
    pub(crate) async fn join(&self, debounce: bool) -> Result<bool, Error> {
        let (member, instance) = (self.member.clone(), self.instance.clone());
        self.update("member joined", |roster| {
            match roster.members.get(&member) {
                Some(old) if *old == instance => return false,
                Some(old) => {
                    tracing::info!(
                        member = %member,
                        previous_instance = %old,
                        "member rejoined with the same id; its partitions stay with it"
                    );
                }
                None if debounce && !roster.members.is_empty() => {
                    return roster.joining.insert(member.clone(), instance.clone())
                        != Some(instance.clone());
                }
                None => {}
            }
            roster.joining.remove(&member);
            roster.members.insert(member.clone(), instance.clone());
            true
        })
        .await?;
        Ok(self
            .current()
            .is_some_and(|r| r.members.get(&self.member) == Some(&self.instance)))
    }

    /// Admits every member waiting to join, in one reassignment.
    pub(crate) async fn admit(&self) -> Result<(), Error> {
        self.update("joining members admitted", |roster| {
            if roster.joining.is_empty() {
                return false;
            }
            let joining = std::mem::take(&mut roster.joining);
            roster.members.extend(joining);
            true
        })
        .await
        .map(drop)
    }

    /// Joins again if this member was evicted while alive; see [`Roster::evicted`].
    pub(crate) async fn rejoin_if_evicted(&self) -> Result<(), Error> {
        if self.evicted() {
            tracing::warn!(
                group = %self.group,
                member = %self.member,
                "this member was evicted from its group (it was silent for takeover_after \
                 while messages waited); joining again"
            );
            self.join(false).await?;
        }
        Ok(())
    }

    /// Whether this member was evicted while alive (the roster as last seen does not list its
    /// id): it joins again, as a Kafka member that was fenced out of its group does. Not after
    /// it left, and not when its id is held by another instance (a restart under the same id:
    /// this one is the old instance, and must not take the id back).
    pub(crate) fn evicted(&self) -> bool {
        !self.left.load(Ordering::Relaxed)
            && self.current().is_some_and(|roster| {
                !roster.members.contains_key(&self.member)
                    && !roster.joining.contains_key(&self.member)
            })
    }

    /// Takes this member out of the roster (graceful shutdown), if this instance still holds
    /// it: its partitions go to the others at once.
    pub(crate) async fn leave(&self) -> Result<(), Error> {
        self.left.store(true, Ordering::Relaxed);
        let (member, instance) = (self.member.clone(), self.instance.clone());
        self.update("member left", |roster| {
            remove_held(&mut roster.joining, &member, &instance)
                || remove_held(&mut roster.members, &member, &instance)
        })
        .await
        .map(drop)
    }

    /// Takes the member whose instance is `instance` out of the roster: it showed no sign of
    /// life while its partitions had messages pending. Nothing happens if that instance is no
    /// longer listed (it left, was evicted, or restarted), or if this member is not listed
    /// itself. Returns whether the roster changed.
    pub(crate) async fn evict(&self, instance: &str, reason: &str) -> Result<bool, Error> {
        let Some(member) = self
            .current()
            .and_then(|r| r.member_of(instance).map(str::to_owned))
        else {
            return Ok(false);
        };
        let silent = instance.to_owned();
        let (me, my_instance) = (self.member.clone(), self.instance.clone());
        self.update("member evicted", |roster| {
            // Only a member evicts: one that was itself evicted meanwhile (both silent through
            // an outage, say) must not empty the roster in turn; it joins again instead.
            roster.members.get(&me) == Some(&my_instance)
                && remove_held(&mut roster.members, &member, &silent)
        })
        .await
        .inspect(|&evicted| {
            if evicted {
                tracing::warn!(group = %self.group, evicted = %member, instance, reason, "evicted a member");
            }
        })
    }

    /// The instance of the member the roster as last seen gives `partition` to.
    pub(crate) fn assignee_instance(&self, partition: u32) -> Option<String> {
        let view = self.lock();
        let (roster, _) = view.as_ref()?;
        let member = roster.assignment.get(partition as usize)?;
        roster.members.get(member).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(assignment: &[String]) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for member in assignment {
            *out.entry(member.as_str()).or_default() += 1;
        }
        out
    }

    fn balanced(assignment: &[String], members: &[&str]) {
        let counts = counts(assignment);
        assert_eq!(
            counts.len(),
            members.len(),
            "every member gets partitions: {assignment:?}"
        );
        let (min, max) = (counts.values().min(), counts.values().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{counts:?}");
    }

    #[test]
    fn assignments_are_balanced_and_complete() {
        for partitions in [1u32, 2, 7, 8, 12, 64] {
            for members in 1..=5usize {
                let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let got = assign(partitions, &refs, &[]);
                assert_eq!(got.len(), partitions as usize);
                if members <= partitions as usize {
                    balanced(&got, &refs);
                } else {
                    assert!(got.iter().all(|m| refs.contains(&m.as_str())));
                }
            }
        }
    }

    #[test]
    fn a_join_moves_only_what_it_must() {
        let two = assign(8, &["a", "b"], &[]);
        let three = assign(8, &["a", "b", "c"], &two);
        balanced(&three, &["a", "b", "c"]);
        let moved = two.iter().zip(&three).filter(|(x, y)| x != y).count();
        // c's share is 2 (8 = 3 + 3 + 2): exactly those two move, both to c.
        assert_eq!(moved, 2, "{two:?} -> {three:?}");
        assert!(two.iter().zip(&three).all(|(x, y)| x == y || y == "c"));
    }

    #[test]
    fn a_leave_moves_only_the_leavers_partitions() {
        let three = assign(12, &["a", "b", "c"], &[]);
        let two = assign(12, &["a", "c"], &three);
        balanced(&two, &["a", "c"]);
        for (before, after) in three.iter().zip(&two) {
            if before != "b" {
                assert_eq!(before, after, "{three:?} -> {two:?}");
            }
        }
    }

    #[test]
    fn the_same_input_gives_the_same_assignment() {
        let previous = assign(12, &["a", "b", "c"], &[]);
        let one = assign(12, &["a", "c", "d"], &previous);
        let other = assign(12, &["a", "c", "d"], &previous);
        assert_eq!(one, other);
        balanced(&one, &["a", "c", "d"]);
    }

    #[test]
    fn no_members_no_owners() {
        assert!(assign(4, &[], &[]).iter().all(String::is_empty));
    }
}
