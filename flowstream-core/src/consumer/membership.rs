//! A consumer's membership in its group: the role it holds, and every write it makes to the
//! group record.
//!
//! All writes are compare-and-swap on the revision this consumer last saw (guarantee 4). They
//! are serialised per consumer by `writes`, so a conflict always means either another consumer
//! wrote, or one of our own writes was applied but its reply was lost (guarantee 6).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::time::Instant;

use super::builder::Settings;
use super::roster::Roster;
use super::state::{StoredGroup, StoredRetry, decode, group_key};
use crate::driver::{Batch, Driver, DriverError, Expected, NewMessage, Record, Revision};
use crate::error::Error;

/// What this consumer may do right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Standby,
    /// Active in `generation`; delivery starts right after `resume_after`, the committed offset
    /// at the moment this consumer became active.
    Active {
        generation: u64,
        resume_after: u64,
    },
}

/// The last group state this consumer saw, and when it last wrote.
#[derive(Debug)]
struct View {
    state: Option<(StoredGroup, Revision)>,
    last_write: Instant,
}

/// Attempts of one compare-and-swap before giving up with a retryable error. Conflicts while
/// we stay owner only come from our own lost replies, so more than a couple means something
/// else is wrong.
const MAX_CAS_ATTEMPTS: usize = 5;

/// A consumer's membership, shared by its handle and its background task.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) settings: Settings,
    pub(crate) id: String,
    pub(crate) key: String,
    /// For a member of a group over partitions: the group's roster and the partition this
    /// record is for. The roster decides which member may claim the partition.
    pub(crate) lane: Option<(Arc<Roster>, u32)>,
    view: Mutex<View>,
    writes: tokio::sync::Mutex<()>,
    role: watch::Sender<Role>,
    /// The record this consumer had seen is gone: its stream (or group) was deleted. Nothing
    /// more is claimed, delivered or committed.
    deleted: AtomicBool,
}

impl Membership {
    pub(crate) fn new(
        driver: Arc<dyn Driver>,
        settings: Settings,
        id: String,
        lane: Option<(Arc<Roster>, u32)>,
    ) -> Self {
        let key = group_key(&settings.stream, &settings.group);
        Membership {
            driver,
            settings,
            id,
            key,
            lane,
            view: Mutex::new(View {
                state: None,
                last_write: Instant::now(),
            }),
            writes: tokio::sync::Mutex::new(()),
            role: watch::channel(Role::Standby).0,
            deleted: AtomicBool::new(false),
        }
    }

    /// Whether this consumer may claim the record as it is (`None`: absent). Alone, a
    /// consumer claims an absent or released record (wave 1). In a group over partitions it
    /// claims only a partition the roster gives its member, and then also one whose owner is
    /// no longer in the roster (it left or was evicted, or this member restarted). The roster
    /// must have been read *after* `state`: an owner joins the roster before it claims, so a
    /// roster read after the claim lists it.
    pub(crate) fn may_claim(&self, state: Option<&StoredGroup>) -> bool {
        match (&self.lane, state) {
            (None, None) => true,
            (None, Some(state)) => !state.active,
            (Some((roster, partition)), state) => {
                roster.assigned_to_me(*partition)
                    && state.is_none_or(|s| !s.active || !roster_lists(roster, &s.owner))
            }
        }
    }

    /// Whether this consumer owns the record while the roster gives its partition to another
    /// member: it must hand it over.
    pub(crate) fn revoked(&self) -> bool {
        self.lane
            .as_ref()
            .is_some_and(|(roster, partition)| !roster.assigned_to_me(*partition))
    }

    pub(crate) fn role(&self) -> Role {
        *self.role.borrow()
    }

    pub(crate) fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    pub(crate) fn last_write(&self) -> Instant {
        self.lock_view().last_write
    }

    /// The last committed offset this consumer saw.
    pub(crate) fn committed(&self) -> Option<u64> {
        self.lock_view()
            .state
            .as_ref()
            .map(|(state, _)| state.committed)
    }

    /// The group record as this consumer last saw it.
    pub(crate) fn seen(&self) -> Option<StoredGroup> {
        self.lock_view()
            .state
            .as_ref()
            .map(|(state, _)| state.clone())
    }

    /// The nacked message next to deliver, as this consumer last saw the record.
    pub(crate) fn pending_retry(&self) -> Option<StoredRetry> {
        self.lock_view()
            .state
            .as_ref()
            .and_then(|(state, _)| state.pending_retry())
    }

