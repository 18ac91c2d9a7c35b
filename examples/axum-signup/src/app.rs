//! The demo's routes, mirroring PortOne's guide.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iamport_mock::html::escape;
use iamport_tower::binding::Binding;
use iamport_tower::{Certified, require_certified};
use serde_json::{Value, json};

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

/// What the demo keeps: account ids. A real app stores the person's name and so on here —
/// everything but the CI, which the unique store keeps (hashed).
#[derive(Clone, Debug)]
pub(crate) struct App {
    sdk: Sdk,
    /// `None`: PortOne's guide's unbound flow (`SIGNUP_BINDING=off`).
    binding: Option<Binding>,
    next_account: Arc<AtomicU64>,
}

impl App {
    pub(crate) fn new(sdk: Sdk, binding: Option<Binding>) -> Self {
        Self {
            sdk,
            binding,
            next_account: Arc::new(AtomicU64::new(1)),
        }
    }

    fn create_account(&self, _person: &Certified) -> String {
        format!(
            "acct_{:06}",
            self.next_account.fetch_add(1, Ordering::SeqCst)
        )
    }
}

pub(crate) fn router(app: App) -> Router {
    let bound = app.binding.is_some();
    let (popup, redirect) = if bound {
        (post(signup_bound), get(signup_redirect_bound))
    } else {
        (post(signup), get(signup_redirect))
    };
    Router::new()
        .route("/", get(index))
        .route("/ticket", get(ticket))
        .route("/certifications", popup)
        .route(
            "/certifications/redirect",
            redirect.route_layer(map_response(problem_as_page)),
        )
        .with_state(app)
}

/// The popup flow: the page POSTs `{"imp_uid": …}` once the verification finished.
/// PortOne's guide's adult check ("born 1999 or before"), one account per person, and the
/// verification must have been started by this browser session.
#[require_certified(max_birth_year = 1999, unique = true, bound = true)]
async fn signup_bound(State(app): State<App>, person: Certified) -> (StatusCode, Json<Value>) {
    account_created(&app, &person)
}

/// The same without binding (`SIGNUP_BINDING=off`): PortOne's guide as written.
#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup(State(app): State<App>, person: Certified) -> (StatusCode, Json<Value>) {
    account_created(&app, &person)
}

fn account_created(app: &App, person: &Certified) -> (StatusCode, Json<Value>) {
    let account_id = app.create_account(person);
    tracing::info!(%account_id, "account created");
    (
        StatusCode::CREATED,
        Json(json!({ "account_id": account_id, "message": "Account created" })),
    )
}

/// The redirect (mobile) flow: PortOne sends the browser to
/// `/certifications/redirect?imp_uid=…&merchant_uid=…&success=…`. Same policy; the answer is
/// a page, refusals included (see [`problem_as_page`]).
#[require_certified(max_birth_year = 1999, unique = true, bound = true)]
async fn signup_redirect_bound(
    State(app): State<App>,
    person: Certified,
) -> (StatusCode, Html<String>) {
    account_page(&app, &person)
}

