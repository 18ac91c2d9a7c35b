//! Finding the verification id in a request: the query string first (the redirect flow),
//! else a JSON or form body (the popup flow), buffered up to a limit and handed back intact.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, header::CONTENT_TYPE};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use serde::de::{IgnoredAny, MapAccess, Visitor};

use crate::budget::Reserved;
use crate::rejection::Rejection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the query string says about the id, if it names one.
pub(crate) fn id_from_query(
    query: Option<&str>,
    fields: &[&str],
    cancelled: impl Fn(&str, &str) -> bool,
) -> Option<Result<String, Rejection>> {
    let query = query.filter(|q| !q.is_empty())?;
    // The parse the handler's `Query` extractor makes (serde_urlencoded is this underneath),
    // borrowing what needs no decoding, in one pass. Any of `fields` may name the id (v2's
    // two spellings): they must all name the same one, and none may be given twice.
    let mut found: Option<std::borrow::Cow<'_, str>> = None;
    let mut seen = 0u64;
    let mut ambiguous = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        // PortOne's redirect marks a cancelled or failed verification (v1: `success=false`);
        // the id is present then too, but there is nothing to look up.
        if cancelled(&key, &value) {
            return Some(Err(Rejection::Cancelled));
        }
        let Some(rank) = fields.iter().position(|field| *field == key) else {
            continue;
        };
        // `?imp_uid=a&imp_uid=b`: whichever one the handler reads, it must be the one checked.
        let bit = 1u64 << rank.min(63);
        ambiguous |= seen & bit != 0;
        seen |= bit;
        match &found {
            Some(id) => ambiguous |= *id != value,
            None => found = Some(value),
        }
    }
    let value = found?;
    Some(if ambiguous {
        Err(Rejection::AmbiguousId)
    } else {
        Ok(value.into_owned())
    })
}

/// The one id of a request whose query string and body may both name it: the same value
/// named twice is one id, two values are a 400, and a body that could not be read fully
/// (malformed, too large, too slow) refuses the request even when the query names an id —
/// it might name another.
pub(crate) fn one_id(
    query: Option<Result<String, Rejection>>,
    body: Result<String, Rejection>,
) -> Result<String, Rejection> {
    match (query, body) {
        (None, body) => body,
        (Some(Err(rejection)), _) => Err(rejection),
        (Some(Ok(query)), Err(Rejection::MissingId)) => Ok(query),
        (Some(Ok(query)), Ok(body)) if query == body => Ok(query),
        (Some(Ok(_)), Ok(_)) => Err(Rejection::AmbiguousId),
        (Some(Ok(_)), Err(rejection)) => Err(rejection),
    }
}

/// Body formats the id may travel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    Json,
    Form,
}

/// The body's format from `Content-Type`; `None` for anything else (never buffered).
pub(crate) fn body_format(headers: &HeaderMap) -> Option<BodyFormat> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Some(BodyFormat::Json)
    } else if essence == "application/x-www-form-urlencoded" {
        Some(BodyFormat::Form)
    } else {
        None
    }
}

/// `Content-Length`, when present and valid.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads the id from a whole body, strictly: the reading the handler's own `Json`/`Form`
/// extractor makes of the same bytes must find the same id, or none.
pub(crate) fn id_from_body(
    format: BodyFormat,
    bytes: &[u8],
    fields: &[&str],
) -> Result<String, Rejection> {
    match format {
        BodyFormat::Json => match json_ids(bytes, fields) {
            Ok(found) => pick(found, fields),
            // PortOne's published jQuery snippet sends `imp_uid=imp_…` labelled
            // `application/json`. Accept exactly that: no JSON at all, a clean form, one id.
            Err(()) if !looks_like_json(bytes) => match form_ids(bytes, fields) {
                Ok(found) if found.len() == 1 => pick(found, fields),
                _ => Err(Rejection::MalformedBody),
            },
            Err(()) => Err(Rejection::MalformedBody),
        },
        BodyFormat::Form => pick(
            form_ids(bytes, fields).map_err(|()| Rejection::MalformedBody)?,
            fields,
        ),
    }
}

/// The id the wanted fields name: a field given twice is malformed (two readers of the body
/// could pick different ones), two fields (v2's two spellings) naming different ids are
/// ambiguous, the same id under both is one id.
fn pick(found: Vec<(String, String)>, fields: &[&str]) -> Result<String, Rejection> {
    let repeated = fields
        .iter()
        .any(|f| found.iter().filter(|(k, _)| k == f).count() > 1);
    if repeated {
        return Err(Rejection::MalformedBody);
    }
    let mut values = found.into_iter().map(|(_, value)| value);
    let id = values.next().ok_or(Rejection::MissingId)?;
    if values.any(|other| other != id) {
        return Err(Rejection::AmbiguousId);
    }
    Ok(id)
}