    fn lock_view(&self) -> MutexGuard<'_, View> {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a state read from (or written to) storage and derives our role from it.
    pub(crate) fn observe(&self, state: &StoredGroup, revision: Revision, own_write: bool) {
        {
            let mut view = self.lock_view();
            // Revisions only grow: a read that started before a newer write we already know
            // of (ours, or one seen on a conflict) must not roll the view or the role back.
            if view
                .state
                .as_ref()
                .is_some_and(|(_, seen)| *seen > revision)
            {
                return;
            }
            // Generations only grow while a record lives (claims and resets add one). A newer
            // record with a lower one was made again after a delete this consumer missed (its
            // stream deleted, then a reset or another consumer created the group anew): what
            // it was delivered belongs to the old stream, and claiming the new record could
            // hand it a generation it already held, under which those commits would pass.
            if view
                .state
                .as_ref()
                .is_some_and(|(seen, _)| state.generation < seen.generation)
            {
                drop(view);
                self.forget();
                return;
            }
            view.state = Some((state.clone(), revision));
            if own_write {
                view.last_write = Instant::now();
            }
        }
        let owned = state.owner == self.id && state.active;
        self.role.send_if_modified(|role| match (*role, owned) {
            (Role::Active { generation, .. }, true) if generation == state.generation => false,
            (_, true) => {
                *role = Role::Active {
                    generation: state.generation,
                    resume_after: state.committed,
                };
                true
            }
            (Role::Active { .. }, false) if state.owner == self.id => {
                *role = Role::Standby;
                true
            }
            (Role::Active { generation, .. }, false) => {
                tracing::warn!(
                    group = %self.settings.group,
                    stream = %self.settings.stream,
                    consumer = %self.id,
                    generation,
                    new_owner = %state.owner,
                    new_generation = state.generation,
                    "lost the group to another consumer; now standby"
                );
                *role = Role::Standby;
                true
            }
            (Role::Standby, false) => false,
        });
    }

    /// Reads the group state from storage.
    pub(crate) async fn read_state(&self) -> Result<Option<(StoredGroup, Revision)>, Error> {
        match self.driver.get_record(&self.key).await? {
            None => {
                self.forget();
                Ok(None)
            }
            Some(record) => Ok(Some(decode(&self.key, record)?)),
        }
    }

