//! The emulated PortOne v2 endpoint: `GET /identity-verifications/{identityVerificationId}`
//! with `Authorization: PortOne <secret>`, the real object shapes (tagged by `status`) and
//! the real error bodies (`{"type": "…", "message": "…"}`).
//!
//! Every person is reachable by its id here too: a certified v1 record answers `VERIFIED`, an
//! uncertified one `FAILED`; [`Emulator::set_pending`](super::Emulator::set_pending) adds
//! `READY`/`FAILED` verifications.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::server::ConnAbort;
use super::state::{Endpoint, PendingStatus, State};
use super::v1::begin;

type Shared = Arc<State>;

pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/identity-verifications/{id}", get(identity_verification))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({ "type": kind, "message": message }))).into_response()
}

fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The v2 shape of a v1 person record.
fn as_v2(id: &str, person: &Value) -> Value {
    let at = rfc3339(person["certified_at"].as_i64().unwrap_or(0));
    let channel = json!({
        "type": "LIVE",
        "id": "channel-id-emulator",
        "key": "channel-key-emulator",
        "name": "본인인증 (emulator)",
        "pgProvider": person["pg_provider"].as_str().unwrap_or("danal").to_ascii_uppercase(),
        "pgMerchantId": "emulator",
    });
    if person["certified"] != true {
        return json!({
            "status": "FAILED",
            "id": id,
            "channel": channel,
            "requestedCustomer": {},
            "requestedAt": at, "updatedAt": at, "statusChangedAt": at,
            "failure": { "reason": "본인인증이 완료되지 않았습니다.", "pgCode": "E001", "pgMessage": "FAILED" },
            "version": "V2",
        });
    }
    let birth_date = person["birthday"].as_str().map(str::to_owned).or_else(|| {
        person["birth"]
            .as_i64()
            .and_then(iamport_tower::korea::birth_date_from_unix)
            .map(|d| d.to_string())
    });
    let mut customer = json!({ "name": person["name"] });
    let fields = [
        (
            "id",
            person
                .get("merchant_uid")
                .filter(|v| v.is_string())
                .cloned(),
        ),
        (
            "operator",
            person["carrier"]
                .as_str()
                .map(|c| Value::from(c.replace("LGT", "LGU"))),
        ),
        ("phoneNumber", person.get("phone").cloned()),
        ("birthDate", birth_date.map(Value::from)),
        (
            "gender",
            person["gender"]
                .as_str()
                .map(|g| Value::from(g.to_ascii_uppercase())),
        ),
        (
            "isForeigner",
            person
                .get("foreigner_v2")
                .filter(|v| v.is_boolean())
                .or_else(|| person.get("foreigner"))
                .cloned(),
        ),
        ("ci", person.get("unique_key").cloned()),
        (
            "di",
            person
                .get("unique_in_site")
                .filter(|v| v.is_string())
                .cloned(),
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            customer[name] = value;
        }
    }
    json!({
        "status": "VERIFIED",
        "id": id,
        "channel": channel,
        "verifiedCustomer": customer,
        "requestedAt": at, "updatedAt": at, "statusChangedAt": at, "verifiedAt": at,
        "pgTxId": person["pg_tid"],
        "pgRawResponse": "{}",
        "version": "V2",
    })
}

fn pending(id: &str, status: PendingStatus, now: i64) -> Value {
    let at = rfc3339(now);
    let mut body = json!({
        "status": match status { PendingStatus::Ready => "READY", PendingStatus::Failed => "FAILED" },
        "id": id,
        "requestedCustomer": {},
        "requestedAt": at, "updatedAt": at, "statusChangedAt": at,
        "version": "V2",
    });
    if status == PendingStatus::Failed {
        body["failure"] = json!({ "reason": "사용자가 본인인증을 취소하였습니다." });
    }
    body
}

async fn identity_verification(
    AxumState(state): AxumState<Shared>,
    Extension(abort): Extension<ConnAbort>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = begin(&state, Endpoint::GetIdentityVerification, Some(&id), &abort).await
    {
        return faulted;
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("PortOne "));
    if presented != Some(state.v2_secret.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "인증 정보가 올바르지 않습니다.",
        );
    }
    if id.is_empty() || id.len() > 256 {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "요청된 입력 정보가 유효하지 않습니다.",
        );
    }
    if let Some(status) = state.pending(&id) {
        return Json(pending(&id, status, state.now())).into_response();
    }
    match state.person(&id) {
        Some(person) => Json(as_v2(&id, &person)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "IDENTITY_VERIFICATION_NOT_FOUND",
            "요청된 본인인증 건이 존재하지 않습니다.",
        ),
    }
}