/// The wanted top-level string fields of a JSON object: valid UTF-8 throughout, one value,
/// nothing but whitespace after it.
fn json_ids(bytes: &[u8], fields: &[&str]) -> Result<Vec<(String, String)>, ()> {
    std::str::from_utf8(bytes).map_err(drop)?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let found = deserializer
        .deserialize_map(FieldsVisitor { fields })
        .map_err(drop)?;
    deserializer.end().map_err(drop)?;
    Ok(found)
}

/// The wanted fields of a form body (all occurrences).
fn form_ids(bytes: &[u8], fields: &[&str]) -> Result<Vec<(String, String)>, ()> {
    std::str::from_utf8(bytes).map_err(drop)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).map_err(drop)?;
    Ok(pairs
        .into_iter()
        .filter(|(k, _)| fields.contains(&k.as_str()))
        .collect())
}

/// Whether a body at least starts like a JSON value (then it is judged as JSON only).
fn looks_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| matches!(b, b'{' | b'[' | b'"') || b.is_ascii_digit())
}

use serde::Deserializer as _;

/// Picks the wanted top-level string fields out of a JSON object without building a tree.
struct FieldsVisitor<'f> {
    fields: &'f [&'f str],
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.fields.contains(&key.as_ref()) {
                // The id must be a string; a number or object here is a malformed request.
                let value: String = map.next_value()?;
                found.push((key.into_owned(), value));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The result of reading a body up to the limit.
pub(crate) enum Buffered<B> {
    /// The whole body (and its trailers) fit.
    Complete(Replay<B>, Bytes),
    /// The limit was hit; reading stopped there. The replay holds what was read and the rest.
    TooLarge(Replay<B>),
    /// The body failed mid-way.
    Failed(Replay<B>),
    /// The budget of buffered bytes could not hold the next bytes: reading stopped, and what
    /// was read is dropped.
    OverBudget,
}

/// The body handed on after the layer gave up reading one (timeout): it fails at once.
pub(crate) fn failed_body() -> crate::body::Body {
    let mut replay = Replay::<http_body_util::Empty<Bytes>>::new(Bytes::new(), None, None);
    replay.failed = true;
    crate::body::Body::new(replay)
}

/// Reads `body` until its end or until more than `limit` bytes arrived, within the share of
/// the layer's budget `reserved` holds, which it grows as bytes arrive beyond it (a body
/// without `Content-Length` starts with none). The replay keeps the share until it is
/// dropped: the share lasts as long as the buffer.
pub(crate) async fn buffer<B>(
    body: B,
    limit: usize,
    mut reserved: Reserved,
) -> Buffered<Pin<Box<B>>>
where
    B: HttpBody<Data = Bytes>,
{
    let mut body = Box::pin(body);
    // A declared length is allocated once, not by doubling.
    let mut collected = BytesMut::with_capacity(reserved.bytes());
    loop {
        match body.frame().await {
            None => {
                let bytes = collected.freeze();
                let replay = Replay::new(bytes.clone(), None, None).holding(reserved);
                return Buffered::Complete(replay, bytes);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !reserved.grow_to(collected.len() + data.len()) {
                        return Buffered::OverBudget;
                    }
                    collected.extend_from_slice(&data);
                    if collected.len() > limit {
                        let replay = Replay::new(collected.freeze(), None, Some(body));
                        return Buffered::TooLarge(replay.holding(reserved));
                    }
                }
                Err(frame) => {
                    // Trailers end the body.
                    let trailers = frame.into_trailers().ok();
                    let bytes = collected.freeze();
                    let replay = Replay::new(bytes.clone(), trailers, None).holding(reserved);
                    return Buffered::Complete(replay, bytes);
                }
            },
            Some(Err(_)) => {
                let mut replay = Replay::new(collected.freeze(), None, None);
                replay.failed = true;
                return Buffered::Failed(replay.holding(reserved));
            }
        }
    }
}

pin_project! {
    /// A body that first yields the bytes already read, then the unread rest (if any), then
    /// the trailers: the handler sees exactly what the client sent.
    pub(crate) struct Replay<B> {
        prefix: Option<Bytes>,
        trailers: Option<HeaderMap>,
        failed: bool,
        // The buffer's share of the layer's budget, given back when the replay is dropped.
        reserved: Option<Reserved>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B> Replay<B> {
    fn new(prefix: Bytes, trailers: Option<HeaderMap>, rest: Option<B>) -> Self {
        Self {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            trailers,
            failed: false,
            reserved: None,
            rest,
        }
    }

    fn holding(mut self, reserved: Reserved) -> Self {
        self.reserved = Some(reserved);
        self
    }
}

/// The error a replayed body yields where the original body failed.
#[derive(Debug)]
struct BodyReadFailed;

impl fmt::Display for BodyReadFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body could not be read")
    }
}

