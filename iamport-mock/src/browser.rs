//! A stand-in for PortOne's browser SDK (`IMP.init`, `IMP.certification`) and its
//! verification window, so the examples run end to end in a real browser with no account.
//!
//! - `GET /sdk/iamport.js`: the SDK. `IMP.certification(params, callback)` opens the
//!   verification page in an overlay `<iframe>` and calls `callback({success, imp_uid,
//!   merchant_uid, error_msg})` when it finishes — PortOne's popup/layer flow; with
//!   `m_redirect_url` (and `popup` not `true`) it navigates there instead and PortOne's
//!   redirect flow follows: `m_redirect_url?imp_uid=…&merchant_uid=…&success=true|false`.
//! - `GET /sdk/portone-v2.js`: the v2 SDK, `PortOne.requestIdentityVerification(params)`,
//!   with the merchant's own `identityVerificationId` (and optional `customer.id`,
//!   `customData`, `channelKey`; `storeId` and `bypass` are accepted and ignored); a Promise
//!   of the browser SDK's `IdentityVerificationResponse` — `transactionType`,
//!   `identityVerificationId`, `identityVerificationTxId`, plus `code`, `message`, `pgCode`
//!   and `pgMessage` when cancelled — or a redirect to `redirectUrl` with the same fields. Opening the window
//!   records a `READY` verification, as PortOne does.
//! - `GET /certify`: the verification page: pick a test person, or cancel.
//! - `POST /certify`: records a fresh verification of the chosen person (a new `imp_uid`,
//!   the same CI) and reports it back to the page or the redirect URL.

use std::sync::Arc;

use axum::Form;
use axum::Router;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{State, V2Meta};

type Shared = Arc<State>;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/sdk/iamport.js", get(sdk))
        .route("/sdk/portone-v2.js", get(sdk_v2))
        .route("/certify", get(page).post(complete))
}

use crate::html::{escape, favicon_link};
use iamport_tower::Language;

/// The verification window's own words, in one language.
struct Words {
    title: &'static str,
    heading: &'static str,
    intro: &'static str,
    cancel: &'static str,
    finished: &'static str,
}

fn words(language: Language) -> &'static Words {
    match language {
        Language::Korean => &Words {
            title: "본인인증 (PortOne 에뮬레이터)",
            heading: "휴대폰 본인인증 (에뮬레이터)",
            intro: "PortOne을 흉내 내는 테스트 화면입니다. 본인인증을 진행할 테스트용 인물을 고르세요. 실제 개인정보는 쓰이지 않습니다.",
            cancel: "인증 취소",
            finished: "인증 절차가 끝났습니다.",
        },
        _ => &Words {
            title: "Identity verification (PortOne emulator)",
            heading: "Mobile identity verification (emulator)",
            intro: "PortOne is emulated: choose who is verifying. No real person is involved.",
            cancel: "Cancel",
            finished: "The verification is finished.",
        },
    }
}

fn own_origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// What both SDK stand-ins share: query strings, and the overlay `<iframe>` that shows the
/// verification page and reports back through `postMessage`.
const SDK_COMMON: &str = r#"
  function query(params) {
    return Object.keys(params)
      .filter(function (k) { return params[k] !== undefined && params[k] !== null; })
      .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]); })
      .join("&");
  }
  // The verification window: an overlay with the page in an <iframe>. Escape, the close
  // button or a click outside it closes it as a cancellation (what closing PortOne's window
  // does); the page reports back through postMessage.
  function openOverlay(q, done, cancelled) {
    var overlay = document.createElement("div");
    overlay.id = "imp-certification-overlay";
    overlay.style.cssText = "position:fixed;inset:0;background:rgba(0,0,0,.45);display:flex;" +
      "align-items:center;justify-content:center;z-index:2147483647";
    var box = document.createElement("div");
    box.style.cssText = "position:relative";
    var frame = document.createElement("iframe");
    frame.id = "imp-certification-frame";
    frame.title = /^ko\b/i.test(navigator.language || "") ? "PortOne 본인인증 (에뮬레이터)"
      : "PortOne identity verification (emulator)";
    frame.src = BASE + "/certify?" + query(q);
    frame.style.cssText = "width:420px;height:640px;max-height:92vh;border:0;border-radius:12px;background:#fff;display:block";
    var close = document.createElement("button");
    close.id = "imp-certification-close";
    close.type = "button";
    // The browser's language, as the verification page's (Accept-Language).
    var korean = /^ko\b/i.test(navigator.language || "");
    close.setAttribute("aria-label", korean ? "닫기" : "Close");
    close.title = korean ? "닫기 (Esc)" : "Close (Esc)";
    close.textContent = "\u00d7";
    close.style.cssText = "position:absolute;top:-14px;right:-14px;width:32px;height:32px;border-radius:16px;" +
      "border:0;background:#fff;color:#333;font-size:20px;line-height:32px;cursor:pointer;" +
      "box-shadow:0 1px 6px rgba(0,0,0,.3);padding:0";
    box.appendChild(frame);
    box.appendChild(close);
    overlay.appendChild(box);
    document.body.appendChild(overlay);
    var finished = false;
    function finish(response) {
      if (finished) return;
      finished = true;
      window.removeEventListener("message", onMessage);
      document.removeEventListener("keydown", onKey, true);
      overlay.remove();
      done(response);
    }
    function onMessage(event) {
      if (event.origin !== BASE || !event.data || event.data.source !== "iamport-emulator") return;
      if (event.data.type === "close") return finish(cancelled());
      finish(event.data.response);
    }
    function onKey(event) {
      if (event.key === "Escape") { event.preventDefault(); finish(cancelled()); }
    }
    close.addEventListener("click", function () { finish(cancelled()); });
    overlay.addEventListener("click", function (event) { if (event.target === overlay) finish(cancelled()); });
    window.addEventListener("message", onMessage);
    document.addEventListener("keydown", onKey, true);
    close.focus();
  }
