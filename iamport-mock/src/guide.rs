//! What an app needs to talk to a running emulator: the variables for v1 and v2, the
//! browser SDK stand-ins, the sample people. The binary prints it; `GET /` serves it.

use crate::html::{escape, favicon_link};
use crate::persons::SAMPLE_GUIDE;
use crate::state::State;

/// The merchant code and channel key the emulator's browser SDKs accept (any value works).
const EMULATOR_MERCHANT_CODE: &str = "imp00000000";
const EMULATOR_STORE_ID: &str = "store-emulator";
const EMULATOR_CHANNEL_KEY: &str = "channel-key-emulator";

/// `(name, value, note)` for every variable an app needs, v1 then v2.
pub(crate) fn variables(state: &State, url: &str) -> Vec<(&'static str, String, &'static str)> {
    let store = state.v2_store_id.clone();
    vec![
        ("IMP_KEY", state.key.clone(), "v1 REST API key"),
        ("IMP_SECRET", state.secret.clone(), "v1 REST API secret"),
        ("IAMPORT_API_URL", url.to_owned(), "v1 API base URL"),
        (
            "IMP_CODE",
            EMULATOR_MERCHANT_CODE.to_owned(),
            "v1 merchant code for IMP.init (any value here)",
        ),
        (
            "PORTONE_API_SECRET",
            state.v2_secret.clone(),
            "v2 API secret",
        ),
        ("PORTONE_API_URL", url.to_owned(), "v2 API base URL"),
        (
            "PORTONE_STORE_ID",
            store
                .clone()
                .unwrap_or_else(|| EMULATOR_STORE_ID.to_owned()),
            if store.is_some() {
                "v2 store id (--v2-store-id: another one is 403 FORBIDDEN)"
            } else {
                "v2 store id (any value here; --v2-store-id makes one required)"
            },
        ),
        (
            "PORTONE_CHANNEL_KEY",
            EMULATOR_CHANNEL_KEY.to_owned(),
            "v2 channel key for the browser SDK (any value here)",
        ),
    ]
}

/// The banner the binary prints once it listens.
pub(crate) fn banner(state: &State, url: &str) -> String {
    let mut out = format!("PortOne emulator listening on {url}  (open it for this guide)\n\n");
    let variables = variables(state, url);
    for (title, range) in [
        ("PortOne v1 (IamportClient::from_env):", 0..4),
        ("PortOne v2 (PortOneClient::from_env):", 4..8),
    ] {
        out.push_str(title);
        out.push('\n');
        for (name, value, note) in &variables[range] {
            out.push_str(&format!("  export {name}={value}  # {note}\n"));
        }
    }
    out.push_str(&format!(
        "Browser SDK stand-ins: {url}/sdk/iamport.js (v1), {url}/sdk/portone-v2.js (v2)\n\n"
    ));
    out.push_str(&people_text());
    out
}

/// The sample people, one a line.
pub(crate) fn people_text() -> String {
    let mut out =
        String::from("Sample people (imp_uid; v2 takes the same ids as identityVerificationId):\n");
    for (id, shows) in SAMPLE_GUIDE {
        out.push_str(&format!("  {id}  {shows}\n"));
    }
    out
}

/// `` `x` `` → `<code>x</code>`: the guide's sentences name code as Markdown does; the page
/// shows no backticks.
fn code_spans(escaped: &str) -> String {
    let mut out = String::new();
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// `GET /`: the same, as a page.
pub(crate) fn index_page(state: &State, url: &str) -> String {
    let mut rows = String::new();
    for (name, value, note) in variables(state, url) {
        rows.push_str(&format!(
            "<tr><th>{}</th><td><code>{}</code></td><td>{}</td></tr>\n",
            escape(name),
            escape(&value),
            escape(note)
        ));
    }
    let mut people = String::new();
    for (id, shows) in SAMPLE_GUIDE {
        people.push_str(&format!(
            "<li><code>{}</code> — {}</li>\n",
            escape(id),
            code_spans(&escape(shows))
        ));
    }
    let url = escape(url);
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>PortOne emulator (iamport-mock)</title>{icon}
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{{font-family:system-ui,'Noto Sans KR','NanumGothic',sans-serif;max-width:900px;margin:32px auto;
padding:0 16px;color:#111}}table{{border-collapse:collapse}}th,td{{text-align:left;padding:4px 10px;
border-bottom:1px solid #eee;font-size:14px}}code{{background:#f4f5f8;padding:1px 4px;border-radius:4px}}
li{{margin:4px 0}}</style></head><body>
<h1>PortOne emulator</h1>
<p>PortOne's v1 and v2 identity-verification APIs at <code>{url}</code>, for tests and demos. No real
person is involved.</p>
<h2>Variables for your app</h2>
<table>
{rows}</table>
<h2>Browser SDK stand-ins</h2>
<ul><li><code>{url}/sdk/iamport.js</code> — v1 (<code>IMP.init</code>, <code>IMP.certification</code>)</li>
<li><code>{url}/sdk/portone-v2.js</code> — v2 (<code>PortOne.requestIdentityVerification</code>)</li>
<li><a href="/certify?mode=iframe">the verification window</a> (pick a person or cancel)</li></ul>
<h2>Sample people</h2>
<p>By <code>imp_uid</code>; v2 takes the same ids as <code>identityVerificationId</code>.</p>
<ul>
{people}</ul>
</body></html>"#,
        icon = favicon_link(),
    )
}
