//! Crash poison: a message that kills the consumer handling it is retried by every new owner,
//! forever, unless someone counts. With `max_deliveries` set, consumers count.
//!
//! - A takeover from an owner that never released the group (it crashed or hung; a shutdown
//!   or a rebalance releases first) counts one crash of the message that owner was *probing*,
//!   and asks the new owner to probe deliveries up to the head it saw (the window the crashed
//!   owner may have been in): see `StoredGroup::taken_over_by`.
//! - Probing a delivery writes its offset in the group record, durably, before the
//!   application gets it. Only inside that window, so a healthy group never probes; after a
//!   crash it costs one write per message the crashed owner may have handed out (what was
//!   pending when it died: more with a backlog).
//! - Dead-lettering a suspect commits what comes before it, as every dead letter does: it is
//!   met once the application has asked for the message after the ones before it, which in
//!   the Next/handle/Commit loop means it handled them.
//! - A message whose crash count reaches `max_deliveries` is dead-lettered by the owner that
//!   meets it next, without handing it to the application.
//!
//! A slow handler is never counted: its consumer heartbeats while it works, so nobody takes
//! over. The first crash of a group that was running normally names no message (nothing was
//! probed), so a poison message reaches the application at most `max_deliveries + 1` times.

use super::lane::Lane;
use crate::error::Error;

impl Lane {
    /// Whether the message at `offset`, next in the buffer, must be probed or checked before
    /// it is handed out.
    pub(super) fn needs_preparing(&self, offset: u64) -> bool {
        let cursor = &self.cursor;
        offset > cursor.prepared
            && (cursor
                .probe_through
                .is_some_and(|through| offset <= through)
                || cursor
                    .suspect
                    .is_some_and(|suspect| suspect.offset == offset))
    }

    /// Clears the next buffered message for delivery: dead-letters it if it is a suspect past
    /// the limit (then looks at the one after), probes it if it lies in a crashed owner's
    /// window. `Ok(false)`: this consumer lost the group meanwhile.
    pub(super) async fn prepare(&mut self) -> Result<bool, Error> {
        loop {
            let Some(front) = self.front() else {
                return Ok(true);
            };
            let offset = front.offset();
            if !self.needs_preparing(offset) {
                return Ok(true);
            }
            let Some(generation) = self.cursor.generation else {
                return Ok(false);
            };
            let max = self.membership.settings.max_deliveries;
            if let (Some(suspect), Some(max)) = (self.cursor.suspect, max)
                && suspect.offset == offset
                && suspect.crashes >= max
            {
                // Copied, not taken: if this future is dropped before the dead letter is
                // stored, the message is still first in line.
                let Some(message) = self.front().cloned() else {
                    return Ok(true);
                };
                let reason = format!(
                    "the consumer handling it stopped {} times without releasing the group \
                     (crash poison)",
                    suspect.crashes
                );
                tracing::warn!(
                    group = %self.membership.settings.group,
                    stream = %self.membership.settings.stream,
                    consumer = %self.membership.id,
                    offset,
                    crashes = suspect.crashes,
                    "crash poison: dead-lettering a message without handing it to the application"
                );
                match self
                    .write_dead_letter(
                        &message,
                        generation,
                        suspect.crashes,
                        &reason,
                        crate::metrics::DeadLetterCause::CrashPoison,
                    )
                    .await
                {
                    Ok(()) => {
                        self.take_front();
                        self.cursor.suspect = None;
                        self.cursor.prepared = offset;
                        continue;
                    }
                    Err(Error::Fenced { .. }) => return Ok(false),
                    Err(error) => return Err(error),
                }
            }
            // Durable on every store (a batch is never deferred): the crash it is there for
            // may come right after.
            let probed = self
                .membership
                .write_as_owner_durably(generation, |state| {
                    if state.probe == Some(offset) {
                        return false;
                    }
                    state.probe = Some(offset);
                    true
                })
                .await;
            match probed {
                Ok(()) => {
                    self.cursor.prepared = offset;
                    return Ok(true);
                }
                Err(Error::Fenced { .. }) => return Ok(false),
                Err(error) => return Err(error),
            }
        }
    }
}