"#;

/// v1: `IMP.init(code)`, `IMP.certification(params, callback)`.
const SDK_V1: &str = r#"
  var merchantCode = null;
  window.IMP = {
    init: function (code) { merchantCode = code; },
    certification: function (params, callback) {
      params = params || {};
      var q = { merchant_uid: params.merchant_uid || "mid_" + Date.now(), merchant: merchantCode };
      if (params.m_redirect_url && params.popup !== true) {
        q.mode = "redirect";
        q.redirect_url = params.m_redirect_url;
        window.location.href = BASE + "/certify?" + query(q);
        return;
      }
      q.mode = "iframe";
      openOverlay(q, function (response) {
        if (typeof callback === "function") callback(response);
      }, function () {
        return { success: false, imp_uid: null, merchant_uid: q.merchant_uid,
                 error_msg: "사용자가 본인인증을 취소하였습니다" };
      });
    }
  };
"#;

/// v2: `PortOne.requestIdentityVerification({ identityVerificationId, redirectUrl, customer,
/// customData, channelKey, … })`: a Promise of `{ transactionType, identityVerificationId,
/// identityVerificationTxId }`, plus `code` and `message` when cancelled; with `redirectUrl`
/// the browser goes there instead, with the same fields in the query string.
const SDK_V2: &str = r#"
  window.PortOne = {
    requestIdentityVerification: function (params) {
      params = params || {};
      var customData = params.customData;
      if (customData !== undefined && customData !== null && typeof customData !== "string") {
        customData = JSON.stringify(customData);
      }
      var q = {
        api: "v2",
        identity_verification_id: params.identityVerificationId,
        customer_id: params.customer && params.customer.id,
        custom_data: customData,
        channel_key: params.channelKey
      };
      if (params.redirectUrl) {
        q.mode = "redirect";
        q.redirect_url = params.redirectUrl;
        window.location.href = BASE + "/certify?" + query(q);
        return new Promise(function () {});
      }
      q.mode = "iframe";
      return new Promise(function (resolve) {
        openOverlay(q, resolve, function () {
          return { transactionType: "IDENTITY_VERIFICATION",
                   identityVerificationId: params.identityVerificationId,
                   code: "IDENTITY_VERIFICATION_CANCELLED",
                   message: "사용자가 본인인증을 취소하였습니다" };
        });
      });
    }
  };
"#;

fn script(sdk: &str, headers: &HeaderMap) -> Response {
    let source = format!(
        "/* PortOne browser SDK stand-in, served by the iamport-tower emulator. */\n\
         (function () {{\n  \"use strict\";\n  var BASE = {};\n{SDK_COMMON}{sdk}}})();\n",
        Value::from(own_origin(headers))
    );
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        source,
    )
        .into_response()
}

async fn sdk(headers: HeaderMap) -> Response {
    script(SDK_V1, &headers)
}

async fn sdk_v2(headers: HeaderMap) -> Response {
    script(SDK_V2, &headers)
}

#[derive(Deserialize)]
struct Flow {
    merchant_uid: Option<String>,
    mode: Option<String>,
    redirect_url: Option<String>,
    api: Option<String>,
    identity_verification_id: Option<String>,
    customer_id: Option<String>,
    custom_data: Option<String>,
    channel_key: Option<String>,
}

