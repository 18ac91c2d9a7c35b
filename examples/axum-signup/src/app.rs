//! The demo's routes, mirroring PortOne's guide.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iamport_tower::binding::{Binding, DEFAULT_COOKIE_NAME, DEFAULT_INSECURE_COOKIE_NAME};
use iamport_tower::{CertificationLayer, Certified, Language, require_certified};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

use crate::pages::{self, Welcome, mask_name};

/// Which browser SDK the page loads.
#[derive(Clone, Debug)]
pub(crate) enum Sdk {
    /// The emulator's v1 stand-in (`IMP.certification`).
    Emulator { script_url: String },
    /// PortOne's real v1 SDK, initialised with the merchant code.
    PortOne { merchant_code: String },
    /// The emulator's v2 stand-in (`PortOne.requestIdentityVerification`).
    EmulatorV2 { script_url: String },
    /// PortOne's real v2 SDK, with the store id and channel key.
    PortOneV2 {
        store_id: String,
        channel_key: String,
    },
}

/// Where PortOne's redirect flow returns to.
const REDIRECT_PATH: &str = "/certifications/redirect";

/// How long a result page can be seen (and reloaded).
const RESULT_LIFETIME: Duration = Duration::from_secs(600);

/// At most this many results are kept; the oldest go first.
const RESULT_CAPACITY: usize = 10_000;

/// Where the demo keeps its accounts.
#[derive(Clone, Debug)]
pub(crate) enum Accounts {
    /// In this process (ids only; gone on restart).
    Memory(Arc<AtomicU64>),
    /// In PostgreSQL (`DATABASE_URL`): each account and its person's key in one transaction.
    Postgres(sqlx::PgPool),
}

/// The demo's accounts table. A real app keeps the person's name and so on here —
/// everything but the CI, whose keyed hash `record_account` writes beside it.
pub(crate) const ACCOUNTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS demo_accounts (
    id         BIGSERIAL PRIMARY KEY,
    birth_year INTEGER,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// The cookie that shows a result page to the browser it belongs to (with `__Host-` when
/// cookies are `Secure`).
const RESULT_COOKIE: &str = "signup_result";

/// What the demo keeps: accounts, and the redirect flow's results.
#[derive(Clone, Debug)]
pub(crate) struct App {
    sdk: Sdk,
    /// `None`: PortOne's guide's unbound flow (`SIGNUP_BINDING=off`).
    binding: Option<Binding>,
    accounts: Accounts,
    results: Arc<Results>,
    metrics: Option<PrometheusHandle>,
    /// Whether the demo's own cookies are `__Host-` and `Secure` (not plain http on loopback).
    secure_cookies: bool,
    /// Whether the hint for API clients (`SIGNUP_BINDING=off`) was logged.
    hinted: Arc<AtomicBool>,
}

impl App {
    pub(crate) fn new(
        sdk: Sdk,
        binding: Option<Binding>,
        accounts: Accounts,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        Self {
            sdk,
            binding,
            accounts,
            results: Arc::default(),
            metrics,
            secure_cookies: false,
            hinted: Arc::default(),
        }
    }

    /// Makes the demo's own cookie (the result page's) `__Host-` and `Secure`.
    pub(crate) fn secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// Creates the account. On PostgreSQL the person's key is written in the account's own
    /// transaction: a crash at any instant leaves both or neither, so nobody who got a 201
    /// can sign up again — before or after any reservation's lease ends.
    async fn create_account(&self, person: &Certified) -> Result<Welcome, Response> {
        let id = match &self.accounts {
            Accounts::Memory(next) => next.fetch_add(1, Ordering::SeqCst) + 1,
            Accounts::Postgres(pool) => {
                let unavailable = |error: sqlx::Error| {
                    tracing::warn!(error = ?error.to_string(), "could not create an account");
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                };
                let mut tx = pool.begin().await.map_err(unavailable)?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO demo_accounts (birth_year) VALUES ($1) RETURNING id",
                )
                .bind(person.birth_date.map(|d| i32::from(d.year())))
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
                // 409 if the person has an account already (`RecordError` is that response).
                person
                    .record_account(&mut tx)
                    .await
                    .map_err(IntoResponse::into_response)?;
                tx.commit().await.map_err(unavailable)?;
                id as u64
            }
        };
        let account_id = format!("acct_{id:06}");
        tracing::info!(%account_id, "account created");
        // What the person sees of themselves: a masked name and the birth year.
        Ok(Welcome {
            account_id,
            name: person.name.as_deref().map(mask_name),
            birth_year: person.birth_date.map(|d| d.year()),
        })
    }
}

