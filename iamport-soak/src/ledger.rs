//! The soak's record of the truth it created at the emulator: which person every
//! verification id is, and which browser session every binding ticket was minted for.
//! The end-of-run check reads the replicas' accounts against this, never against what the
//! replicas say about themselves.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// One verification the load completed at the emulator.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// Index into the population.
    pub(crate) person: usize,
    /// The ticket it was started with (v1 `merchant_uid`, v2 its own id); `None` for a
    /// template id used raw.
    pub(crate) ticket: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    verified: HashMap<String, Verified>,
    /// Ticket → the session cookie it was minted for.
    tickets: HashMap<String, String>,
}

/// Shared by the load's workers.
#[derive(Debug, Default)]
pub(crate) struct Ledger(Mutex<Inner>);

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ticket_minted(&self, ticket: &str, session: &str) {
        self.lock()
            .tickets
            .insert(ticket.to_owned(), session.to_owned());
    }

    pub(crate) fn verified(&self, id: &str, person: usize, ticket: Option<&str>) {
        self.lock().verified.insert(
            id.to_owned(),
            Verified {
                person,
                ticket: ticket.map(str::to_owned),
            },
        );
    }

    pub(crate) fn lookup(&self, id: &str) -> Option<Verified> {
        self.lock().verified.get(id).cloned()
    }

    /// The session `ticket` was minted for.
    pub(crate) fn session_of(&self, ticket: &str) -> Option<String> {
        self.lock().tickets.get(ticket).cloned()
    }

    pub(crate) fn verifications(&self) -> usize {
        self.lock().verified.len()
    }
}