impl Flow {
    /// What the v2 API keeps of the browser call.
    fn v2_meta(&self, now: i64) -> V2Meta {
        V2Meta {
            version: "V2",
            customer_id: self.customer_id.clone().filter(|v| !v.is_empty()),
            custom_data: self.custom_data.clone(),
            channel_key: self.channel_key.clone().filter(|v| !v.is_empty()),
            tx_id: super::state::new_tx_id(),
            requested_at: now,
        }
    }
}

fn hidden_fields(flow: &Flow) -> String {
    let mut fields = String::new();
    for (name, value) in [
        ("merchant_uid", &flow.merchant_uid),
        ("mode", &flow.mode),
        ("redirect_url", &flow.redirect_url),
        ("api", &flow.api),
        ("identity_verification_id", &flow.identity_verification_id),
        ("customer_id", &flow.customer_id),
        ("custom_data", &flow.custom_data),
        ("channel_key", &flow.channel_key),
    ] {
        if let Some(value) = value {
            fields.push_str(&format!(
                r#"<input type="hidden" name="{name}" value="{}">"#,
                escape(value)
            ));
        }
    }
    fields
}

fn describe(person: &Value) -> String {
    let name = person["name"].as_str().unwrap_or("?");
    let born = person["birthday"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            person["birth"]
                .as_i64()
                .and_then(iamport_tower::korea::birth_date_from_unix)
                .map(|d| d.to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("{name} · {born}")
}

/// The verification window, in the browser's language (`Accept-Language`: Korean or
/// English, as the library's refusals).
async fn page(
    AxumState(state): AxumState<Shared>,
    headers: HeaderMap,
    Query(flow): Query<Flow>,
) -> Html<String> {
    let language = Language::from_headers(&headers);
    let words = words(language);
    if flow.api.as_deref() == Some("v2")
        && let Some(id) = flow
            .identity_verification_id
            .as_deref()
            .filter(|id| !id.is_empty())
    {
        state.request_v2(id, flow.v2_meta(state.now()));
    }
    let hidden = hidden_fields(&flow);
    let mut people = String::new();
    for (id, label, person) in state.templates() {
        let title = label.map_or_else(
            || describe(&person),
            |label| label.in_language(language).to_owned(),
        );
        people.push_str(&format!(
            r#"<form method="post" action="/certify">{hidden}<input type="hidden" name="person" value="{id}">
<button type="submit" class="person" data-person="{id}"><strong>{}</strong><small>{}</small></button></form>
"#,
            escape(&title),
            escape(&describe(&person)),
            id = escape(&id),
        ));
    }
    Html(format!(
        r#"<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">{icon}
<style>
body{{font-family:system-ui,'Noto Sans KR','NanumGothic',sans-serif;margin:0;padding:20px;background:#fff;color:#111}}
h1{{font-size:18px;margin:0 0 4px}} p{{color:#555;font-size:13px;margin:0 0 14px}}
form{{margin:0 0 8px}} button{{width:100%;text-align:left;padding:10px 12px;border:1px solid #ccd;
border-radius:8px;background:#f7f8fb;cursor:pointer;font-size:14px}} button:hover{{background:#eef}}
button small{{display:block;color:#666;font-size:12px;margin-top:2px}}
button.cancel{{background:#fff;color:#a00;border-color:#e0b4b4;text-align:center}}
</style></head>
<body><h1>{heading}</h1>
<p>{intro}</p>
{people}
<form method="post" action="/certify">{hidden}<input type="hidden" name="cancel" value="1">
<button type="submit" class="cancel" id="cancel">{cancel}</button></form>
<script>
// Escape closes the window, as it does where the SDK opened it (focus may be in here).
document.addEventListener("keydown", function (event) {{
  if (event.key === "Escape" && window.parent !== window) {{
    window.parent.postMessage({{ source: "iamport-emulator", type: "close" }}, "*");
  }}
}});
</script>
</body></html>"#,
        lang = language.tag(),
        title = escape(words.title),
        icon = favicon_link(),
        heading = escape(words.heading),
        intro = escape(words.intro),
        cancel = escape(words.cancel),
    ))
}

#[derive(Deserialize)]
struct Completion {
    #[serde(flatten)]
    flow: Flow,
    person: Option<String>,
    cancel: Option<String>,
}

/// Where the finished verification goes: back into the page (`postMessage` to the SDK) or to
/// the redirect URL with these query pairs.
fn report(
    mode: Option<&str>,
    redirect_url: Option<String>,
    pairs: &[(&str, &str)],
    response: &Value,
    language: Language,
) -> Response {
    if mode == Some("redirect") {
        let Some(target) =
            redirect_url.filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        else {
            return (
                StatusCode::BAD_REQUEST,
                "the redirect URL must be an http(s) URL",
            )
                .into_response();
        };
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        let separator = if target.contains('?') { '&' } else { '?' };
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("{target}{separator}{query}"))],
        )
            .into_response();
    }
    Html(format!(
        r#"<!doctype html><html lang="{lang}"><head><meta charset="utf-8">{icon}</head><body>
<p>{finished}</p>
<script>parent.postMessage({{source: "iamport-emulator", response: {response}}}, "*");</script>
</body></html>"#,
        lang = language.tag(),
        icon = favicon_link(),
        finished = escape(words(language).finished),
    ))
    .into_response()
}

/// v2: the merchant chose the id; a cancellation leaves a FAILED verification under it.
fn complete_v2(state: &State, done: Completion, language: Language) -> Response {
    let Some(id) = done
        .flow
        .identity_verification_id
        .clone()
        .filter(|id| !id.is_empty())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "identityVerificationId is required",
        )
            .into_response();
    };
    let meta = done.flow.v2_meta(state.now());
    let verified = match (&done.cancel, &done.person) {
        (None, Some(person)) => state.verify_as(person, None, Some((&id, meta.clone()))),
        _ => None,
    };
    let cancelled = if verified.is_some() {
        None
    } else if done.cancel.is_some() {
        state.request_v2(&id, meta.clone());
        state.set_pending(&id, super::state::PendingStatus::Failed);
        Some((
            "IDENTITY_VERIFICATION_CANCELLED",
            "사용자가 본인인증을 취소하였습니다",
        ))
    } else {
        return (StatusCode::BAD_REQUEST, "unknown test person").into_response();
    };
    let tx_id = state.v2_meta(&id).map_or(meta.tx_id, |m| m.tx_id);
    let mut pairs = vec![
        ("transactionType", "IDENTITY_VERIFICATION"),
        ("identityVerificationId", id.as_str()),
        ("identityVerificationTxId", tx_id.as_str()),
    ];
    let mut response = json!({
        "transactionType": "IDENTITY_VERIFICATION",
        "identityVerificationId": id,
        "identityVerificationTxId": tx_id,
    });
    if let Some((code, message)) = cancelled {
        let (pg_code, pg_message) = (super::v2::CANCEL_PG_CODE, super::v2::CANCEL_PG_MESSAGE);
        pairs.extend([
            ("code", code),
            ("message", message),
            ("pgCode", pg_code),
            ("pgMessage", pg_message),
        ]);
        response["code"] = Value::from(code);
        response["message"] = Value::from(message);
        response["pgCode"] = Value::from(pg_code);
        response["pgMessage"] = Value::from(pg_message);
    }
    report(
        done.flow.mode.as_deref(),
        done.flow.redirect_url.clone(),
        &pairs,
        &response,
        language,
    )
}

async fn complete(
    AxumState(state): AxumState<Shared>,
    headers: HeaderMap,
    Form(done): Form<Completion>,
) -> Response {
    let language = Language::from_headers(&headers);
    if done.flow.api.as_deref() == Some("v2") {
        return complete_v2(&state, done, language);
    }
    let merchant_uid = done.flow.merchant_uid.clone();
    let verified = match (&done.cancel, &done.person) {
        (None, Some(person)) => state.verify_as(person, merchant_uid.as_deref(), None),
        _ => None,
    };
    let (success, imp_uid, error_msg) = match verified {
        Some(id) => (true, id, None),
        None if done.cancel.is_some() => (
            false,
            super::state::new_imp_uid(),
            Some("사용자가 본인인증을 취소하였습니다"),
        ),
        None => return (StatusCode::BAD_REQUEST, "unknown test person").into_response(),
    };
    let merchant = merchant_uid.as_deref().unwrap_or("");
    let mut pairs = vec![
        ("imp_uid", imp_uid.as_str()),
        ("merchant_uid", merchant),
        ("success", if success { "true" } else { "false" }),
    ];
    if let Some(message) = error_msg {
        pairs.push(("error_msg", message));
    }
    let response = json!({
        "success": success,
        "imp_uid": imp_uid,
        "merchant_uid": merchant_uid,
        "error_msg": error_msg,
    });
    report(
        done.flow.mode.as_deref(),
        done.flow.redirect_url,
        &pairs,
        &response,
        language,
    )
}