/// The demo's router, with `layer` in front of it and, in front of that, the redirect flow's
/// Post/Redirect/Get: the layer settles "one account per person" by the handler's own
/// status (2xx commits), and only then is the answer turned into a `303 See Other`.
pub(crate) fn router(app: App, layer: CertificationLayer) -> Router {
    let bound = app.binding.is_some();
    let (popup, redirect) = if bound {
        (post(signup_bound), get(signup_redirect_bound))
    } else {
        (post(signup), get(signup_redirect))
    };
    Router::new()
        .route("/", get(index))
        .route("/ticket", get(ticket))
        .route("/metrics", get(metrics))
        .route("/favicon.ico", get(favicon))
        .route("/certifications", popup)
        .route(REDIRECT_PATH, redirect)
        .route("/certifications/result/{id}", get(result))
        .with_state(app.clone())
        .layer(layer)
        .layer(from_fn_with_state(app.clone(), see_other))
        .layer(from_fn_with_state(app, hint_binding_off))
}

/// Binding refuses a signup from a client that never opened the page (curl, a script): it
/// has no browser session. Says once per process, at WARN, how such clients can be let in.
async fn hint_binding_off(State(app): State<App>, request: Request, next: Next) -> Response {
    let signup = matches!(request.uri().path(), "/certifications" | REDIRECT_PATH);
    let sessionless = app.binding.is_some()
        && signup
        && cookie(request.headers(), DEFAULT_COOKIE_NAME).is_none()
        && cookie(request.headers(), DEFAULT_INSECURE_COOKIE_NAME).is_none();
    let response = next.run(request).await;
    if sessionless
        && response.status() == StatusCode::FORBIDDEN
        && !app.hinted.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            "refused a signup without a browser session (403): binding is on, so only the \
             browser that opened the page can sign up. API clients that post a raw imp_uid \
             (curl, scripts) can run the demo with SIGNUP_BINDING=off"
        );
    }
    response
}

/// The popup flow: the page POSTs `{"imp_uid": …}` once the verification finished.
/// PortOne's guide's adult check ("born 1999 or before"), one account per person, and the
/// verification must have been started by this browser session.
#[require_certified(max_birth_year = 1999, unique = true, bound = true)]
async fn signup_bound(State(app): State<App>, person: Certified) -> Response {
    account_created(&app, &person).await
}

/// The same without binding (`SIGNUP_BINDING=off`): PortOne's guide as written.
#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup(State(app): State<App>, person: Certified) -> Response {
    account_created(&app, &person).await
}

/// The redirect (mobile) flow: PortOne sends the browser to
/// `/certifications/redirect?imp_uid=…&merchant_uid=…&success=…`. Same policy and the same
/// answer as the popup flow; [`see_other`] turns it into a redirect to a result page.
#[require_certified(max_birth_year = 1999, unique = true, bound = true)]
async fn signup_redirect_bound(State(app): State<App>, person: Certified) -> Response {
    account_created(&app, &person).await
}

/// The same without binding (`SIGNUP_BINDING=off`).
#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup_redirect(State(app): State<App>, person: Certified) -> Response {
    account_created(&app, &person).await
}

async fn account_created(app: &App, person: &Certified) -> Response {
    match app.create_account(person).await {
        Ok(welcome) => (StatusCode::CREATED, Json(welcome.to_json())).into_response(),
        Err(refused) => refused,
    }
}

/// One outcome of the redirect flow, kept for its result page.
#[derive(Debug, Clone)]
struct Outcome {
    status: StatusCode,
    kind: &'static str,
    /// The language of the browser that came back from PortOne: the result page's.
    language: Language,
    /// The refusal's detail, in that language (the library chose it from the same
    /// `Accept-Language`).
    detail: String,
    welcome: Option<Welcome>,
    /// The value of the result cookie of the browser that came back from PortOne: only it
    /// sees the page.
    owner: String,
}

/// Outcomes by random id, for [`RESULT_LIFETIME`].
#[derive(Debug, Default)]
struct Results(Mutex<HashMap<String, (Instant, Outcome)>>);

/// 128 random bits, in hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of the request's cookie `name`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

impl Results {
    fn put(&self, outcome: Outcome) -> String {
        let id = random_hex();
        let mut entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        entries.retain(|_, (at, _)| now.duration_since(*at) < RESULT_LIFETIME);
        if entries.len() >= RESULT_CAPACITY
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(id.clone(), (now, outcome));
        id
    }

    /// The outcome `id`, to the browser whose result cookie is `owner`.
    fn get(&self, id: &str, owner: Option<&str>) -> Option<Outcome> {
        let entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, outcome) = entries.get(id)?;
        (at.elapsed() < RESULT_LIFETIME && owner == Some(outcome.owner.as_str()))
            .then(|| outcome.clone())
    }
}

