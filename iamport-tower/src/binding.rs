//! Binding: tickets that tie a verification to the browser session that started it.
//!
//! A PortOne id alone is a bearer credential: v1 `imp_uid`s are short and look sequential,
//! and the merchant's token reads every verification the merchant ever had. Anyone who
//! learns the id of someone else's verification on the site — from a URL, a `Referer`, a log
//! line, a shared screen, or by guessing — could submit it and be admitted as that person.
//! PortOne's guide does not guard against this, and no PortOne SDK does.
//!
//! The fix: before the page opens PortOne's window, the server mints a **ticket** for the
//! browser's session, and the page passes it as the verification's merchant-chosen id —
//! v1 `merchant_uid` (`IMP.certification({ merchant_uid })`), v2 `identityVerificationId`
//! (`PortOne.requestIdentityVerification({ identityVerificationId })`). PortOne keeps it in
//! the record. A route guarded with `bound = true` admits only a verification whose record
//! carries a genuine, unexpired ticket minted for the session of the request at hand.
//!
//! A ticket is 32 URL-safe characters (`[A-Za-z0-9_-]`, within the 40 that PGs allow for
//! merchant ids): base64url of a 4-byte expiry, an 8-byte random nonce and a 96-bit
//! HMAC-SHA256 tag over both and the session key. Nothing is stored on the server. The
//! session key is, by default, the value of an `HttpOnly`, `SameSite=Lax` cookie the library
//! sets when minting ([`Binding::mint`]); or the application's own session id
//! ([`Binding::session_key`], e.g. from tower-sessions or axum-login, whose layers must then
//! run before [`CertificationLayer`](crate::CertificationLayer)).
//!
//! # Sessions are minted by the server
//!
//! The library's cookie carries a random 128-bit session id and an HMAC-SHA256 tag of it
//! under the binding secret (43 base64url characters). A value the server never issued —
//! planted by someone who hopes the victim's verification will be bound to a session they
//! know — is no session: [`mint`](Binding::mint) replaces it with a fresh one, and a `bound`
//! route refuses a request carrying it before any PortOne call. Two different genuine
//! sessions in one request (a second cookie of the name, tossed in with another `Path` or
//! `Domain`) are no session either.
//!
//! The tag cannot stop an attacker from planting a genuine session of their *own*; the
//! cookie's `__Host-` prefix and `Secure` attribute (the default,
//! [`secure_cookie`](Binding::secure_cookie)) do: a sibling subdomain or a plain-http
//! response can then set no cookie of that name. Turn `Secure` off only for plain `http://`
//! on loopback.
//!
//! # Refused before any lookup
//!
//! Under `bound = true` a request with no valid session is refused (403
//! `unbound-verification`) before PortOne is asked; so is one whose own ticket fails — the
//! `merchant_uid` of PortOne v1's redirect (`?imp_uid=…&merchant_uid=…`), and in v2 the id
//! itself, which *is* the ticket ([`CertificationSource::request_ticket`](crate::CertificationSource::request_ticket)).
//! The ticket in the record PortOne returns is still checked after the lookup: that is
//! the one that counts.
//!
//! ```
//! use http::HeaderMap;
//! use iamport_tower::binding::Binding;
//!
//! let binding = Binding::new("a stable secret of at least 32 bytes!!");
//! // In the handler that serves the page (no cookie yet: one is made).
//! let minted = binding.mint(&HeaderMap::new());
//! assert_eq!(minted.ticket().len(), 32);
//! let set_cookie = minted.set_cookie().expect("a new session gets a cookie");
//! assert!(set_cookie.to_str().unwrap().contains("HttpOnly"));
//! // Put `minted.ticket()` in the page as the `merchant_uid` / `identityVerificationId`.
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use http::request::Parts;
use sha2::Sha256;

use iamport_client::Secret;

