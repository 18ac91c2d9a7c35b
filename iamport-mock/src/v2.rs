//! The emulated PortOne v2 API: `GET /identity-verifications/{identityVerificationId}`, the
//! list `GET /identity-verifications`, `POST /login/api-secret` and `POST /token/refresh`,
//! with the real object shapes (tagged by `status`) and the real error bodies
//! (`{"type": "…", "message": "…"}`) on every v2 path — faults, unserved paths and wrong
//! methods included.
//!
//! Authentication: `Authorization: PortOne <secret>` or `Bearer <access token>` (from
//! `/login/api-secret`), the scheme case-insensitive. With a store id configured, a request
//! naming another `storeId` is `FORBIDDEN`.
//!
//! Every person is reachable by its id here too: a certified v1 record answers `VERIFIED`
//! (`version: "V1"`), an uncertified one `FAILED`; verifications made through the v2 browser
//! SDK stand-in are `V2` and carry its `customer.id` and `customData`;
//! [`Emulator::set_pending`](super::Emulator::set_pending) adds `READY`/`FAILED` ones.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::server::ConnAbort;
use super::state::{Endpoint, PendingStatus, State, V2Meta};
use super::v1::begin;

type Shared = Arc<State>;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/identity-verifications",
            get(list).fallback(method_not_allowed),
        )
        .route(
            "/identity-verifications/{id}",
            get(identity_verification).fallback(method_not_allowed),
        )
        .route("/identity-verifications/{id}/{action}", any(unserved))
        .route(
            "/login/api-secret",
            post(login).fallback(method_not_allowed),
        )
        .route("/token/refresh", post(refresh).fallback(method_not_allowed))
}

/// Whether `path` belongs to the v2 API (its unknown paths answer in v2's error shape).
pub(crate) fn is_v2_path(path: &str) -> bool {
    ["/identity-verifications", "/login", "/token"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

/// The PG's code and message for a verification the person cancelled (the emulator's own).
pub(crate) const CANCEL_PG_CODE: &str = "USER_CANCEL";
/// See [`CANCEL_PG_CODE`].
pub(crate) const CANCEL_PG_MESSAGE: &str = "사용자가 본인인증을 취소하였습니다";

pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({ "type": kind, "message": message }))).into_response()
}

/// v2's error body for an injected status.
pub(crate) fn error_for_status(status: StatusCode) -> Response {
    let kind = match status {
        StatusCode::BAD_REQUEST => "INVALID_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "IDENTITY_VERIFICATION_NOT_FOUND",
        _ if status.is_server_error() => "INTERNAL_SERVER_ERROR",
        _ => "INVALID_REQUEST",
    };
    error(status, kind, status.canonical_reason().unwrap_or("error"))
}

fn invalid_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "IDENTITY_VERIFICATION_NOT_FOUND",
        "요청된 본인인증 건이 존재하지 않습니다.",
    )
}

/// An unknown path under the v2 API.
pub(crate) fn unknown_path() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "요청한 경로를 찾을 수 없습니다.",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "허용되지 않는 메서드입니다.",
    )
}

/// `Authorization: PortOne <secret>` or `Bearer <access token>`; the scheme is
/// case-insensitive (RFC 9110 §11.1), as PortOne's own spec spells it `portone`. `Some` is
/// the refusal.
fn refuse_unauthorized(state: &State, headers: &HeaderMap) -> Option<Response> {
    let accepted = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, credentials)| {
            let credentials = credentials.trim();
            if scheme.eq_ignore_ascii_case("portone") {
                credentials == state.v2_secret
            } else if scheme.eq_ignore_ascii_case("bearer") {
                state.accept_v2_access_token(credentials)
            } else {
                false
            }
        });
    (!accepted).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "인증 정보가 올바르지 않습니다.",
        )
    })
}

/// A `storeId` the secret may not access is `FORBIDDEN` (when the emulator has a store).
/// `Some` is the refusal.
fn refuse_store(state: &State, store_id: Option<&str>) -> Option<Response> {
    match (&state.v2_store_id, store_id) {
        (Some(own), Some(asked)) if own != asked => Some(error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "요청이 거절되었습니다.",
        )),
        _ => None,
    }
}

fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn channel(person: Option<&Value>, meta: Option<&V2Meta>) -> Value {
    let pg = person
        .and_then(|p| p["pg_provider"].as_str())
        .unwrap_or("danal")
        .to_ascii_uppercase();
    let key = meta
        .and_then(|m| m.channel_key.clone())
        .unwrap_or_else(|| "channel-key-emulator".into());
    json!({
        "type": "TEST",
        "id": "channel-id-emulator",
        "key": key,
        "name": "본인인증 (emulator)",
        "pgProvider": pg,
        "pgMerchantId": "emulator",
    })
}

/// `requestedCustomer`: what the merchant passed (here only `customer.id`).
fn requested_customer(meta: Option<&V2Meta>) -> Value {
    match meta.and_then(|m| m.customer_id.as_deref()) {
        Some(id) => json!({ "id": id }),
        None => json!({}),
    }
}

/// Adds the fields every status shares.
fn common(body: &mut Value, id: &str, meta: Option<&V2Meta>, requested_at: i64, changed_at: i64) {
    body["id"] = Value::from(id);
    body["requestedAt"] = Value::from(rfc3339(requested_at));
    body["updatedAt"] = Value::from(rfc3339(changed_at));
    body["statusChangedAt"] = Value::from(rfc3339(changed_at));
    body["version"] = Value::from(meta.map_or("V1", |m| m.version));
    if let Some(data) = meta.and_then(|m| m.custom_data.as_deref()) {
        body["customData"] = Value::from(data);
    }
}

/// The v2 shape of a v1 person record.
fn as_v2(id: &str, person: &Value, meta: Option<&V2Meta>) -> Value {
    let verified_at = person["certified_at"].as_i64().unwrap_or(0);
    let requested_at = meta.map_or(verified_at - 40, |m| m.requested_at.min(verified_at));
    let pg_tx_id = person["pg_tid"]
        .as_str()
        .map_or_else(|| format!("tx-{id}"), str::to_owned);
    let mut body = json!({ "channel": channel(Some(person), meta), "pgTxId": pg_tx_id });
    common(&mut body, id, meta, requested_at, verified_at);
    if person["certified"] != true {
        body["status"] = Value::from("FAILED");
        body["requestedCustomer"] = requested_customer(meta);
        body["failure"] = json!({ "reason": "본인인증이 완료되지 않았습니다.", "pgCode": "E001", "pgMessage": "FAILED" });
        return body;
    }
    let birth_date = person["birthday"].as_str().map(str::to_owned).or_else(|| {
        person["birth"]
            .as_i64()
            .and_then(iamport_tower::korea::birth_date_from_unix)
            .map(|d| d.to_string())
    });
    let string = |field: &str| person.get(field).filter(|v| v.is_string()).cloned();
    let mut customer = json!({ "name": person["name"].as_str().unwrap_or("") });
    let fields = [
        (
            "id",
            meta.and_then(|m| m.customer_id.clone()).map(Value::from),
        ),
        (
            "operator",
            person["carrier"]
                .as_str()
                .map(|c| Value::from(c.replace("LGT", "LGU"))),
        ),
        ("phoneNumber", string("phone")),
        ("birthDate", birth_date.map(Value::from)),
        (
            "gender",
            person["gender"]
                .as_str()
                .map(|g| Value::from(g.to_ascii_uppercase())),
        ),
        // Only the foreigner contract's `foreigner_v2` says; without it, absent (unknown),
        // never a `false` that means "not reported".
        (
            "isForeigner",
            person
                .get("foreigner_v2")
                .filter(|v| v.is_boolean())
                .cloned(),
        ),
        ("ci", string("unique_key")),
        ("di", string("unique_in_site")),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            customer[name] = value;
        }
    }
    body["status"] = Value::from("VERIFIED");
    body["verifiedCustomer"] = customer;
    body["verifiedAt"] = Value::from(rfc3339(verified_at));
    body["pgRawResponse"] = Value::from("{}");
    body
}

