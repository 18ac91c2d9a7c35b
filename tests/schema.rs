//! Every emulator answer — v1 and v2, success and every error, injected faults included —
//! validated against PortOne's published OpenAPI documents (`shared/*.openapi.json`, copied
//! to `tests/openapi/`).
//!
//! The validator is a small hand-written one for exactly the JSON Schema subset the two
//! documents use (`$ref`, `allOf`, `oneOf` + `discriminator`, `type`, `enum`, `format`
//! `date`/`date-time`, `maxLength`, `properties`, `required`, `items`); it refuses a schema
//! using any other keyword, so it cannot pass by ignoring a rule. A general validator crate
//! would bring a large dependency tree, and the v1 document is Swagger 2.0 with `"maxLength":
//! "88"` (a string), which strict validators reject as a schema. Swagger 2.0 cannot say
//! "nullable", and PortOne's v1 answers carry `null` in optional fields (`message`, `gender`,
//! `foreigner_v2`, `unique_in_site`, …), so in the v1 document `null` is accepted for a
//! property that is not `required`; the v2 document (OpenAPI 3) gets no such leniency.

use std::collections::BTreeSet;

use http::StatusCode;
use iamport_mock::{Emulator, Endpoint, PendingStatus, TEST_KEY, TEST_SECRET, TEST_V2_SECRET};
use serde_json::{Value, json};

const STORE: &str = "store-emulator-0001";

struct Document {
    root: Value,
    /// Swagger 2.0: `null` passes for a property that is not `required`.
    null_for_optional: bool,
}

const KNOWN_KEYWORDS: &[&str] = &[
    "$ref",
    "allOf",
    "oneOf",
    "discriminator",
    "type",
    "enum",
    "format",
    "maxLength",
    "properties",
    "required",
    "items",
    "description",
    "title",
    "example",
];

impl Document {
    fn load(name: &str) -> Self {
        let path = format!("{}/openapi/{name}", env!("CARGO_MANIFEST_DIR"));
        let root: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let null_for_optional = root.get("swagger").is_some();
        Self {
            root,
            null_for_optional,
        }
    }

    fn resolve(&self, reference: &str) -> &Value {
        let name = reference.rsplit('/').next().unwrap();
        let found = if reference.starts_with("#/definitions/") {
            self.root["definitions"].get(name)
        } else {
            // The v2 extract keeps `components.schemas` at the top as `schemas`.
            self.root["schemas"]
                .get(name)
                .or_else(|| self.root["components"]["schemas"].get(name))
        };
        found.unwrap_or_else(|| panic!("unresolvable $ref {reference}"))
    }

    /// The schema of `method path`'s answer with `status`: `Ok(Some)` when documented with a
    /// schema, `Ok(None)` documented without one, `Err` not documented.
    fn response_schema(&self, method: &str, path: &str, status: u16) -> Result<Option<&Value>, ()> {
        let operation = &self.root["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is not in the document"
        );
        let response = operation["responses"].get(status.to_string()).ok_or(())?;
        Ok(response
            .get("schema")
            .or_else(|| response["content"]["application/json"].get("schema")))
    }

    fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let object = schema.as_object().expect("a schema is an object");
        for key in object.keys() {
            assert!(
                KNOWN_KEYWORDS.contains(&key.as_str()) || key.starts_with("x-"),
                "the validator does not implement `{key}` (at {at})"
            );
        }
        if let Some(reference) = schema["$ref"].as_str() {
            return self.validate(self.resolve(reference), value, at, errors);
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            self.validate(part, value, at, errors);
        }
        if let Some(options) = schema["oneOf"].as_array() {
            if let Some(property) = schema["discriminator"]["propertyName"].as_str() {
                let tag = value[property].as_str().unwrap_or("<none>");
                match schema["discriminator"]["mapping"][tag].as_str() {
                    Some(reference) => self.validate(self.resolve(reference), value, at, errors),
                    None => errors.push(format!(
                        "{at}: `{property}` {tag:?} is not in the discriminator mapping"
                    )),
                }
            } else {
                let matching = options
                    .iter()
                    .filter(|option| {
                        let mut inner = Vec::new();
                        self.validate(option, value, at, &mut inner);
                        inner.is_empty()
                    })
                    .count();
                if matching != 1 {
                    errors.push(format!("{at}: {matching} oneOf options match"));
                }
            }
        }
        if let Some(kind) = schema["type"].as_str() {
            let ok = match kind {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                other => panic!("unknown type {other}"),
            };
            if !ok {
                errors.push(format!("{at}: expected {kind}, got {value}"));
                return;
            }
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of the enum's values"));
        }
        if let (Some(format), Some(text)) = (schema["format"].as_str(), value.as_str()) {
            let ok = match format {
                "date-time" => text.parse::<jiff::Timestamp>().is_ok(),
                "date" => text.len() == 10 && text.parse::<jiff::civil::Date>().is_ok(),
                other => panic!("unknown format {other}"),
            };
            if !ok {
                errors.push(format!("{at}: {text:?} is not a {format}"));
            }
        }
        if let (Some(limit), Some(text)) = (schema.get("maxLength"), value.as_str()) {
            let limit = limit
                .as_u64()
                .or_else(|| limit.as_str().and_then(|s| s.parse().ok()))
                .expect("maxLength is a number");
            if text.chars().count() as u64 > limit {
                errors.push(format!("{at}: longer than {limit}"));
            }
        }
        let Some(fields) = value.as_object() else {
            // `properties`/`required` constrain objects only.
            if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
                for (i, item) in values.iter().enumerate() {
                    self.validate(items, item, &format!("{at}[{i}]"), errors);
                }
            }
            return;
        };
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for name in &required {
            if !fields.contains_key(*name) {
                errors.push(format!("{at}: required `{name}` is missing"));
            }
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let Some(field) = fields.get(name) else {
                continue;
            };
            if field.is_null() && self.null_for_optional && !required.contains(name.as_str()) {
                continue;
            }
            self.validate(property, field, &format!("{at}.{name}"), errors);
        }
    }

    fn check(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate(schema, value, "$", &mut errors);
        errors
    }

    fn schema(&self, reference: &str) -> Value {
        json!({ "$ref": reference })
    }
}

/// Collects answers and validates each against the document.
struct Checker {
    v1: Document,
    v2: Document,
    base: String,
    checked: Vec<String>,
    failures: Vec<String>,
}

#[derive(Clone, Copy)]
enum Api {
    V1,
    V2,
}