/// The default lifetime of a ticket: 30 minutes to complete a verification.
pub const DEFAULT_TICKET_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The default name of the session cookie [`Binding::mint`] sets when it is `Secure` (the
/// default). The `__Host-` prefix makes browsers refuse the cookie unless it is `Secure`,
/// host-only and `Path=/`: a sibling subdomain cannot plant ("toss") a session of its choice
/// into a person's browser and so have their verification bound to the attacker's session.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-iamport_binding";

/// The default name when the cookie is not `Secure` (plain `http://` development servers,
/// where the `__Host-` prefix is not allowed).
pub const DEFAULT_INSECURE_COOKIE_NAME: &str = "iamport_binding";

/// The length of a ticket in characters.
pub const TICKET_LEN: usize = 32;

const EXPIRY_LEN: usize = 4;
const NONCE_LEN: usize = 8;
const TAG_LEN: usize = 12;
const RAW_LEN: usize = EXPIRY_LEN + NONCE_LEN + TAG_LEN;
/// Session ids: 16 random bytes.
const SESSION_ID_LEN: usize = 16;
/// The session id's tag: 16 bytes of HMAC-SHA256.
const SESSION_TAG_LEN: usize = 16;
/// Session cookie values: id and tag, base64url.
const SESSION_VALUE_LEN: usize = 43;
const DOMAIN: &[u8] = b"iamport-tower binding ticket v1\0";
const SESSION_DOMAIN: &[u8] = b"iamport-tower binding session v1\0";

/// Reads the application's own session id from a request (see [`Binding::session_key`]).
pub type SessionKeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// Mints and checks binding tickets. Build one from a secret, give it to the layer
/// ([`CertificationLayer::binding`](crate::CertificationLayer::binding)) and use it in the
/// handler that serves the verification page ([`mint`](Self::mint)). Clones share the key.
#[derive(Clone)]
pub struct Binding {
    mac: Hmac<Sha256>,
    lifetime: Duration,
    /// `None`: the default for the `secure` setting.
    cookie_name: Option<Arc<str>>,
    secure: bool,
    session_key: Option<SessionKeyFn>,
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("lifetime", &self.lifetime)
            .field("cookie_name", &self.name())
            .field("secure", &self.secure)
            .field("app_session_key", &self.session_key.is_some())
            .finish_non_exhaustive()
    }
}

/// A ticket minted for a session, and the cookie that session needs.
#[derive(Debug, Clone)]
pub struct Minted {
    ticket: String,
    set_cookie: Option<HeaderValue>,
}

impl Minted {
    /// The ticket: the v1 `merchant_uid` / v2 `identityVerificationId` the page must use.
    pub fn ticket(&self) -> &str {
        &self.ticket
    }

    /// The `Set-Cookie` value to send with the page, when the request had no session
    /// cookie yet (`None` when it had one, or with an application session key).
    pub fn set_cookie(&self) -> Option<&HeaderValue> {
        self.set_cookie.as_ref()
    }

    /// Both parts, owned.
    pub fn into_parts(self) -> (String, Option<HeaderValue>) {
        (self.ticket, self.set_cookie)
    }
}

impl Binding {
    /// Tickets keyed by `secret` (use a random value of at least 32 bytes, kept stable across
    /// restarts and replicas; tickets minted under another secret are refused).
    pub fn new(secret: impl Into<Secret>) -> Self {
        let secret = secret.into();
        Self {
            mac: Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .expect("HMAC takes keys of any length"),
            lifetime: DEFAULT_TICKET_LIFETIME,
            cookie_name: None,
            secure: true,
            session_key: None,
        }
    }

