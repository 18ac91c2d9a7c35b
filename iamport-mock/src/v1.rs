//! The emulated PortOne v1 endpoints: `POST /users/getToken`, `GET`/`DELETE
//! /certifications/{imp_uid}`, with PortOne's envelopes and statuses.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::server::ConnAbort;
use super::state::{Endpoint, FaultKind, State};

type Shared = Arc<State>;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/users/getToken", post(get_token))
        .route(
            "/certifications/{imp_uid}",
            get(get_certification).delete(delete_certification),
        )
}

/// PortOne's envelope for a failure.
pub(crate) fn envelope_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "code": -1, "message": message, "response": null })),
    )
        .into_response()
}

fn envelope_ok(response: Value) -> Response {
    Json(json!({ "code": 0, "message": null, "response": response })).into_response()
}

/// Runs the bookkeeping every endpoint shares: counts, waits, and applies a queued fault.
pub(crate) async fn begin(
    state: &State,
    endpoint: Endpoint,
    id: Option<&str>,
    abort: &ConnAbort,
) -> Option<Response> {
    let (latency, fault) = state.begin(endpoint, id);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault? {
        FaultKind::Status(status) if endpoint.is_v2() => Some(super::v2::error_for_status(status)),
        FaultKind::Status(status) => Some(envelope_error(
            status,
            status.canonical_reason().unwrap_or("error"),
        )),
        FaultKind::Garbage => Some(
            (
                [(header::CONTENT_TYPE, "application/json")],
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response(),
        ),
        FaultKind::Drop => abort.drop_connection().await,
    }
}

#[derive(Deserialize)]
struct Credentials {
    imp_key: Option<String>,
    imp_secret: Option<String>,
}

async fn get_token(
    AxumState(state): AxumState<Shared>,
    Extension(abort): Extension<ConnAbort>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(faulted) = begin(&state, Endpoint::GetToken, None, &abort).await {
        return faulted;
    }
    // PortOne takes JSON or a form; the content type says which.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let credentials: Option<Credentials> = if is_json {
        serde_json::from_slice(&body).ok()
    } else {
        serde_urlencoded::from_bytes(&body).ok()
    };
    let Some(Credentials {
        imp_key: Some(key),
        imp_secret: Some(secret),
    }) = credentials
    else {
        return envelope_error(
            StatusCode::BAD_REQUEST,
            "imp_key, imp_secret 파라메터가 누락되었습니다.",
        );
    };
    if key != state.key || secret != state.secret {
        return envelope_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let (token, now, expired_at) = state.issue_token();
    envelope_ok(json!({ "access_token": token, "now": now, "expired_at": expired_at }))
}

/// `Authorization: <token>` or `Authorization: Bearer <token>`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    Some(value.strip_prefix("Bearer ").unwrap_or(value).trim())
}

async fn get_certification(
    AxumState(state): AxumState<Shared>,
    Extension(abort): Extension<ConnAbort>,
    Path(imp_uid): Path<String>,
    headers: HeaderMap,
) -> Response {
    certification(state, abort, imp_uid, headers, Endpoint::GetCertification).await
}

async fn delete_certification(
    AxumState(state): AxumState<Shared>,
    Extension(abort): Extension<ConnAbort>,
    Path(imp_uid): Path<String>,
    headers: HeaderMap,
) -> Response {
    certification(
        state,
        abort,
        imp_uid,
        headers,
        Endpoint::DeleteCertification,
    )
    .await
}

async fn certification(
    state: Shared,
    abort: ConnAbort,
    imp_uid: String,
    headers: HeaderMap,
    endpoint: Endpoint,
) -> Response {
    if let Some(faulted) = begin(&state, endpoint, Some(&imp_uid), &abort).await {
        return faulted;
    }
    if !state.accept_token(presented_token(&headers)) {
        return envelope_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let found = match endpoint {
        Endpoint::DeleteCertification => state.remove_person(&imp_uid),
        _ => state.person(&imp_uid),
    };
    match found {
        Some(person) => envelope_ok(person),
        None => envelope_error(StatusCode::NOT_FOUND, "인증결과가 존재하지 않습니다."),
    }
}