/// The same without binding (`SIGNUP_BINDING=off`).
#[require_certified(max_birth_year = 1999, unique = true)]
async fn signup_redirect(State(app): State<App>, person: Certified) -> (StatusCode, Html<String>) {
    account_page(&app, &person)
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

fn account_page(app: &App, person: &Certified) -> (StatusCode, Html<String>) {
    let account_id = app.create_account(person);
    tracing::info!(%account_id, "account created");
    (
        StatusCode::CREATED,
        Html(result_page(
            "created",
            "가입 완료 — Account created",
            &format!("Your account id is {account_id}."),
        )),
    )
}

/// Plain words for each outcome, shared by the page's script and the redirect pages.
fn words(problem_type: &str, status: u16) -> (&'static str, &'static str) {
    match (problem_type.rsplit(':').next().unwrap_or(""), status) {
        ("already-registered", _) => ("registered", "이미 가입된 분입니다 — Already registered"),
        ("verification-cancelled", _) => (
            "cancelled",
            "인증이 취소되었습니다 — Verification cancelled",
        ),
        ("unbound-verification", _) => (
            "unbound",
            "이 브라우저에서 시작한 인증이 아닙니다 — Not verified in this browser",
        ),
        ("policy-not-met" | "not-certified" | "unknown-verification", _) => {
            ("refused", "가입할 수 없습니다 — Refused")
        }
        (_, 400..=499) => ("invalid", "잘못된 요청입니다 — Bad request"),
        _ => (
            "error",
            "잠시 후 다시 시도해 주세요 — Please try again shortly",
        ),
    }
}

/// Turns the guard's problem+json refusals on the redirect route into a result page with the
/// same status: a browser lands here, not a script.
async fn problem_as_page(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let problem: Value = serde_json::from_slice(&body).unwrap_or_default();
    let (kind, headline) = words(problem["type"].as_str().unwrap_or(""), status.as_u16());
    let detail = problem["detail"].as_str().unwrap_or("");
    (status, Html(result_page(kind, headline, detail))).into_response()
}

fn result_page(kind: &str, headline: &str, detail: &str) -> String {
    format!(
        r#"<!doctype html><html lang="ko"><head><meta charset="utf-8"><title>{headline}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">{STYLE}</head>
<body><main><h1>본인인증 가입 데모</h1>
<div id="outcome" class="outcome {kind}" data-kind="{kind}"><strong>{}</strong><p>{}</p></div>
<p><a href="/">← back</a></p></main></body></html>"#,
        escape(headline),
        escape(detail)
    )
}

const STYLE: &str = "<style>body{font-family:system-ui,sans-serif;background:#f4f5f8;margin:0}\
main{max-width:560px;margin:40px auto;background:#fff;padding:28px;border-radius:14px;\
box-shadow:0 2px 12px rgba(0,0,0,.06)}h1{font-size:20px}button{font-size:15px;padding:10px 16px;\
border-radius:8px;border:0;background:#3056d3;color:#fff;cursor:pointer;margin:4px 8px 4px 0}\
button.secondary{background:#5b6478}.outcome{margin-top:18px;padding:14px;border-radius:10px;\
background:#eef1f6;min-height:1.4em}.outcome.created{background:#e3f6e8}.outcome.registered,\
.outcome.refused{background:#fdecec}.outcome.cancelled{background:#fff6dd}small{color:#666}</style>";

async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
    // The ticket for this browser's next verification, and its session cookie if it has none.
    let (ticket, cookie) = match &app.binding {
        Some(binding) => {
            let (ticket, cookie) = binding.mint(&headers).into_parts();
            (Some(ticket), cookie)
        }
        None => (None, None),
    };
    const EMULATED: &str =
        "PortOne is emulated: the verification window lets you pick a test person.";
    const REAL: &str = "Real PortOne: a real identity verification runs.";
    let (script, config, note) = match &app.sdk {
        Sdk::Emulator { script_url } => (
            script_url.as_str(),
            json!({ "api": "v1", "merchantCode": "emulator" }),
            EMULATED,
        ),
        Sdk::PortOne { merchant_code } => (
            "https://cdn.iamport.kr/v1/iamport.js",
            json!({ "api": "v1", "merchantCode": merchant_code }),
            REAL,
        ),
        Sdk::EmulatorV2 { script_url } => (
            script_url.as_str(),
            json!({ "api": "v2", "storeId": "store-emulator", "channelKey": "channel-key-emulator" }),
            EMULATED,
        ),
        Sdk::PortOneV2 {
            store_id,
            channel_key,
        } => (
            "https://cdn.portone.io/v2/browser-sdk.js",
            json!({ "api": "v2", "storeId": store_id, "channelKey": channel_key }),
            REAL,
        ),
    };
    let api = config["api"].as_str().unwrap_or("v1").to_owned();
    // Exactly these attribute names: the page's script and the tests read them.
    let ticket_attribute = match (&ticket, api.as_str()) {
        (Some(t), "v2") => format!(r#" data-identity-verification-id="{}""#, escape(t)),
        (Some(t), _) => format!(r#" data-merchant-uid="{}""#, escape(t)),
        (None, _) => String::new(),
    };
    let bound = ticket.is_some();
    let mut response = Html(format!(
        r#"<!doctype html><html lang="ko"><head><meta charset="utf-8"><title>본인인증 가입 데모</title>
<meta name="viewport" content="width=device-width,initial-scale=1">{STYLE}
<script src="{}"></script></head>
<body><main id="signup"{ticket_attribute} data-bound="{bound}">
<h1>본인인증 가입 데모 — sign up with identity verification</h1>
<p>Adults born in 1999 or earlier, one account per person. <small>{} PortOne API {api}.</small></p>
<button id="popup">본인인증 후 가입 (popup)</button>
<button id="redirect" class="secondary">본인인증 후 가입 (redirect)</button>
<div id="outcome" class="outcome" data-kind="idle" aria-live="polite"></div>
</main>
<script>
const CONFIG = {};
const outcome = document.getElementById("outcome");
function show(kind, headline, detail) {{
  outcome.className = "outcome " + kind;
  outcome.dataset.kind = kind;
  outcome.innerHTML = "";
  const strong = document.createElement("strong");
  strong.textContent = headline;
  const p = document.createElement("p");
  p.textContent = detail || "";
  outcome.append(strong, p);
}}
const WORDS = {{
  409: ["registered", "이미 가입된 분입니다 — Already registered"],
  403: ["refused", "가입할 수 없습니다 — Refused"],
}};
// The popup flow's last step, as in PortOne's guide: send the id to the server.
async function signUp(body) {{
  const response = await fetch("/certifications", {{
    method: "POST",
    headers: {{ "content-type": "application/json" }},
    body: JSON.stringify(body),
  }});
  const answer = await response.json().catch(() => ({{}}));
  if (response.status === 201) {{
    show("created", "가입 완료 — Account created", "Your account id is " + answer.account_id + ".");
    return;
  }}
  const [kind, headline] = WORDS[response.status] ||
    (response.status < 500 ? ["invalid", "잘못된 요청입니다 — Bad request"]
                           : ["error", "잠시 후 다시 시도해 주세요 — Please try again shortly"]);
  show(kind, headline, answer.detail || "");
}}
function cancelled(message) {{
  show("cancelled", "인증이 취소되었습니다 — Verification cancelled", message || "");
}}
const redirectUrl = location.origin + "/certifications/redirect";
// Binding: the server minted this page's ticket (`data-merchant-uid` / v1,
// `data-identity-verification-id` / v2); each further attempt gets a fresh one.
const page = document.getElementById("signup");
let nextTicket = page.dataset.merchantUid || page.dataset.identityVerificationId || null;
async function takeTicket(fallback) {{
  if (page.dataset.bound !== "true") return fallback();
  const ticket = nextTicket || (await (await fetch("/ticket", {{ cache: "no-store" }})).json()).ticket;
  nextTicket = null;
  return ticket;
}}
if (CONFIG.api === "v2") {{
  const newId = () => takeTicket(() => "identity-verification-" + Date.now() + "-" + Math.random().toString(16).slice(2));
  document.getElementById("popup").addEventListener("click", async () => {{
    show("pending", "본인인증 중… — verifying", "");
    const rsp = await PortOne.requestIdentityVerification({{
      storeId: CONFIG.storeId, channelKey: CONFIG.channelKey, identityVerificationId: await newId(),
    }});
    if (rsp === undefined || rsp.code !== undefined) return cancelled(rsp && rsp.message);
    await signUp({{ identityVerificationId: rsp.identityVerificationId }});
  }});
  document.getElementById("redirect").addEventListener("click", async () => {{
    PortOne.requestIdentityVerification({{
      storeId: CONFIG.storeId, channelKey: CONFIG.channelKey, identityVerificationId: await newId(), redirectUrl,
    }});
  }});
}} else {{
  IMP.init(CONFIG.merchantCode);
  const merchantUid = () => takeTicket(() => "signup_" + Date.now());
  document.getElementById("popup").addEventListener("click", async () => {{
    show("pending", "본인인증 중… — verifying", "");
    IMP.certification({{ merchant_uid: await merchantUid(), popup: true }}, async (rsp) => {{
      if (!rsp.success) return cancelled(rsp.error_msg);
      await signUp({{ imp_uid: rsp.imp_uid, merchant_uid: rsp.merchant_uid }});
    }});
  }});
  document.getElementById("redirect").addEventListener("click", async () => {{
    IMP.certification({{ merchant_uid: await merchantUid(), m_redirect_url: redirectUrl }}, () => {{}});
  }});
}}
</script>
</body></html>"#,
        escape(script),
        escape(note),
        config,
    ))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