    /// How long a ticket stays valid after minting (default [`DEFAULT_TICKET_LIFETIME`]):
    /// the time a person has to complete the verification and submit it.
    #[must_use]
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Whether the session cookie is `Secure`, and so named with the `__Host-` prefix
    /// (default `true`). Turn it off only where browsers reach the server over plain `http://`
    /// on loopback: anywhere else a cookie without it can be planted by a sibling subdomain or
    /// any plain-http response on the way (see [Sessions](crate::binding#sessions-are-minted-by-the-server)).
    #[must_use]
    pub fn secure_cookie(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The session cookie's name (default [`DEFAULT_COOKIE_NAME`], or
    /// [`DEFAULT_INSECURE_COOKIE_NAME`] without `Secure`). Keep a `__Host-` prefix in
    /// production.
    #[must_use]
    pub fn cookie_name(mut self, name: &str) -> Self {
        self.cookie_name = Some(name.into());
        self
    }

    fn name(&self) -> &str {
        match &self.cookie_name {
            Some(name) => name,
            None if self.secure => DEFAULT_COOKIE_NAME,
            None => DEFAULT_INSECURE_COOKIE_NAME,
        }
    }

    /// Binds to the application's own session instead of a cookie of ours: `key` reads the
    /// session id from a request (its cookie, or an extension a session layer put there).
    /// Mint with [`mint_for`](Self::mint_for) then. A request for which `key` returns `None`
    /// has no session, and `bound` routes refuse it.
    #[must_use]
    pub fn session_key<F>(mut self, key: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.session_key = Some(Arc::new(key));
        self
    }

    /// Mints a ticket for the session of a request with these headers: its session cookie
    /// when it has one this binding issued, else a new session whose `Set-Cookie` the
    /// response must carry (replacing a value it did not issue).
    pub fn mint(&self, headers: &HeaderMap) -> Minted {
        if let Some(session) = self.cookie_session(headers) {
            return Minted {
                ticket: self.mint_for(session),
                set_cookie: None,
            };
        }
        let session = self.new_session();
        let mut cookie = format!("{}={session}; Path=/; HttpOnly; SameSite=Lax", self.name());
        if self.secure {
            cookie.push_str("; Secure");
        }
        Minted {
            ticket: self.mint_for(&session),
            set_cookie: Some(
                HeaderValue::from_str(&cookie).expect("cookie names and base64url are header-safe"),
            ),
        }
    }

    /// Mints a ticket for an explicit session key (the application's own session id).
    pub fn mint_for(&self, session_key: &str) -> String {
        let expiry = unix_now().saturating_add(self.lifetime.as_secs());
        let expiry = u32::try_from(expiry).unwrap_or(u32::MAX);
        self.encode(expiry, random::<NONCE_LEN>(), session_key)
    }

    /// Whether `ticket` is genuine, unexpired and minted for `session_key`. The tag is
    /// compared in constant time.
    pub fn verify(&self, ticket: &str, session_key: &str) -> bool {
        self.verify_at(ticket, session_key, unix_now())
    }

    fn verify_at(&self, ticket: &str, session_key: &str, now: u64) -> bool {
        let Some(raw) = decode(ticket) else {
            return false;
        };
        let (expiry, rest) = raw.split_at(EXPIRY_LEN);
        let (nonce, tag) = rest.split_at(NONCE_LEN);
        let expiry = u32::from_be_bytes(expiry.try_into().expect("4 bytes"));
        let mac = self.tag_input(expiry, nonce, session_key);
        // Check the tag first, in constant time, whatever the expiry says.
        let genuine = mac.verify_truncated_left(tag).is_ok();
        genuine && u64::from(expiry) >= now
    }

    /// The session key of a request, as the layer records it: the application's, or our
    /// cookie's when this binding issued it.
    pub(crate) fn session_of(&self, parts: &Parts) -> Option<Box<str>> {
        match &self.session_key {
            Some(key) => key(parts).map(String::into_boxed_str),
            None => self.cookie_session(&parts.headers).map(Box::from),
        }
    }

    /// The request's session cookie, if this binding issued it (and the request carries no
    /// other genuine one).
    fn cookie_session<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let mut genuine = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == self.name())
            .map(|(_, value)| value)
            .filter(|value| self.is_issued(value));
        let session = genuine.next()?;
        genuine.all(|other| other == session).then_some(session)
    }

    /// A new session: a random id and its tag.
    fn new_session(&self) -> String {
        let id = random::<SESSION_ID_LEN>();
        let mut value = [0u8; SESSION_ID_LEN + SESSION_TAG_LEN];
        value[..SESSION_ID_LEN].copy_from_slice(&id);
        let tag = self.session_tag(&id).finalize().into_bytes();
        value[SESSION_ID_LEN..].copy_from_slice(&tag[..SESSION_TAG_LEN]);
        URL_SAFE_NO_PAD.encode(value)
    }

    /// Whether `value` is a session cookie value this binding issued (the tag compared in
    /// constant time).
    fn is_issued(&self, value: &str) -> bool {
        if value.len() != SESSION_VALUE_LEN {
            return false;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(value) else {
            return false;
        };
        let Some((id, tag)) = raw.split_at_checked(SESSION_ID_LEN) else {
            return false;
        };
        tag.len() == SESSION_TAG_LEN && self.session_tag(id).verify_truncated_left(tag).is_ok()
    }

    fn session_tag(&self, id: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(SESSION_DOMAIN);
        mac.update(id);
        mac
    }

    fn tag_input(&self, expiry: u32, nonce: &[u8], session_key: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(&expiry.to_be_bytes());
        mac.update(nonce);
        mac.update(session_key.as_bytes());
        mac
    }

    fn encode(&self, expiry: u32, nonce: [u8; NONCE_LEN], session_key: &str) -> String {
        let tag = self
            .tag_input(expiry, &nonce, session_key)
            .finalize()
            .into_bytes();
        let mut raw = [0u8; RAW_LEN];
        raw[..EXPIRY_LEN].copy_from_slice(&expiry.to_be_bytes());
        raw[EXPIRY_LEN..EXPIRY_LEN + NONCE_LEN].copy_from_slice(&nonce);
        raw[EXPIRY_LEN + NONCE_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }
}

/// The raw bytes of a well-formed ticket (canonical base64url, exactly [`TICKET_LEN`]).
fn decode(ticket: &str) -> Option<[u8; RAW_LEN]> {
    if ticket.len() != TICKET_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(ticket).ok()?;
    bytes.try_into().ok()
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding::new("test secret of a decent length.....")
    }

    fn session(n: u8) -> String {
        URL_SAFE_NO_PAD.encode([n; 16])
    }

    #[test]
    fn tickets_are_short_url_safe_and_round_trip() {
        let b = binding();
        for n in 0..200u8 {
            let s = session(n);
            let t = b.mint_for(&s);
            assert_eq!(t.len(), TICKET_LEN);
            assert!(
                t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            );
            assert!(b.verify(&t, &s), "round trip {n}");
            assert!(
                !b.verify(&t, &session(n.wrapping_add(1))),
                "other session {n}"
            );
        }
    }

    #[test]
    fn any_single_character_change_fails() {
        let b = binding();
        let s = session(7);
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                .chars()
                .collect();
        for _ in 0..20 {
            let t = b.mint_for(&s);
            for i in 0..t.len() {
                for &c in &alphabet {
                    let mut changed: Vec<char> = t.chars().collect();
                    if changed[i] == c {
                        continue;
                    }
                    changed[i] = c;
                    let changed: String = changed.into_iter().collect();
                    // The last character carries 4 padding bits in base64url: canonical
                    // decoding refuses a change there too.
                    assert!(!b.verify(&changed, &s), "{t} → {changed} verified");
                }
            }
            // Truncated, extended, padded.
            assert!(!b.verify(&t[..TICKET_LEN - 1], &s));
            assert!(!b.verify(&format!("{t}A"), &s));
            assert!(!b.verify(&format!("{t}="), &s));
        }
    }

    #[test]
    fn expiry_other_secrets_and_garbage() {
        let b = binding().lifetime(Duration::from_secs(60));
        let s = session(1);
        let t = b.mint_for(&s);
        let now = unix_now();
        assert!(b.verify_at(&t, &s, now + 60));
        assert!(!b.verify_at(&t, &s, now + 61 + 1));
        assert!(!Binding::new("another secret entirely.............").verify(&t, &s));
        for garbage in [
            "",
            "imp_100000000001",
            "signup_1700000000000",
            &"A".repeat(32),
        ] {
            assert!(!b.verify(garbage, &s), "{garbage}");
        }
    }

    #[test]
    fn cookies_are_made_once_and_read_back() {
        let b = binding();
        let minted = b.mint(&HeaderMap::new());
        let cookie = minted.set_cookie().unwrap().to_str().unwrap().to_owned();
        assert!(cookie.starts_with("__Host-iamport_binding="), "{cookie}");
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax")
                && cookie.contains("Secure")
        );
        let value = cookie.split(';').next().unwrap().to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, format!("other=1; {value}").parse().unwrap());
        let again = b.mint(&headers);
        assert!(
            again.set_cookie().is_none(),
            "an existing session keeps its cookie"
        );
        let session = value.split_once('=').unwrap().1;
        assert!(b.verify(again.ticket(), session));
        assert!(b.verify(minted.ticket(), session));
        // A malformed cookie value is not a session.
        headers.insert(COOKIE, "__Host-iamport_binding=short".parse().unwrap());
        assert!(b.mint(&headers).set_cookie().is_some());
        let insecure = Binding::new("x")
            .secure_cookie(false)
            .mint(&HeaderMap::new());
        let insecure = insecure.set_cookie().unwrap().to_str().unwrap();
        assert!(!insecure.contains("Secure") && insecure.starts_with("iamport_binding="));
    }

    #[test]
    fn a_cookie_the_server_never_issued_is_no_session() {
        let b = binding();
        // Well-formed values of the old shape and of the new, none of them issued here.
        let issued_elsewhere = Binding::new("another secret entirely.............")
            .mint(&HeaderMap::new())
            .into_parts()
            .1
            .unwrap();
        let elsewhere = issued_elsewhere
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let elsewhere = elsewhere.split_once('=').unwrap().1.to_owned();
        for planted in [session(3), "A".repeat(43), elsewhere] {
            let mut headers = HeaderMap::new();
            let cookie = format!("__Host-iamport_binding={planted}");
            headers.insert(COOKIE, cookie.parse().unwrap());
            let minted = b.mint(&headers);
            let fresh = minted.set_cookie().expect("a planted value is replaced");
            let fresh = fresh.to_str().unwrap().split(';').next().unwrap();
            assert_ne!(fresh, cookie, "{planted}");
            assert!(!b.verify(minted.ticket(), &planted), "{planted}");
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let b = Binding::new("the-secret-value-123456789012345");
        assert!(!format!("{b:?}").contains("the-secret"));
    }
}