fn pending(id: &str, status: PendingStatus, meta: Option<&V2Meta>, now: i64) -> Value {
    let requested_at = meta.map_or(now, |m| m.requested_at);
    let mut body = json!({
        "status": match status { PendingStatus::Ready => "READY", PendingStatus::Failed => "FAILED" },
        "requestedCustomer": requested_customer(meta),
    });
    common(&mut body, id, meta, requested_at, requested_at.max(now));
    if status == PendingStatus::Failed {
        body["failure"] = json!({
            "reason": "사용자가 본인인증을 취소하였습니다.",
            "pgCode": CANCEL_PG_CODE,
            "pgMessage": CANCEL_PG_MESSAGE,
        });
    }
    body
}

/// The v2 object for `id`, or `None` when there is none.
fn record(state: &State, id: &str) -> Option<Value> {
    let meta = state.v2_meta(id);
    if let Some(status) = state.pending(id) {
        return Some(pending(id, status, meta.as_ref(), state.now()));
    }
    Some(as_v2(id, &state.person(id)?, meta.as_ref()))
}

/// A query string (none is an empty one); `None` when it does not parse.
fn parse_query<T: serde::de::DeserializeOwned>(query: Option<&str>) -> Option<T> {
    serde_urlencoded::from_str(query.unwrap_or("")).ok()
}

#[derive(Deserialize)]
struct StoreQuery {
    #[serde(rename = "storeId")]
    store_id: Option<String>,
}

async fn identity_verification(
    AxumState(state): AxumState<Shared>,
    Extension(abort): Extension<ConnAbort>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = begin(&state, Endpoint::GetIdentityVerification, Some(&id), &abort).await
    {
        return faulted;
    }
    if let Some(refused) = refuse_unauthorized(&state, &headers) {
        return refused;
    }
    let Some(query) = parse_query::<StoreQuery>(query.as_deref()) else {
        return invalid_request("요청된 입력 정보가 유효하지 않습니다.");
    };
    if let Some(refused) = refuse_store(&state, query.store_id.as_deref()) {
        return refused;
    }
    if id.is_empty() || id.len() > 256 {
        return invalid_request("요청된 입력 정보가 유효하지 않습니다.");
    }
    match record(&state, &id) {
        Some(body) => Json(body).into_response(),
        None => not_found(),
    }
}

