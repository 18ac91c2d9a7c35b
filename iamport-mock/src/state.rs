//! The emulator's shared state: persons, the issued token, faults and call counters.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::persons::Label;

/// An emulated PortOne endpoint, for counters and faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /users/getToken`.
    GetToken,
    /// `GET /certifications/{imp_uid}`.
    GetCertification,
    /// `DELETE /certifications/{imp_uid}`.
    DeleteCertification,
    /// v2 `GET /identity-verifications/{identityVerificationId}`.
    GetIdentityVerification,
    /// v2 `GET /identity-verifications` (the list).
    ListIdentityVerifications,
    /// v2 `POST /login/api-secret`.
    LoginApiSecret,
    /// v2 `POST /token/refresh`.
    RefreshToken,
}

impl Endpoint {
    /// Whether this is a v2 endpoint (errors in v2's `{type, message}` shape).
    pub(crate) fn is_v2(self) -> bool {
        !matches!(
            self,
            Self::GetToken | Self::GetCertification | Self::DeleteCertification
        )
    }
}

/// What the v2 API knows of a verification beyond the v1 record: who asked, how, and what
/// the merchant attached.
#[derive(Debug, Clone)]
pub(crate) struct V2Meta {
    /// `V1` for records born in the v1 flow (every sample person), `V2` for the v2 SDK's.
    pub(crate) version: &'static str,
    /// `customer.id` as the browser passed it.
    pub(crate) customer_id: Option<String>,
    /// `customData` as the browser passed it (a string).
    pub(crate) custom_data: Option<String>,
    /// The channel the browser asked for (`channelKey`).
    pub(crate) channel_key: Option<String>,
    /// The browser SDK's `identityVerificationTxId`.
    pub(crate) tx_id: String,
    /// When the verification was requested (Unix seconds).
    pub(crate) requested_at: i64,
}

/// A v2 identity verification that has not (or not successfully) completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingStatus {
    /// Requested, not finished: v2 `READY`.
    Ready,
    /// Failed: v2 `FAILED`.
    Failed,
}

/// What a queued fault does to the request it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// Answer this status with PortOne's error envelope.
    Status(StatusCode),
    /// Close the connection without answering.
    Drop,
    /// Answer 200 with a body that is not JSON.
    Garbage,
}

#[derive(Debug)]
struct Fault {
    endpoint: Endpoint,
    kind: FaultKind,
    remaining: u32,
}

/// PortOne's token rules: one token per credentials, reused until it expires; asking during
/// its last `extend_window` seconds pushes expiry out by `extend_by` seconds.
#[derive(Debug)]
pub(crate) struct TokenRules {
    pub(crate) lifetime: i64,
    pub(crate) extend_window: i64,
    pub(crate) extend_by: i64,
}

impl Default for TokenRules {
    fn default() -> Self {
        Self {
            lifetime: 30 * 60,
            extend_window: 60,
            extend_by: 5 * 60,
        }
    }
}

#[derive(Debug)]
struct IssuedToken {
    value: String,
    expired_at: i64,
}

#[derive(Debug, Default)]
struct Inner {
    persons: HashMap<String, Value>,
    /// Persons offered on the verification page, in order, with optional labels.
    templates: Vec<(String, Option<Label>)>,
    /// v2 verifications that are READY or FAILED, by id.
    pending: HashMap<String, PendingStatus>,
    token: Option<IssuedToken>,
    rules: TokenRules,
    clock_offset: i64,
    latency: Duration,
    faults: Vec<Fault>,
    calls: HashMap<Endpoint, u64>,
    calls_by_id: HashMap<String, u64>,
    rejected_tokens: u64,
    /// v2 facts by verification id; a record without is a v1-born one.
    v2_meta: HashMap<String, V2Meta>,
    /// v2 access tokens issued by `POST /login/api-secret` and `/token/refresh`.
    v2_access_tokens: HashSet<String>,
    /// v2 refresh tokens, each usable once.
    v2_refresh_tokens: HashSet<String>,
}

/// Shared by the HTTP handlers and the [`Emulator`](super::Emulator) handle.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) v2_secret: String,
    /// The store the v2 secret belongs to; another `storeId` is `FORBIDDEN`.
    pub(crate) v2_store_id: Option<String>,
    inner: Mutex<Inner>,
}