impl Checker {
    /// Sends `request`, expects `status`, and validates the body as the answer of `method
    /// template` in `api`'s document (undocumented statuses: the API's generic error shape).
    async fn answer(
        &mut self,
        label: &str,
        api: Api,
        (method, template): (&str, &str),
        request: reqwest::RequestBuilder,
        expected: u16,
    ) -> Value {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "{label}: {text}");
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{label}: not JSON ({e}): {text}"));
        let doc = match api {
            Api::V1 => &self.v1,
            Api::V2 => &self.v2,
        };
        let documented = if doc.root["paths"][template][method].is_object() {
            doc.response_schema(method, template, status)
        } else {
            Err(())
        };
        let (schema, how) = match (api, documented) {
            (_, Ok(Some(schema))) => (schema.clone(), "documented"),
            // v1 documents some errors without a schema: they are envelopes with no response.
            (Api::V1, Ok(None) | Err(())) => (
                json!({"allOf": [{"$ref": "#/definitions/ResponseAnnotation"},
                    {"type": "object", "required": ["code", "message"]}]}),
                "v1 envelope",
            ),
            (Api::V2, Ok(None) | Err(())) => (
                doc.schema("#/components/schemas/InvalidRequestError"),
                "v2 error shape",
            ),
        };
        let mut errors = doc.check(&schema, &body);
        if matches!(api, Api::V1) && status != 200 && !body["response"].is_null() {
            errors.push("an error envelope carries a response".into());
        }
        if matches!(api, Api::V2) && status != 200 && !body["type"].is_string() {
            errors.push("a v2 error has no `type`".into());
        }
        self.checked.push(format!("{label} → {status} ({how})"));
        for error in errors {
            self.failures.push(format!("{label} → {status}: {error}"));
        }
        body
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

#[test]
fn the_validator_refuses_what_the_documents_refuse() {
    let v2 = Document::load("portone-v2-identity-verifications.openapi.json");
    let verification = v2.schema("#/components/schemas/IdentityVerification");
    let good = json!({"status": "VERIFIED", "id": "x", "verifiedCustomer": {"name": "a"},
        "requestedAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-01T00:00:00Z",
        "statusChangedAt": "2024-01-01T00:00:00Z", "verifiedAt": "2024-01-01T00:00:00Z",
        "pgTxId": "t", "pgRawResponse": "", "version": "V1"});
    assert_eq!(v2.check(&verification, &good), Vec::<String>::new());
    let bad = [
        ("/pgTxId", Value::Null),
        ("/verifiedCustomer/isForeigner", json!(null)),
        ("/verifiedCustomer/operator", json!("LGT")),
        ("/verifiedAt", json!("yesterday")),
        ("/verifiedCustomer/birthDate", json!("1990-1-1")),
        ("/status", json!("DONE")),
        ("/version", json!("V3")),
        (
            "/channel",
            json!({"type": "LIVE", "pgProvider": "danal", "pgMerchantId": "m"}),
        ),
    ];
    for (pointer, value) in bad {
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        let mut wrong = good.clone();
        wrong.pointer_mut(parent).unwrap()[field] = value.clone();
        assert!(
            !v2.check(&verification, &wrong).is_empty(),
            "{pointer} = {value}"
        );
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("pgRawResponse");
    assert!(!v2.check(&verification, &missing).is_empty());

    let v1 = Document::load("portone-v1-certifications.openapi.json");
    let certification = v1.schema("#/definitions/CertificationResponse");
    let ok = json!({"code": 0, "message": null, "response": {"imp_uid": "imp_1",
        "pg_provider": "danal", "foreigner": false, "gender": null}});
    assert_eq!(v1.check(&certification, &ok), Vec::<String>::new());
    for (field, value) in [
        ("foreigner", Value::Null),
        ("certified_at", json!("1700000000")),
        ("unique_key", json!("x".repeat(89))),
    ] {
        let mut wrong = ok.clone();
        wrong["response"][field] = value;
        assert!(!v1.check(&certification, &wrong).is_empty(), "{field}");
    }
}

#[tokio::test]
async fn every_emulator_answer_matches_portones_openapi_documents() {
    let emulator = Emulator::builder()
        .v2_store_id(STORE)
        .start()
        .await
        .unwrap();
    emulator.set_pending("iv-ready", PendingStatus::Ready);
    emulator.set_pending("iv-failed", PendingStatus::Failed);
    let http = iamport_e2e::http();
    let mut c = Checker {
        v1: Document::load("portone-v1-certifications.openapi.json"),
        v2: Document::load("portone-v2-identity-verifications.openapi.json"),
        base: emulator.url(),
        checked: Vec::new(),
        failures: Vec::new(),
    };
    let token_op = ("post", "/users/getToken");
    let get_op = ("get", "/certifications/{imp_uid}");
    let delete_op = ("delete", "/certifications/{imp_uid}");
    let iv_op = ("get", "/identity-verifications/{identityVerificationId}");
    let login_op = ("post", "/login/api-secret");
    let refresh_op = ("post", "/token/refresh");

    // v1: token.
    let credentials = json!({"imp_key": TEST_KEY, "imp_secret": TEST_SECRET});
    let token = c
        .answer(
            "getToken json",
            Api::V1,
            token_op,
            http.post(c.url("/users/getToken")).json(&credentials),
            200,
        )
        .await["response"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.answer(
        "getToken form",
        Api::V1,
        token_op,
        http.post(c.url("/users/getToken"))
            .form(&[("imp_key", TEST_KEY), ("imp_secret", TEST_SECRET)]),
        200,
    )
    .await;
    c.answer(
        "getToken wrong secret",
        Api::V1,
        token_op,
        http.post(c.url("/users/getToken"))
            .json(&json!({"imp_key": TEST_KEY, "imp_secret": "wrong"})),
        401,
    )
    .await;
    c.answer(
        "getToken no body",
        Api::V1,
        token_op,
        http.post(c.url("/users/getToken")),
        400,
    )
    .await;
    emulator.fail_next(Endpoint::GetToken, 1, StatusCode::BAD_GATEWAY);
    c.answer(
        "getToken fault",
        Api::V1,
        token_op,
        http.post(c.url("/users/getToken")).json(&credentials),
        502,
    )
    .await;

    // v1: certifications, every sample person.
    let auth = |r: reqwest::RequestBuilder| r.header("Authorization", format!("Bearer {token}"));
    for person in iamport_mock::sample_persons() {
        let id = person["imp_uid"].as_str().unwrap().to_owned();
        let path = format!("/certifications/{id}");
        c.answer(
            &format!("GET {id}"),
            Api::V1,
            get_op,
            auth(http.get(c.url(&path))),
            200,
        )
        .await;
    }
    c.answer(
        "GET plain token",
        Api::V1,
        get_op,
        http.get(c.url("/certifications/imp_100000000001"))
            .header("Authorization", &token),
        200,
    )
    .await;
    c.answer(
        "GET no token",
        Api::V1,
        get_op,
        http.get(c.url("/certifications/imp_100000000001")),
        401,
    )
    .await;
    c.answer(
        "GET unknown",
        Api::V1,
        get_op,
        auth(http.get(c.url("/certifications/imp_999"))),
        404,
    )
    .await;
    emulator.fail_next(
        Endpoint::GetCertification,
        1,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    c.answer(
        "GET fault",
        Api::V1,
        get_op,
        auth(http.get(c.url("/certifications/imp_100000000001"))),
        503,
    )
    .await;
    c.answer(
        "DELETE",
        Api::V1,
        delete_op,
        auth(http.delete(c.url("/certifications/imp_100000000007"))),
        200,
    )
    .await;
    c.answer(
        "DELETE again",
        Api::V1,
        delete_op,
        auth(http.delete(c.url("/certifications/imp_100000000007"))),
        404,
    )
    .await;
    emulator.fail_next(
        Endpoint::DeleteCertification,
        1,
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    c.answer(
        "DELETE fault",
        Api::V1,
        delete_op,
        auth(http.delete(c.url("/certifications/imp_100000000001"))),
        500,
    )
    .await;
    c.answer(
        "v1 unknown path",
        Api::V1,
        ("get", "/payments/{imp_uid}"),
        http.get(c.url("/payments/imp_1")),
        404,
    )
    .await;

    // v2: every status and person, every way to authenticate.
    let portone = |r: reqwest::RequestBuilder, scheme: &str| {
        r.header("Authorization", format!("{scheme} {TEST_V2_SECRET}"))
    };
    let browser_born = {
        let form = [
            ("api", "v2"),
            ("identity_verification_id", "iv-browser-1"),
            ("customer_id", "customer-1"),
            ("custom_data", "{\"plan\":\"pro\"}"),
            ("person", "imp_100000000001"),
            ("mode", "iframe"),
        ];
        let page = http
            .get(c.url("/certify"))
            .query(&form[..3])
            .send()
            .await
            .unwrap();
        assert!(page.status().is_success());
        let done = http
            .post(c.url("/certify"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(done.status().is_success());
        "iv-browser-1".to_owned()
    };
    let mut ids: Vec<String> = iamport_mock::sample_persons()
        .iter()
        .map(|p| p["imp_uid"].as_str().unwrap().to_owned())
        .filter(|id| id != "imp_100000000007")
        .collect();
    ids.extend(["iv-ready".into(), "iv-failed".into(), browser_born]);
    for id in &ids {
        let path = format!("/identity-verifications/{id}");
        c.answer(
            &format!("v2 GET {id}"),
            Api::V2,
            iv_op,
            portone(http.get(c.url(&path)), "PortOne"),
            200,
        )
        .await;
    }
    let adult = "/identity-verifications/imp_100000000001";
    c.answer(
        "v2 scheme lower case",
        Api::V2,
        iv_op,
        portone(http.get(c.url(adult)), "portone"),
        200,
    )
    .await;
    c.answer(
        "v2 own store",
        Api::V2,
        iv_op,
        portone(
            http.get(c.url(adult)).query(&[("storeId", STORE)]),
            "PortOne",
        ),
        200,
    )
    .await;
    c.answer(
        "v2 other store",
        Api::V2,
        iv_op,
        portone(
            http.get(c.url(adult)).query(&[("storeId", "store-other")]),
            "PortOne",
        ),
        403,
    )
    .await;
    c.answer("v2 no auth", Api::V2, iv_op, http.get(c.url(adult)), 401)
        .await;
    c.answer(
        "v2 wrong scheme",
        Api::V2,
        iv_op,
        portone(http.get(c.url(adult)), "Basic"),
        401,
    )
    .await;
    c.answer(
        "v2 wrong secret",
        Api::V2,
        iv_op,
        http.get(c.url(adult))
            .header("Authorization", "PortOne nope"),
        401,
    )
    .await;
    c.answer(
        "v2 unknown id",
        Api::V2,
        iv_op,
        portone(
            http.get(c.url("/identity-verifications/iv-unknown")),
            "PortOne",
        ),
        404,
    )
    .await;
    let long = format!("/identity-verifications/{}", "x".repeat(300));
    c.answer(
        "v2 id too long",
        Api::V2,
        iv_op,
        portone(http.get(c.url(&long)), "PortOne"),
        400,
    )
    .await;
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
        StatusCode::BAD_REQUEST,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        emulator.fail_next(Endpoint::GetIdentityVerification, 1, status);
        c.answer(
            &format!("v2 fault {status}"),
            Api::V2,
            iv_op,
            portone(http.get(c.url(adult)), "PortOne"),
            status.as_u16(),
        )
        .await;
    }

    // v2: login, refresh, Bearer.
    let tokens = c
        .answer(
            "login",
            Api::V2,
            login_op,
            http.post(c.url("/login/api-secret"))
                .json(&json!({"apiSecret": TEST_V2_SECRET})),
            200,
        )
        .await;
    c.answer(
        "login wrong secret",
        Api::V2,
        login_op,
        http.post(c.url("/login/api-secret"))
            .json(&json!({"apiSecret": "nope"})),
        401,
    )
    .await;
    c.answer(
        "login no body",
        Api::V2,
        login_op,
        http.post(c.url("/login/api-secret")),
        400,
    )
    .await;
    let access = tokens["accessToken"].as_str().unwrap();
    c.answer(
        "v2 Bearer",
        Api::V2,
        iv_op,
        http.get(c.url(adult)).bearer_auth(access),
        200,
    )
    .await;
    let refresh = tokens["refreshToken"].as_str().unwrap();
    let refreshed = c
        .answer(
            "refresh",
            Api::V2,
            refresh_op,
            http.post(c.url("/token/refresh"))
                .json(&json!({"refreshToken": refresh})),
            200,
        )
        .await;
    c.answer(
        "refresh reused",
        Api::V2,
        refresh_op,
        http.post(c.url("/token/refresh"))
            .json(&json!({"refreshToken": refresh})),
        401,
    )
    .await;
    c.answer(
        "v2 Bearer refreshed",
        Api::V2,
        iv_op,
        http.get(c.url(adult))
            .bearer_auth(refreshed["accessToken"].as_str().unwrap()),
        200,
    )
    .await;
    emulator.fail_next(Endpoint::LoginApiSecret, 1, StatusCode::UNAUTHORIZED);
    c.answer(
        "login fault",
        Api::V2,
        login_op,
        http.post(c.url("/login/api-secret"))
            .json(&json!({"apiSecret": TEST_V2_SECRET})),
        401,
    )
    .await;

    // v2: the list (not in the extract: items and errors are checked by their schemas).
    let list = portone(
        http.get(c.url("/identity-verifications")).query(&[(
            "requestBody",
            json!({"page": {"number": 0, "size": 100}}).to_string(),
        )]),
        "PortOne",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(list.status(), 200);
    let list: Value = list.json().await.unwrap();
    let item_schema = c.v2.schema("#/components/schemas/IdentityVerification");
    let items = list["items"].as_array().unwrap();
    assert_eq!(
        items.len() as u64,
        list["page"]["totalCount"].as_u64().unwrap()
    );
    assert!(items.len() >= ids.len());
    for item in items {
        for error in c.v2.check(&item_schema, item) {
            c.failures
                .push(format!("list item {}: {error}", item["id"]));
        }
    }
    c.checked
        .push(format!("list → 200 ({} items)", items.len()));
    for (label, request, status) in [
        (
            "list bad requestBody",
            portone(
                http.get(c.url("/identity-verifications?requestBody=%7Bnope")),
                "PortOne",
            ),
            400,
        ),
        (
            "list no auth",
            http.get(c.url("/identity-verifications")),
            401,
        ),
        (
            "list other store",
            portone(
                http.get(c.url("/identity-verifications")).query(&[(
                    "requestBody",
                    json!({"filter": {"storeId": "store-other"}}).to_string(),
                )]),
                "PortOne",
            ),
            403,
        ),
        (
            "unserved send",
            portone(
                http.post(c.url("/identity-verifications/imp_100000000001/send")),
                "PortOne",
            ),
            400,
        ),
        (
            "unserved confirm, unknown id",
            portone(
                http.post(c.url("/identity-verifications/iv-unknown/confirm")),
                "PortOne",
            ),
            404,
        ),
        (
            "wrong method",
            portone(http.post(c.url(adult)), "PortOne"),
            405,
        ),
        ("v2 unknown path", http.get(c.url("/login/elsewhere")), 404),
    ] {
        c.answer(label, Api::V2, ("get", "/none"), request, status)
            .await;
    }
    emulator.fail_next(
        Endpoint::ListIdentityVerifications,
        1,
        StatusCode::FORBIDDEN,
    );
    c.answer(
        "list fault",
        Api::V2,
        ("get", "/none"),
        portone(http.get(c.url("/identity-verifications")), "PortOne"),
        403,
    )
    .await;

    iamport_e2e::notice(&format!(
        "schema: {} emulator answers checked:\n  {}",
        c.checked.len(),
        c.checked.join("\n  ")
    ));
    assert!(
        c.failures.is_empty(),
        "not schema-valid:\n{}",
        c.failures.join("\n")
    );
}