/// `send`, `confirm`, `resend` (OTP verification from the server, which needs a carrier
/// contract) and anything else under an id: not emulated, answered in v2's shape.
async fn unserved(
    AxumState(state): AxumState<Shared>,
    Path((id, _action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_unauthorized(&state, &headers) {
        return refused;
    }
    if record(&state, &id).is_none() {
        return not_found();
    }
    invalid_request(
        "이 에뮬레이터는 서버 측 본인인증 요청(send/confirm/resend)을 지원하지 않습니다.",
    )
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "requestBody")]
    request_body: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListBody {
    page: Option<PageInput>,
    sort: Option<SortInput>,
    filter: Option<Filter>,
}

#[derive(Deserialize)]
struct PageInput {
    number: Option<u64>,
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SortInput {
    by: Option<String>,
    order: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    store_id: Option<String>,
    identity_verification_id: Option<String>,
    statuses: Option<Vec<String>>,
    pg_tx_id: Option<String>,
    version: Option<String>,
    pg_providers: Option<Vec<String>>,
}

/// `GET /identity-verifications?requestBody={page, sort, filter}` (PortOne's GET-with-body
/// convention): filters by id, statuses, `pgTxId`, version and PG; sorts by `requestedAt`,
/// `statusChangedAt` or `verifiedAt` (default newest request first); pages from 0, 10 a
/// page by default, at most 1000.
async fn list(
    AxumState(state): AxumState<Shared>,
    Extension(abort): Extension<ConnAbort>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = begin(&state, Endpoint::ListIdentityVerifications, None, &abort).await {
        return faulted;
    }
    if let Some(refused) = refuse_unauthorized(&state, &headers) {
        return refused;
    }
    let Some(query) = parse_query::<ListQuery>(query.as_deref()) else {
        return invalid_request("요청된 입력 정보가 유효하지 않습니다.");
    };
    let body = match query.request_body {
        None => ListBody::default(),
        Some(text) => match serde_json::from_str::<ListBody>(&text) {
            Ok(body) => body,
            Err(_) => return invalid_request("requestBody가 올바른 JSON이 아닙니다."),
        },
    };
    let filter = body.filter.unwrap_or_default();
    if let Some(refused) = refuse_store(&state, filter.store_id.as_deref()) {
        return refused;
    }
    let (number, size) = body
        .page
        .map_or((0, 10), |p| (p.number.unwrap_or(0), p.size.unwrap_or(10)));
    if size == 0 || size > 1000 {
        return invalid_request("page.size는 1 이상 1000 이하여야 합니다.");
    }
    let mut items: Vec<Value> = state
        .all_v2()
        .into_iter()
        .map(|(id, record, meta)| match record {
            Ok(person) => as_v2(&id, &person, meta.as_ref()),
            Err(status) => pending(&id, status, meta.as_ref(), state.now()),
        })
        .filter(|item| {
            let field = |name: &str| item[name].as_str().unwrap_or("");
            filter
                .identity_verification_id
                .as_ref()
                .is_none_or(|id| field("id") == id)
                && filter
                    .statuses
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s == field("status")))
                && filter
                    .pg_tx_id
                    .as_ref()
                    .is_none_or(|t| field("pgTxId") == t)
                && filter
                    .version
                    .as_ref()
                    .is_none_or(|v| field("version") == v)
                && filter.pg_providers.as_ref().is_none_or(|pgs| {
                    let pg = item["channel"]["pgProvider"].as_str().unwrap_or("");
                    pgs.iter().any(|p| p == pg)
                })
        })
        .collect();
    let sort = body.sort.unwrap_or(SortInput {
        by: None,
        order: None,
    });
    let key = match sort.by.as_deref() {
        Some("STATUS_CHANGED_AT") => "statusChangedAt",
        Some("VERIFIED_AT") => "verifiedAt",
        _ => "requestedAt",
    };
    // RFC 3339 in UTC with whole seconds sorts as text; the id breaks ties stably.
    items.sort_by(|a, b| {
        (a[key].as_str(), a["id"].as_str()).cmp(&(b[key].as_str(), b["id"].as_str()))
    });
    if sort.order.as_deref() != Some("ASC") {
        items.reverse();
    }
    let total = items.len();
    let start = usize::try_from(number.saturating_mul(size)).unwrap_or(usize::MAX);
    let page: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .collect();
    Json(json!({
        "items": page,
        "page": { "number": number, "size": size, "totalCount": total },
    }))
    .into_response()
}

/// A JSON body's string field.
fn body_field(body: &[u8], field: &str) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get(field)?.as_str().map(str::to_owned))
}

/// `POST /login/api-secret {"apiSecret"}` → `{accessToken, refreshToken}`.
async fn login(
    AxumState(state): AxumState<Shared>,
    Extension(abort): Extension<ConnAbort>,
    body: Bytes,
) -> Response {
    if let Some(faulted) = begin(&state, Endpoint::LoginApiSecret, None, &abort).await {
        return faulted;
    }
    let Some(secret) = body_field(&body, "apiSecret") else {
        return invalid_request("apiSecret가 필요합니다.");
    };
    if secret != state.v2_secret {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "API secret이 올바르지 않습니다.",
        );
    }
    let (access, refresh) = state.issue_v2_tokens();
    Json(json!({ "accessToken": access, "refreshToken": refresh })).into_response()
}

/// `POST /token/refresh {"refreshToken"}` → a new pair; a refresh token works once.
async fn refresh(
    AxumState(state): AxumState<Shared>,
    Extension(abort): Extension<ConnAbort>,
    body: Bytes,
) -> Response {
    if let Some(faulted) = begin(&state, Endpoint::RefreshToken, None, &abort).await {
        return faulted;
    }
    let Some(token) = body_field(&body, "refreshToken") else {
        return invalid_request("refreshToken이 필요합니다.");
    };
    match state.refresh_v2_tokens(&token) {
        Some((access, refresh)) => {
            Json(json!({ "accessToken": access, "refreshToken": refresh })).into_response()
        }
        None => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "refresh token이 올바르지 않습니다.",
        ),
    }
}
