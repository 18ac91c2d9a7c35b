//! The load: virtual users that behave like browsers and attackers, each request timed
//! against the bound ([`bounds::request`]) and its answer recorded.
//!
//! The mix (by weight): valid signups through the popup and redirect flows, v1 and v2;
//! duplicates of one person racing across both replicas; hostile ids and bodies; cancelled
//! verifications; ids replayed from another browser session under binding; `HEAD`s of a
//! redirect URL. Persons are drawn with a hot set, so the same person is verified many times
//! under different ids.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::bounds;
use crate::fleet::Replica;
use crate::ledger::Ledger;
use crate::population::{Kind, Person};

/// What the load saw.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) by_status: Mutex<BTreeMap<u16, u64>>,
    pub(crate) by_scenario: Mutex<BTreeMap<&'static str, u64>>,
    /// No answer within the hard cap, or a connection error not caused by a kill.
    pub(crate) unanswered: AtomicU64,
    /// Connections cut because their replica was killed.
    pub(crate) cut_by_kill: AtomicU64,
    /// Answered, but later than the bound.
    pub(crate) over_bound: AtomicU64,
    pub(crate) max_latency_ms: AtomicU64,
    /// Ids answered 201 (each must have an account row).
    pub(crate) created: Mutex<Vec<String>>,
    /// A 2xx where the request could not be admitted (scenario: reason).
    pub(crate) wrongly_admitted: Mutex<Vec<String>>,
    /// 409s from `record_account`: the accounts' keys table held the person already.
    pub(crate) refused_by_keys_table: AtomicU64,
    /// The load's own steps at the emulator (ticket pages, verifications) that failed.
    pub(crate) setup_failures: AtomicU64,
}

impl Stats {
    fn count_status(&self, status: u16) {
        *lock(&self.by_status).entry(status).or_default() += 1;
    }

    fn wrong(&self, what: String) {
        let mut list = lock(&self.wrongly_admitted);
        if list.len() < 1000 {
            list.push(what);
        }
    }

    pub(crate) fn statuses(&self) -> BTreeMap<u16, u64> {
        lock(&self.by_status).clone()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) emulator: String,
    pub(crate) replicas: Vec<Arc<Replica>>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) persons: Arc<Vec<Person>>,
    /// Adults' indices (the racing duplicates and replays draw from them).
    pub(crate) adults: Vec<usize>,
}

/// A browser: its binding session cookie.
#[derive(Debug, Default)]
struct Session {
    cookie: Option<String>,
}

/// One answer from a replica.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Cut by a kill, or unanswered: nothing to judge.
    None,
}

impl Answer {
    fn is_success(self) -> bool {
        matches!(self, Self::Status(200..=299))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    V1,
    V2,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::V1 => "imp_uid",
            Self::V2 => "identityVerificationId",
        }
    }
}

/// Runs one virtual user until `deadline`.
pub(crate) async fn worker(shared: Arc<Shared>, seed: u64, deadline: Instant) {
    let Ok(http) = http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(bounds::hard_cap())
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(4)
        .build()
    else {
        return;
    };
    let mut user = User {
        shared,
        http,
        rng: fastrand::Rng::with_seed(seed),
    };
    while Instant::now() < deadline {
        let scenario = match user.rng.u32(0..100) {
            0..40 => Scenario::Signup,
            40..55 => Scenario::Race,
            55..67 => Scenario::Hostile,
            67..75 => Scenario::Cancelled,
            75..88 => Scenario::Replay,
            _ => Scenario::Head,
        };
        *lock(&user.shared.stats.by_scenario)
            .entry(scenario.name())
            .or_default() += 1;
        user.run(scenario).await;
        // Pacing: the machine is shared; the soak is about time under faults, not peak rate.
        tokio::time::sleep(Duration::from_millis(user.rng.u64(100..400))).await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Signup,
    Race,
    Hostile,
    Cancelled,
    Replay,
    Head,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::Race => "duplicate race",
            Self::Hostile => "hostile id/body",
            Self::Cancelled => "cancelled",
            Self::Replay => "replayed id",
            Self::Head => "HEAD",
        }
    }
}

struct User {
    shared: Arc<Shared>,
    http: reqwest::Client,
    rng: fastrand::Rng,
}

impl User {
    async fn run(&mut self, scenario: Scenario) {
        match scenario {
            Scenario::Signup => self.signup().await,
            Scenario::Race => self.race().await,
            Scenario::Hostile => self.hostile().await,
            Scenario::Cancelled => self.cancelled().await,
            Scenario::Replay => self.replay().await,
            Scenario::Head => self.head().await,
        }
    }