impl std::error::Error for BodyReadFailed {}

impl<B> HttpBody for Replay<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if *this.failed {
            *this.failed = false;
            return Poll::Ready(Some(Err(Box::new(BodyReadFailed))));
        }
        if let Some(rest) = this.rest.as_mut().as_pin_mut() {
            match ready!(rest.poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame.map_err(Into::into))),
                None => this.rest.set(None),
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && !self.failed
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint);
        hint.set_lower(hint.lower() + prefix);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["imp_uid"];

    fn v1(key: &str, value: &str) -> bool {
        (key == "success" || key == "imp_success") && value.eq_ignore_ascii_case("false")
    }

    #[test]
    fn query() {
        assert_eq!(
            id_from_query(Some("imp_uid=imp_1&merchant_uid=m"), FIELDS, v1),
            Some(Ok("imp_1".into()))
        );
        assert_eq!(
            id_from_query(Some("imp_uid=imp_1&success=false"), FIELDS, v1),
            Some(Err(Rejection::Cancelled))
        );
        assert_eq!(
            id_from_query(Some("imp_success=false&imp_uid=imp_1"), FIELDS, v1),
            Some(Err(Rejection::Cancelled))
        );
        assert_eq!(
            id_from_query(Some("imp_uid=imp_1&success=true"), FIELDS, v1),
            Some(Ok("imp_1".into()))
        );
        assert_eq!(id_from_query(Some("page=2"), FIELDS, v1), None);
        assert_eq!(id_from_query(None, FIELDS, v1), None);
        assert_eq!(
            id_from_query(Some("imp_uid=imp_1%2F.."), FIELDS, v1),
            Some(Ok("imp_1/..".into()))
        );
    }

    #[test]
    fn two_spellings_name_one_id_or_are_ambiguous() {
        const V2: &[&str] = &["identityVerificationId", "identity_verification_id"];
        let never = |_: &str, _: &str| false;
        assert_eq!(
            id_from_query(
                Some("identityVerificationId=a&identity_verification_id=b"),
                V2,
                never
            ),
            Some(Err(Rejection::AmbiguousId))
        );
        assert_eq!(
            id_from_query(
                Some("identity_verification_id=a&identityVerificationId=a"),
                V2,
                never
            ),
            Some(Ok("a".into()))
        );
        for format in [BodyFormat::Json, BodyFormat::Form] {
            let (differ, same): (&[u8], &[u8]) = match format {
                BodyFormat::Json => (
                    br#"{"identityVerificationId":"a","identity_verification_id":"b"}"#,
                    br#"{"identityVerificationId":"a","identity_verification_id":"a"}"#,
                ),
                BodyFormat::Form => (
                    b"identityVerificationId=a&identity_verification_id=b",
                    b"identityVerificationId=a&identity_verification_id=a",
                ),
            };
            assert_eq!(
                id_from_body(format, differ, V2),
                Err(Rejection::AmbiguousId),
                "{format:?}"
            );
            assert_eq!(id_from_body(format, same, V2), Ok("a".into()), "{format:?}");
        }
    }

    #[test]
    fn bodies() {
        let json = br#"{"name":{"nested":[1,2]},"imp_uid":"imp_9","merchant_uid":"m"}"#;
        assert_eq!(
            id_from_body(BodyFormat::Json, json, FIELDS),
            Ok("imp_9".into())
        );
        assert_eq!(
            id_from_body(BodyFormat::Json, br#"{"x":1}"#, FIELDS),
            Err(Rejection::MissingId)
        );
        assert_eq!(
            id_from_body(BodyFormat::Json, br#"{"imp_uid":5}"#, FIELDS),
            Err(Rejection::MalformedBody)
        );
        assert_eq!(
            id_from_body(BodyFormat::Json, b"[1]", FIELDS),
            Err(Rejection::MalformedBody)
        );
        assert_eq!(
            id_from_body(BodyFormat::Json, b"{", FIELDS),
            Err(Rejection::MalformedBody)
        );
        assert_eq!(
            id_from_body(BodyFormat::Form, b"a=1&imp_uid=imp_2", FIELDS),
            Ok("imp_2".into())
        );
    }

    #[test]
    fn formats() {
        let mut h = HeaderMap::new();
        for (ct, want) in [
            ("application/json", Some(BodyFormat::Json)),
            ("Application/JSON; charset=utf-8", Some(BodyFormat::Json)),
            ("application/merge-patch+json", Some(BodyFormat::Json)),
            ("application/x-www-form-urlencoded", Some(BodyFormat::Form)),
            ("multipart/form-data; boundary=x", None),
            ("text/plain", None),
        ] {
            h.insert(CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(body_format(&h), want, "{ct}");
        }
    }
}