/// Post/Redirect/Get for PortOne's redirect flow: the signup happens once, on PortOne's
/// redirect, and the browser is sent on to a result page. Reloading that page, or coming
/// Back to it, shows the outcome again without signing up again. The result page answers
/// with the outcome's own status (201, 409, 403, 400, …), so a refusal or a cancellation is
/// still a 4xx to whatever reads it. The page is the browser's that came back from PortOne:
/// the redirect sets a random cookie, and the page shows the outcome only to a request that
/// carries it — the link opened anywhere else is a "no such result" page, nothing personal.
async fn see_other(State(app): State<App>, request: Request, next: Next) -> Response {
    if request.uri().path() != REDIRECT_PATH || request.method() != Method::GET {
        return next.run(request).await;
    }
    let language = Language::from_headers(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
    let owner = random_hex();
    let outcome = match Welcome::from_json(&answer) {
        Some(welcome) if status.is_success() => Outcome {
            status,
            kind: "created",
            language,
            detail: String::new(),
            welcome: Some(welcome),
            owner: owner.clone(),
        },
        _ => Outcome {
            status,
            kind: pages::kind_of(answer["type"].as_str().unwrap_or(""), status.as_u16()),
            language,
            detail: answer["detail"].as_str().unwrap_or("").to_owned(),
            welcome: None,
            owner: owner.clone(),
        },
    };
    let id = app.results.put(outcome);
    let mut cookie = format!(
        "{}={owner}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
        app.result_cookie(),
        RESULT_LIFETIME.as_secs()
    );
    if app.secure_cookies {
        cookie.push_str("; Secure");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, format!("/certifications/result/{id}")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

impl App {
    fn result_cookie(&self) -> String {
        if self.secure_cookies {
            format!("__Host-{RESULT_COOKIE}")
        } else {
            RESULT_COOKIE.to_owned()
        }
    }
}

/// The redirect flow's result page, with the outcome's status, in the language of the
/// browser it belongs to — and only there (see [`see_other`]).
async fn result(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let owner = cookie(&headers, &app.result_cookie());
    let (status, page) = match app.results.get(&id, owner) {
        Some(outcome) => {
            let language = outcome.language;
            let detail = match &outcome.welcome {
                Some(welcome) => welcome.sentence(language),
                None => outcome.detail,
            };
            let headline = pages::headline(outcome.kind, language);
            let page = pages::result_page(language, outcome.kind, headline, &detail);
            (outcome.status, page)
        }
        None => {
            let language = Language::from_headers(&headers);
            let words = pages::words(language);
            let page = pages::result_page(language, "expired", words.expired, words.expired_detail);
            (StatusCode::NOT_FOUND, page)
        }
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

/// A fresh ticket for another attempt from the same page (a second click after a cancel):
/// PortOne v2 wants a new `identityVerificationId` per verification.
async fn ticket(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(binding) = &app.binding else {
        return (StatusCode::NOT_FOUND, "binding is off").into_response();
    };
    let (ticket, cookie) = binding.mint(&headers).into_parts();
    let mut response = (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "ticket": ticket })),
    )
        .into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /favicon.ico`: the pages link their icon as a data URL; this answers browsers and
/// tools that ask anyway.
async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        iamport_mock::html::FAVICON_SVG,
    )
        .into_response()
}

/// `GET /metrics`: Prometheus' text format.
async fn metrics(State(app): State<App>) -> Response {
    match &app.metrics {
        Some(handle) => crate::prometheus::render(handle).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are off").into_response(),
    }
}

async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
    let language = Language::from_headers(&headers);
    // The ticket for this browser's next verification, and its session cookie if it has none.
    let (ticket, cookie) = match &app.binding {
        Some(binding) => {
            let (ticket, cookie) = binding.mint(&headers).into_parts();
            (Some(ticket), cookie)
        }
        None => (None, None),
    };
    let (script, config, emulated) = match &app.sdk {
        Sdk::Emulator { script_url } => (
            script_url.as_str(),
            json!({ "api": "v1", "merchantCode": "emulator" }),
            true,
        ),
        Sdk::PortOne { merchant_code } => (
            "https://cdn.iamport.kr/v1/iamport.js",
            json!({ "api": "v1", "merchantCode": merchant_code }),
            false,
        ),
        Sdk::EmulatorV2 { script_url } => (
            script_url.as_str(),
            json!({ "api": "v2", "storeId": "store-emulator", "channelKey": "channel-key-emulator" }),
            true,
        ),
        Sdk::PortOneV2 {
            store_id,
            channel_key,
        } => (
            "https://cdn.portone.io/v2/browser-sdk.js",
            json!({ "api": "v2", "storeId": store_id, "channelKey": channel_key }),
            false,
        ),
    };
    // Exactly these attribute names: the page's script and the tests read them.
    let ticket_attribute = match (&ticket, config["api"].as_str()) {
        (Some(t), Some("v2")) => format!(
            r#" data-identity-verification-id="{}""#,
            iamport_mock::html::escape(t)
        ),
        (Some(t), _) => format!(r#" data-merchant-uid="{}""#, iamport_mock::html::escape(t)),
        (None, _) => String::new(),
    };
    let page = pages::index_page(
        language,
        script,
        emulated,
        config,
        &ticket_attribute,
        ticket.is_some(),
    );
    let mut response = (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::VARY, "accept-language"),
        ],
        Html(page),
    )
        .into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