    /// The record is gone (or was made again: see [`Membership::observe`]). If this
    /// consumer had seen it, its stream was deleted
    /// ([`Admin::delete_stream`](crate::Admin::delete_stream)): the consumer stops, rather than
    /// create the group again and read a new stream under the old name from where the old
    /// one was.
    fn forget(&self) {
        let had_seen = self.lock_view().state.take().is_some();
        if had_seen && !self.deleted.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                group = %self.settings.group,
                stream = %self.settings.stream,
                consumer = %self.id,
                "the group was deleted while this consumer ran; it stops"
            );
        }
        self.demote();
    }

    /// Whether the group record this consumer had seen was deleted.
    pub(crate) fn deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// [`Error::GroupDeleted`] if the group was deleted under this consumer.
    pub(crate) fn check_deleted(&self) -> Result<(), Error> {
        if self.deleted() {
            return Err(Error::GroupDeleted {
                stream: crate::names::split_log_name(&self.settings.stream)
                    .0
                    .to_owned(),
                group: self.settings.group.clone(),
            });
        }
        Ok(())
    }

    async fn write(
        &self,
        state: &StoredGroup,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError> {
        let value = encode(state)?;
        self.driver
            .put_record(&self.key, value, expected, notify)
            .await
    }

    /// Writes the group record and appends `messages` in one transaction. With no messages
    /// it is a plain record write, unless `durable`: then it goes through a batch, which no
    /// driver defers (redb's `RecordDurability::Deferred` defers plain record writes).
    async fn write_with(
        &self,
        state: &StoredGroup,
        expected: Expected,
        notify: bool,
        messages: &[NewMessage],
        durable: bool,
    ) -> Result<Revision, DriverError> {
        if messages.is_empty() && !durable {
            return self.write(state, expected, notify).await;
        }
        let value = encode(state)?;
        let batch = Batch {
            messages: messages.to_vec(),
            records: Vec::new(),
        }
        .put_record(self.key.clone(), value, expected, notify);
        let applied = self.driver.apply(batch).await?;
        applied
            .revisions
            .first()
            .copied()
            .ok_or_else(|| DriverError::failed("a batch with a record returned no revision"))
    }

    /// Creates the group with this consumer as its first owner. `Ok(false)`: another consumer
    /// created it first.
    pub(crate) async fn create_group(&self, committed: u64) -> Result<bool, Error> {
        let _serial = self.writes.lock().await;
        self.check_deleted()?;
        let state = StoredGroup {
            owner: self.id.clone(),
            generation: 1,
            active: true,
            committed,
            retry: None,
            probe_through: None,
            probe: None,
            suspect: None,
            written_micros: None,
        };
        match self.write(&state, Expected::Absent, true).await {
            Ok(revision) => {
                tracing::info!(
                    group = %self.settings.group,
                    stream = %self.settings.stream,
                    consumer = %self.id,
                    committed,
                    "created group; active"
                );
                self.observe(&state, revision, true);
                Ok(true)
            }
            Err(DriverError::Conflict { current, .. }) => {
                self.observe_current(current)?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes the group over from `current` (read at `revision`): new generation, same committed
    /// offset. Notifies, so the old owner learns at once that it is out. `Ok(false)`: the state
    /// changed in between; the caller re-reads.
    pub(crate) async fn take_over(
        &self,
        current: &StoredGroup,
        revision: Revision,
        reason: &'static str,
    ) -> Result<bool, Error> {
        let _serial = self.writes.lock().await;
        self.check_deleted()?;
        // Counting crashes needs the window the crashed owner may have delivered: up to the
        // head now. Only read when someone counts, and only for an owner that never released.
        let head = if current.active && self.settings.max_deliveries.is_some() {
            Some(self.driver.head(&self.settings.stream).await?)
        } else {
            None
        };
        let state = current.taken_over_by(self.id.clone(), head);
        match self.write(&state, Expected::Revision(revision), true).await {
            Ok(new_revision) => {
                tracing::info!(
                    group = %self.settings.group,
                    stream = %self.settings.stream,
                    consumer = %self.id,
                    previous_owner = %current.owner,
                    generation = state.generation,
                    committed = state.committed,
                    reason,
                    "took over group"
                );
                crate::metrics::took_over(
                    crate::names::split_log_name(&self.settings.stream).0,
                    &self.settings.group,
                    reason,
                );
                self.observe(&state, new_revision, true);
                Ok(true)
            }
            Err(DriverError::Conflict { current, .. }) => {
                self.observe_current(current)?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes in the record a lost compare-and-swap returned; `None` if the record is gone.
    fn observe_current(
        &self,
        current: Option<Record>,
    ) -> Result<Option<(StoredGroup, Revision)>, Error> {
        let Some(record) = current else {
            self.forget();
            return Ok(None);
        };
        let (state, revision) = decode(&self.key, record)?;
        self.observe(&state, revision, false);
        Ok(Some((state, revision)))
    }

    /// Writes the group state as its owner in `generation`, applying `change` to the latest
    /// state we know. `change` returns false when no write is needed.
    ///
    /// On a conflict the state is re-read (guarantee 6): if it still names us as owner in the
    /// same generation, the conflicting write was one of ours whose reply was lost, so we adopt
    /// its revision and retry; otherwise another consumer took over, we turn standby and return
    /// [`Error::Fenced`] with nothing written.
    pub(crate) async fn write_as_owner(
        &self,
        generation: u64,
        notify: bool,
        change: impl Fn(&mut StoredGroup) -> bool,
    ) -> Result<(), Error> {
        self.write_as_owner_with(generation, notify, &[], change)
            .await
            .map(drop)
    }

    /// As [`write_as_owner`](Membership::write_as_owner), durable when it returns whatever
    /// the driver's record durability.
    pub(crate) async fn write_as_owner_durably(
        &self,
        generation: u64,
        change: impl Fn(&mut StoredGroup) -> bool,
    ) -> Result<(), Error> {
        self.write_as_owner_inner(generation, false, &[], true, change)
            .await
            .map(drop)
    }

    /// As [`write_as_owner`](Membership::write_as_owner), appending `messages` in the same
    /// transaction as the record write (and only with it). Returns whether it wrote: `false`
    /// when `change` found nothing to do, which is also how a retry learns that its earlier
    /// attempt was applied though its reply was lost, so the messages are never appended twice.
    pub(crate) async fn write_as_owner_with(
        &self,
        generation: u64,
        notify: bool,
        messages: &[NewMessage],
        change: impl Fn(&mut StoredGroup) -> bool,
    ) -> Result<bool, Error> {
        self.write_as_owner_inner(generation, notify, messages, false, change)
            .await
    }

    async fn write_as_owner_inner(
        &self,
        generation: u64,
        notify: bool,
        messages: &[NewMessage],
        durable: bool,
        change: impl Fn(&mut StoredGroup) -> bool,
    ) -> Result<bool, Error> {
        let _serial = self.writes.lock().await;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut state, revision) = match self.lock_view().state.clone() {
                Some((state, revision)) if self.owns(&state, generation) => (state, revision),
                _ => return Err(self.fenced(generation)),
            };
            if !change(&mut state) {
                return Ok(false);
            }
            match self
                .write_with(
                    &state,
                    Expected::Revision(revision),
                    notify,
                    messages,
                    durable,
                )
                .await
            {
                Ok(new_revision) => {
                    self.observe(&state, new_revision, true);
                    return Ok(true);
                }
                Err(DriverError::Conflict { current, .. }) => {
                    // The driver returns the record as it is now: no read needed to tell our
                    // own lost reply from another owner.
                    let Some((latest, _)) = self.observe_current(current)? else {
                        // The record is gone: whatever happened, this claim is over.
                        self.check_deleted()?;
                        return Err(self.fenced(generation));
                    };
                    if !self.owns(&latest, generation) {
                        tracing::warn!(
                            group = %self.settings.group,
                            consumer = %self.id,
                            generation,
                            "write fenced: another consumer owns the group"
                        );
                        return Err(self.fenced(generation));
                    }
                    tracing::debug!(
                        group = %self.settings.group,
                        consumer = %self.id,
                        "conflict with our own earlier write (lost reply); adopting its revision"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Storage(DriverError::unavailable(format!(
            "group {:?}: record kept changing under {MAX_CAS_ATTEMPTS} attempts while we own it",
            self.settings.group
        ))))
    }

    fn demote(&self) {
        self.role.send_if_modified(|role| {
            let was_active = matches!(role, Role::Active { .. });
            *role = Role::Standby;
            was_active
        });
    }

    /// Marks the group inactive if the stored state names this consumer as its active owner,
    /// whatever this consumer believes: a takeover or creation whose reply was lost still
    /// counts. Used on shutdown, so a standby can take over at once.
    pub(crate) async fn release(&self) -> Result<(), Error> {
        let Some((state, revision)) = self.read_state().await? else {
            return Ok(());
        };
        self.observe(&state, revision, false);
        if state.owner != self.id || !state.active {
            return Ok(());
        }
        match self
            .write_as_owner(state.generation, true, |state| {
                state.active = false;
                true
            })
            .await
        {
            Ok(()) => {
                tracing::info!(
                    group = %self.settings.group,
                    consumer = %self.id,
                    generation = state.generation,
                    "released the group for a standby"
                );
                Ok(())
            }
            // Someone else owns the group already: nothing to hand over.
            Err(Error::Fenced { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn owns(&self, state: &StoredGroup, generation: u64) -> bool {
        state.owner == self.id && state.generation == generation && state.active
    }

    pub(crate) fn fenced(&self, generation: u64) -> Error {
        crate::metrics::fenced(
            crate::names::split_log_name(&self.settings.stream).0,
            &self.settings.group,
        );
        tracing::debug!(
            group = %self.settings.group,
            stream = %self.settings.stream,
            consumer = %self.id,
            generation,
            "fenced: this claim has ended"
        );
        Error::Fenced {
            group: self.settings.group.clone(),
            generation,
        }
    }
}

fn roster_lists(roster: &Roster, instance: &str) -> bool {
    roster.current().is_some_and(|r| r.has_instance(instance))
}

/// The group record as written: the state, stamped with the writer's wall-clock time, which
/// the admin API shows as the group's last commit or heartbeat.
fn encode(state: &StoredGroup) -> Result<serde_json::Value, DriverError> {
    let mut stamped = state.clone();
    stamped.written_micros = Some(super::retry::micros_since_epoch(
        std::time::SystemTime::now(),
    ));
    serde_json::to_value(&stamped)
        .map_err(|e| DriverError::failed("encoding the group record").caused_by(e))
}