impl State {
    pub(crate) fn new(
        key: String,
        secret: String,
        v2_secret: String,
        v2_store_id: Option<String>,
        persons: Vec<(Option<Label>, Value)>,
        rules: TokenRules,
    ) -> Self {
        let mut inner = Inner {
            rules,
            ..Inner::default()
        };
        for (label, person) in persons {
            insert_template(&mut inner, label, person);
        }
        Self {
            key,
            secret,
            v2_secret,
            v2_store_id,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server's clock (Unix seconds), possibly skewed from the host's on purpose.
    pub(crate) fn now(&self) -> i64 {
        jiff::Timestamp::now().as_second() + self.lock().clock_offset
    }

    /// Counts a call and returns the latency to add and the fault to apply, if any.
    pub(crate) fn begin(
        &self,
        endpoint: Endpoint,
        id: Option<&str>,
    ) -> (Duration, Option<FaultKind>) {
        let mut inner = self.lock();
        *inner.calls.entry(endpoint).or_default() += 1;
        if let Some(id) = id {
            *inner.calls_by_id.entry(id.to_owned()).or_default() += 1;
        }
        let fault = inner
            .faults
            .iter_mut()
            .find(|f| f.endpoint == endpoint && f.remaining > 0)
            .map(|f| {
                f.remaining -= 1;
                f.kind
            });
        inner.faults.retain(|f| f.remaining > 0);
        (inner.latency, fault)
    }

    /// Issues or reuses the token per [`TokenRules`]; returns `(token, now, expired_at)`.
    pub(crate) fn issue_token(&self) -> (String, i64, i64) {
        let now = self.now();
        let mut inner = self.lock();
        let Inner { token, rules, .. } = &mut *inner;
        match token {
            Some(current) if now < current.expired_at => {
                if current.expired_at - now <= rules.extend_window {
                    current.expired_at += rules.extend_by;
                }
                (current.value.clone(), now, current.expired_at)
            }
            _ => {
                let value = random_token();
                let expired_at = now + rules.lifetime;
                *token = Some(IssuedToken {
                    value: value.clone(),
                    expired_at,
                });
                (value, now, expired_at)
            }
        }
    }

    /// Whether `presented` is the current, unexpired token; counts refusals.
    pub(crate) fn accept_token(&self, presented: Option<&str>) -> bool {
        let now = self.now();
        let mut inner = self.lock();
        let ok = matches!(
            (&inner.token, presented),
            (Some(t), Some(p)) if t.value == p && now < t.expired_at
        );
        if !ok {
            inner.rejected_tokens += 1;
        }
        ok
    }

    pub(crate) fn person(&self, id: &str) -> Option<Value> {
        self.lock().persons.get(id).cloned()
    }

    pub(crate) fn pending(&self, id: &str) -> Option<PendingStatus> {
        self.lock().pending.get(id).copied()
    }

    pub(crate) fn set_pending(&self, id: &str, status: PendingStatus) {
        let now = self.now();
        let mut inner = self.lock();
        inner.persons.remove(id);
        inner.pending.insert(id.to_owned(), status);
        inner
            .v2_meta
            .entry(id.to_owned())
            .or_insert_with(|| V2Meta {
                version: "V2",
                customer_id: None,
                custom_data: None,
                channel_key: None,
                tx_id: new_tx_id(),
                requested_at: now,
            });
    }

    /// Opens a v2 verification (`READY`) with what the browser SDK was given, unless `id`
    /// already names one.
    pub(crate) fn request_v2(&self, id: &str, meta: V2Meta) {
        let mut inner = self.lock();
        if inner.persons.contains_key(id) || inner.pending.contains_key(id) {
            return;
        }
        inner.pending.insert(id.to_owned(), PendingStatus::Ready);
        inner.v2_meta.insert(id.to_owned(), meta);
    }

    pub(crate) fn v2_meta(&self, id: &str) -> Option<V2Meta> {
        self.lock().v2_meta.get(id).cloned()
    }

    /// Every v2 verification: `(id, record or pending status, meta)`, for the list endpoint.
    pub(crate) fn all_v2(&self) -> Vec<(String, Result<Value, PendingStatus>, Option<V2Meta>)> {
        let inner = self.lock();
        let persons = inner
            .persons
            .iter()
            .map(|(id, p)| (id.clone(), Ok(p.clone())));
        let pending = inner
            .pending
            .iter()
            .map(|(id, status)| (id.clone(), Err(*status)));
        persons
            .chain(pending)
            .map(|(id, record)| {
                let meta = inner.v2_meta.get(&id).cloned();
                (id, record, meta)
            })
            .collect()
    }

    /// Issues a v2 access and refresh token pair.
    pub(crate) fn issue_v2_tokens(&self) -> (String, String) {
        let (access, refresh) = (random_token(), random_token());
        let mut inner = self.lock();
        inner.v2_access_tokens.insert(access.clone());
        inner.v2_refresh_tokens.insert(refresh.clone());
        (access, refresh)
    }

    /// Uses up `refresh` and issues a new pair; `None` for an unknown refresh token.
    pub(crate) fn refresh_v2_tokens(&self, refresh: &str) -> Option<(String, String)> {
        if !self.lock().v2_refresh_tokens.remove(refresh) {
            return None;
        }
        Some(self.issue_v2_tokens())
    }

    pub(crate) fn accept_v2_access_token(&self, token: &str) -> bool {
        self.lock().v2_access_tokens.contains(token)
    }

    pub(crate) fn remove_person(&self, id: &str) -> Option<Value> {
        self.lock().persons.remove(id)
    }

    pub(crate) fn add_person(&self, label: Option<Label>, person: Value) {
        insert_template(&mut self.lock(), label, person);
    }

    /// The persons offered on the verification page: `(imp_uid, label, person)`.
    pub(crate) fn templates(&self) -> Vec<(String, Option<Label>, Value)> {
        let inner = self.lock();
        inner
            .templates
            .iter()
            .filter_map(|(id, label)| Some((id.clone(), *label, inner.persons.get(id)?.clone())))
            .collect()
    }

    /// Records a new verification of the person `template`: a copy under `id` (v2: the
    /// merchant's) or a fresh `imp_…` id, completed now. `None` for an unknown template.
    ///
    /// Each verification is a transaction of its own: a new `pg_tid` (v2 `pgTxId`). A v2 one
    /// keeps the meta its `READY` record got from the browser SDK, or gets `meta`.
    pub(crate) fn verify_as(
        &self,
        template: &str,
        merchant_uid: Option<&str>,
        v2: Option<(&str, V2Meta)>,
    ) -> Option<String> {
        let now = self.now();
        let mut inner = self.lock();
        let mut person = inner.persons.get(template)?.clone();
        let id = v2
            .as_ref()
            .map_or_else(new_imp_uid, |(id, _)| (*id).to_owned());
        inner.pending.remove(&id);
        person["imp_uid"] = Value::from(id.clone());
        person["merchant_uid"] = merchant_uid.map_or(Value::Null, Value::from);
        person["certified_at"] = Value::from(now);
        person["pg_tid"] = Value::from(new_pg_tid());
        if let Some((_, meta)) = v2 {
            inner.v2_meta.entry(id.clone()).or_insert(meta);
        } else {
            inner.v2_meta.remove(&id);
        }
        inner.persons.insert(id.clone(), person);
        Some(id)
    }

    pub(crate) fn calls(&self, endpoint: Endpoint) -> u64 {
        self.lock().calls.get(&endpoint).copied().unwrap_or(0)
    }

    pub(crate) fn calls_for(&self, id: &str) -> u64 {
        self.lock().calls_by_id.get(id).copied().unwrap_or(0)
    }

    pub(crate) fn rejected_tokens(&self) -> u64 {
        self.lock().rejected_tokens
    }

    pub(crate) fn reset_counters(&self) {
        let mut inner = self.lock();
        inner.calls.clear();
        inner.calls_by_id.clear();
        inner.rejected_tokens = 0;
    }

    pub(crate) fn queue_fault(&self, endpoint: Endpoint, kind: FaultKind, times: u32) {
        self.lock().faults.push(Fault {
            endpoint,
            kind,
            remaining: times,
        });
    }

    pub(crate) fn pending_faults(&self) -> u64 {
        self.lock()
            .faults
            .iter()
            .map(|f| u64::from(f.remaining))
            .sum()
    }

    pub(crate) fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.faults.clear();
        inner.latency = Duration::ZERO;
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    pub(crate) fn set_clock_offset(&self, seconds: i64) {
        self.lock().clock_offset = seconds;
    }

    pub(crate) fn set_token_rules(&self, rules: TokenRules) {
        self.lock().rules = rules;
    }

    pub(crate) fn revoke_token(&self) {
        self.lock().token = None;
    }
}

/// `imp_` and 12 digits, like PortOne's.
pub(crate) fn new_imp_uid() -> String {
    format!(
        "imp_{:012}",
        fastrand::u64(100_000_000_000..1_000_000_000_000)
    )
}

fn insert_template(inner: &mut Inner, label: Option<Label>, person: Value) {
    if let Some(id) = person
        .get("imp_uid")
        .and_then(Value::as_str)
        .map(str::to_owned)
    {
        // Only a replaced person needs the scan: adding 60 000 stays linear.
        if inner.persons.contains_key(&id) {
            inner.templates.retain(|(t, _)| *t != id);
        }
        inner.templates.push((id.clone(), label));
        inner.persons.insert(id, person);
    }
}

/// A PG transaction id: 20 digits.
fn new_pg_tid() -> String {
    format!(
        "{:010}{:010}",
        fastrand::u64(1_000_000_000..10_000_000_000),
        fastrand::u64(0..10_000_000_000)
    )
}

/// A browser SDK `identityVerificationTxId`: a UUID-shaped random string.
pub(crate) fn new_tx_id() -> String {
    let hex = random_token();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// 40 hex digits, like PortOne's tokens.
fn random_token() -> String {
    (0..40)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect()
}