    fn api(&mut self) -> Api {
        if self.rng.bool() { Api::V1 } else { Api::V2 }
    }

    /// Anyone, with a hot set of 5 % of the population drawn half the time.
    fn anyone(&mut self) -> usize {
        let n = self.shared.persons.len();
        if self.rng.bool() {
            self.rng.usize(0..(n / 20).max(1))
        } else {
            self.rng.usize(0..n)
        }
    }

    fn adult(&mut self) -> usize {
        let adults = &self.shared.adults;
        let hot = (adults.len() / 10).max(1);
        if self.rng.bool() {
            adults[self.rng.usize(0..hot)]
        } else {
            adults[self.rng.usize(0..adults.len())]
        }
    }

    /// A replica that is up, preferring `preferred`; `None` when both are down.
    fn replica(&mut self, preferred: Option<usize>) -> Option<Arc<Replica>> {
        let replicas = &self.shared.replicas;
        let first = preferred.unwrap_or_else(|| self.rng.usize(0..replicas.len()));
        (0..replicas.len())
            .map(|i| &replicas[(first + i) % replicas.len()])
            .find(|r| r.is_up())
            .cloned()
    }

    /// Sends `request` to `replica`, timing and recording its answer.
    async fn send(&self, replica: &Replica, request: reqwest::RequestBuilder) -> Answer {
        let stats = &self.shared.stats;
        let generation = replica.generation();
        let started = Instant::now();
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let result = request.send().await;
        let elapsed = started.elapsed();
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the body within the same bound.
                let body = response.text().await.unwrap_or_default();
                let elapsed = started.elapsed();
                let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                stats.max_latency_ms.fetch_max(millis, Ordering::Relaxed);
                if elapsed > bounds::request() {
                    stats.over_bound.fetch_add(1, Ordering::Relaxed);
                }
                stats.count_status(status);
                if status == 409 && body.contains("accounts' keys") {
                    stats.refused_by_keys_table.fetch_add(1, Ordering::Relaxed);
                }
                Answer::Status(status)
            }
            Err(error) => {
                let killed = replica.generation() != generation || !replica.is_up();
                if killed && !error.is_timeout() {
                    stats.cut_by_kill.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.unanswered.fetch_add(1, Ordering::Relaxed);
                    let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                    stats.max_latency_ms.fetch_max(millis, Ordering::Relaxed);
                }
                Answer::None
            }
        }
    }

    fn with_cookie(
        &self,
        request: reqwest::RequestBuilder,
        session: &Session,
    ) -> reqwest::RequestBuilder {
        match &session.cookie {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        }
    }

    /// `GET /ticket`: a fresh ticket for `session` (and its cookie the first time).
    async fn ticket(&self, replica: &Replica, session: &mut Session) -> Option<String> {
        let request = self.with_cookie(self.http.get(format!("{}/ticket", replica.url)), session);
        let started = Instant::now();
        let generation = replica.generation();
        self.shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        let Ok(response) = request.send().await else {
            if replica.generation() != generation || !replica.is_up() {
                self.shared
                    .stats
                    .cut_by_kill
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                self.shared.stats.unanswered.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        };
        self.shared.stats.count_status(response.status().as_u16());
        if let Some(set) = response
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
        {
            session.cookie = set.split(';').next().map(str::to_owned);
        }
        let body: serde_json::Value = response.json().await.ok()?;
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared
            .stats
            .max_latency_ms
            .fetch_max(millis, Ordering::Relaxed);
        if started.elapsed() > bounds::request() {
            self.shared.stats.over_bound.fetch_add(1, Ordering::Relaxed);
        }
        let ticket = body["ticket"].as_str()?.to_owned();
        let cookie_value = session
            .cookie
            .as_deref()
            .and_then(|c| c.split_once('='))
            .map(|(_, v)| v)?;
        self.shared.ledger.ticket_minted(&ticket, cookie_value);
        Some(ticket)
    }

    /// Completes (or cancels) a verification of `person` at the emulator with `ticket`, as
    /// the SDK stand-in's page does in redirect mode; returns the id and the return query.
    async fn verify(
        &self,
        person: usize,
        api: Api,
        ticket: &str,
        cancel: bool,
    ) -> Option<(String, String)> {
        let template = self.shared.persons[person].template.as_str();
        let mut form = vec![
            ("mode", "redirect"),
            ("redirect_url", "http://replica.invalid/return"),
            ("api", api.path()),
        ];
        if cancel {
            form.push(("cancel", "1"));
        } else {
            form.push(("person", template));
        }
        match api {
            Api::V1 => form.push(("merchant_uid", ticket)),
            Api::V2 => form.push(("identity_verification_id", ticket)),
        }
        let failed = || {
            self.shared
                .stats
                .setup_failures
                .fetch_add(1, Ordering::Relaxed);
            None
        };
        let Ok(response) = self
            .http
            .post(format!("{}/certify", self.shared.emulator))
            .form(&form)
            .send()
            .await
        else {
            return failed();
        };
        if response.status() != 303 {
            return failed();
        }
        let Some(location) = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
        else {
            return failed();
        };
        let query = location.split_once('?')?.1.to_owned();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query).ok()?;
        let id = pairs.into_iter().find(|(k, _)| k == api.field())?.1;
        if !cancel {
            self.shared.ledger.verified(&id, person, Some(ticket));
        }
        Some((id, query))
    }

    /// A session with a ticket from some replica, and a verification of `person` with it.
    async fn verified(
        &mut self,
        person: usize,
        api: Api,
        cancel: bool,
    ) -> Option<(Session, String, String)> {
        let replica = self.replica(None)?;
        let mut session = Session::default();
        let ticket = self.ticket(&replica, &mut session).await?;
        let (id, query) = self.verify(person, api, &ticket, cancel).await?;
        Some((session, id, query))
    }

    /// The popup flow: `POST /{api}/signup` with `{field: id}`.
    async fn submit(&self, replica: &Replica, api: Api, session: &Session, id: &str) -> Answer {
        let request = self
            .http
            .post(format!("{}/{}/signup", replica.url, api.path()))
            .json(&json!({ api.field(): id }));
        self.send(replica, self.with_cookie(request, session)).await
    }

    /// The redirect flow: `GET` (or `HEAD`) `/{api}/signup/redirect?{query}`.
    async fn land(
        &self,
        replica: &Replica,
        api: Api,
        session: &Session,
        query: &str,
        head: bool,
    ) -> Answer {
        let url = format!("{}/{}/signup/redirect?{query}", replica.url, api.path());
        let request = if head {
            self.http.head(url)
        } else {
            self.http.get(url)
        };
        self.send(replica, self.with_cookie(request, session)).await
    }

    fn judge(&self, answer: Answer, person: usize, id: &str, scenario: &str) {
        if let Answer::Status(201) = answer {
            lock(&self.shared.stats.created).push(id.to_owned());
        }
        let kind = self.shared.persons[person].kind;
        if answer.is_success() && !kind.admissible() {
            self.shared.stats.wrong(format!(
                "{scenario}: a {} person answered 2xx",
                kind.as_str()
            ));
        }
    }

    async fn signup(&mut self) {
        let person = self.anyone();
        let api = self.api();
        let Some((session, id, query)) = self.verified(person, api, false).await else {
            return;
        };
        let Some(replica) = self.replica(None) else {
            return;
        };
        let answer = if self.rng.bool() {
            self.submit(&replica, api, &session, &id).await
        } else {
            self.land(&replica, api, &session, &query, false).await
        };
        self.judge(answer, person, &id, "signup");
    }

    /// One person, two browsers, two verifications, submitted at once to both replicas.
    async fn race(&mut self) {
        let person = if self.rng.u32(0..5) == 0 {
            self.anyone()
        } else {
            self.adult()
        };
        let (api_a, api_b) = (self.api(), self.api());
        let Some((session_a, id_a, _)) = self.verified(person, api_a, false).await else {
            return;
        };
        let Some((session_b, id_b, _)) = self.verified(person, api_b, false).await else {
            return;
        };
        let (Some(a), Some(b)) = (self.replica(Some(0)), self.replica(Some(1))) else {
            return;
        };
        let (answer_a, answer_b) = tokio::join!(
            self.submit(&a, api_a, &session_a, &id_a),
            self.submit(&b, api_b, &session_b, &id_b)
        );
        self.judge(answer_a, person, &id_a, "race");
        self.judge(answer_b, person, &id_b, "race");
        if answer_a.is_success() && answer_b.is_success() {
            self.shared
                .stats
                .wrong("duplicate race: both replicas admitted one person".into());
        }
    }

    async fn hostile(&mut self) {
        let Some(replica) = self.replica(None) else {
            return;
        };
        let mut session = Session::default();
        // A genuine session, so refusals are about the id, not a missing cookie.
        let _ = self.ticket(&replica, &mut session).await;
        let api = self.api();
        let base = format!("{}/{}/signup", replica.url, api.path());
        let field = api.field();
        let someone = self.anyone();
        let template = self.shared.persons[someone].template.clone();
        let request = match self.rng.u32(0..11) {
            0 => self.http.post(&base).json(&json!({ field: "imp_../../x" })),
            1 => self.http.get(format!("{base}/redirect?{field}=imp_1%2F2")),
            2 => self
                .http
                .post(&base)
                .json(&json!({ field: format!("imp_{}", "9".repeat(100)) })),
            3 => self
                .http
                .post(&base)
                .header(CONTENT_TYPE, "application/json")
                .body(format!(
                    r#"{{"{field}":"imp_100000000001","pad":"{}"}}"#,
                    "x".repeat(70 * 1024)
                )),
            4 => self
                .http
                .post(&base)
                .header(CONTENT_TYPE, "application/json")
                .body(format!(r#"{{"{field}": "#)),
            5 => self
                .http
                .post(&base)
                .header(CONTENT_TYPE, "text/plain")
                .body(format!("{field}=imp_123")),
            // A raw template id: a real verification of a real person, but no ticket of ours.
            6 => self.http.post(&base).json(&json!({ field: template })),
            7 => self
                .http
                .post(&base)
                .json(&json!({ field: "imp_999999999999999" })),
            8 => self.http.get(format!(
                "{base}/redirect?{field}=..%2Fidentity-verifications"
            )),
            9 => self.http.post(&base).json(&json!({ field: " imp_1 2" })),
            _ => self
                .http
                .post(&base)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!("{field}={template}&{field}=imp_1")),
        };
        let answer = self
            .send(&replica, self.with_cookie(request, &session))
            .await;
        if answer.is_success() {
            self.shared
                .stats
                .wrong("hostile id/body: answered 2xx".into());
        }
    }

    async fn cancelled(&mut self) {
        let person = self.anyone();
        let api = self.api();
        let Some((session, _, query)) = self.verified(person, api, true).await else {
            return;
        };
        let Some(replica) = self.replica(None) else {
            return;
        };
        let answer = self.land(&replica, api, &session, &query, false).await;
        if answer.is_success() {
            self.shared
                .stats
                .wrong("cancelled verification: answered 2xx".into());
        }
    }

    /// Browser A verifies; browser B (or no browser) submits A's id; then A maybe submits.
    async fn replay(&mut self) {
        let person = self.adult();
        let api = self.api();
        let Some((owner, id, query)) = self.verified(person, api, false).await else {
            return;
        };
        let Some(replica) = self.replica(None) else {
            return;
        };
        let mut thief = Session::default();
        if self.rng.u32(0..4) != 0 {
            let _ = self.ticket(&replica, &mut thief).await;
        }
        let answer = if self.rng.bool() {
            self.submit(&replica, api, &thief, &id).await
        } else {
            self.land(&replica, api, &thief, &query, false).await
        };
        if answer.is_success() {
            self.shared
                .stats
                .wrong("replayed id: another session's verification answered 2xx".into());
        }
        if self.rng.bool() {
            let answer = self.submit(&replica, api, &owner, &id).await;
            self.judge(answer, person, &id, "replay owner");
        }
    }

    /// A `HEAD` of a genuine return URL never admits; the `GET` after it may.
    async fn head(&mut self) {
        let person = self.adult();
        let api = self.api();
        let Some((session, id, query)) = self.verified(person, api, false).await else {
            return;
        };
        let Some(replica) = self.replica(None) else {
            return;
        };
        let answer = self.land(&replica, api, &session, &query, true).await;
        if answer.is_success() {
            self.shared.stats.wrong("HEAD: answered 2xx".into());
        }
        if self.rng.bool() {
            let answer = self.land(&replica, api, &session, &query, false).await;
            self.judge(answer, person, &id, "GET after HEAD");
        }
    }
}

/// Adults' indices in `persons`.
pub(crate) fn adults(persons: &[Person]) -> Vec<usize> {
    persons
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == Kind::Adult)
        .map(|(i, _)| i)
        .collect()
}

/// A `reqwest::ClientBuilder`: this workspace builds reqwest with `rustls-no-provider` (ring
/// is the tree's one crypto provider), so the crate's provider is installed first.
fn http_builder() -> reqwest::ClientBuilder {
    let _ = iamport_tower::client::crypto_provider().install_default();
    reqwest::Client::builder()
}
