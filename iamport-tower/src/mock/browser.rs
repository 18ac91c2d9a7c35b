//! A stand-in for PortOne's browser SDK (`IMP.init`, `IMP.certification`) and its
//! verification window, so the examples run end to end in a real browser with no account.
//!
//! - `GET /sdk/iamport.js`: the SDK. `IMP.certification(params, callback)` opens the
//!   verification page in an overlay `<iframe>` and calls `callback({success, imp_uid,
//!   merchant_uid, error_msg})` when it finishes — PortOne's popup/layer flow; with
//!   `m_redirect_url` (and `popup` not `true`) it navigates there instead and PortOne's
//!   redirect flow follows: `m_redirect_url?imp_uid=…&merchant_uid=…&success=true|false`.
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

use super::state::State;

type Shared = Arc<State>;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/sdk/iamport.js", get(sdk))
        .route("/certify", get(page).post(complete))
}

/// Minimal HTML escaping for text and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn own_origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

const SDK: &str = r#"/* PortOne browser SDK stand-in, served by the iamport-tower emulator. */
(function () {
  "use strict";
  var BASE = "__BASE__";
  var merchantCode = null;
  function query(params) {
    return Object.keys(params)
      .filter(function (k) { return params[k] !== undefined && params[k] !== null; })
      .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]); })
      .join("&");
  }
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
      var overlay = document.createElement("div");
      overlay.id = "imp-certification-overlay";
      overlay.style.cssText = "position:fixed;inset:0;background:rgba(0,0,0,.45);display:flex;" +
        "align-items:center;justify-content:center;z-index:2147483647";
      var frame = document.createElement("iframe");
      frame.id = "imp-certification-frame";
      frame.title = "PortOne identity verification (emulator)";
      frame.src = BASE + "/certify?" + query(q);
      frame.style.cssText = "width:420px;height:640px;max-height:92vh;border:0;border-radius:12px;background:#fff";
      overlay.appendChild(frame);
      document.body.appendChild(overlay);
      function onMessage(event) {
        if (event.origin !== BASE || !event.data || event.data.source !== "iamport-emulator") return;
        window.removeEventListener("message", onMessage);
        overlay.remove();
        if (typeof callback === "function") callback(event.data.response);
      }
      window.addEventListener("message", onMessage);
    }
  };
})();
"#;

async fn sdk(headers: HeaderMap) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        SDK.replace("__BASE__", &own_origin(&headers)),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Flow {
    merchant_uid: Option<String>,
    mode: Option<String>,
    redirect_url: Option<String>,
}

fn hidden_fields(flow: &Flow) -> String {
    let mut fields = String::new();
    for (name, value) in [
        ("merchant_uid", &flow.merchant_uid),
        ("mode", &flow.mode),
        ("redirect_url", &flow.redirect_url),
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
                .and_then(crate::korea::birth_date_from_unix)
                .map(|d| d.to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("{name} · {born}")
}

async fn page(AxumState(state): AxumState<Shared>, Query(flow): Query<Flow>) -> Html<String> {
    let hidden = hidden_fields(&flow);
    let mut people = String::new();
    for (id, label, person) in state.templates() {
        let title = label.unwrap_or_else(|| describe(&person));
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
<html lang="ko"><head><meta charset="utf-8"><title>본인인증 — PortOne emulator</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:0;padding:20px;background:#fff;color:#111}}
h1{{font-size:18px;margin:0 0 4px}} p{{color:#555;font-size:13px;margin:0 0 14px}}
form{{margin:0 0 8px}} button{{width:100%;text-align:left;padding:10px 12px;border:1px solid #ccd;
border-radius:8px;background:#f7f8fb;cursor:pointer;font-size:14px}} button:hover{{background:#eef}}
button small{{display:block;color:#666;font-size:12px;margin-top:2px}}
button.cancel{{background:#fff;color:#a00;border-color:#e0b4b4;text-align:center}}
</style></head>
<body><h1>휴대폰 본인인증 (emulator)</h1>
<p>PortOne is emulated: choose who is verifying. No real person is involved.</p>
{people}
<form method="post" action="/certify">{hidden}<input type="hidden" name="cancel" value="1">
<button type="submit" class="cancel" id="cancel">인증 취소 — cancel</button></form>
</body></html>"#
    ))
}

#[derive(Deserialize)]
struct Completion {
    merchant_uid: Option<String>,
    mode: Option<String>,
    redirect_url: Option<String>,
    person: Option<String>,
    cancel: Option<String>,
}

async fn complete(AxumState(state): AxumState<Shared>, Form(done): Form<Completion>) -> Response {
    let merchant_uid = done.merchant_uid.as_deref();
    let verified = match (&done.cancel, &done.person) {
        (None, Some(person)) => state.verify_as(person, merchant_uid, None),
        _ => None,
    };
    let (success, imp_uid, error_msg) = match verified {
        Some(id) => (true, id, None),
        None if done.cancel.is_some() => (
            false,
            format!(
                "imp_{:012}",
                fastrand::u64(100_000_000_000..1_000_000_000_000)
            ),
            Some("사용자가 본인인증을 취소하였습니다"),
        ),
        None => return (StatusCode::BAD_REQUEST, "unknown test person").into_response(),
    };
    if done.mode.as_deref() == Some("redirect") {
        let Some(target) = done
            .redirect_url
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        else {
            return (
                StatusCode::BAD_REQUEST,
                "m_redirect_url must be an http(s) URL",
            )
                .into_response();
        };
        let mut pairs = vec![
            ("imp_uid", imp_uid.as_str()),
            ("merchant_uid", merchant_uid.unwrap_or("")),
            ("success", if success { "true" } else { "false" }),
        ];
        if let Some(message) = error_msg {
            pairs.push(("error_msg", message));
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        let separator = if target.contains('?') { '&' } else { '?' };
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("{target}{separator}{query}"))],
        )
            .into_response();
    }
    let response = json!({
        "success": success,
        "imp_uid": imp_uid,
        "merchant_uid": merchant_uid,
        "error_msg": error_msg,
    });
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"></head><body>
<p>{}</p>
<script>parent.postMessage({{source: "iamport-emulator", response: {response}}}, "*");</script>
</body></html>"#,
        if success {
            "인증이 완료되었습니다."
        } else {
            "인증이 취소되었습니다."
        }
    ))
    .into_response()
}
