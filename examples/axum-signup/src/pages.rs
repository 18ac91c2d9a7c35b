//! The demo's pages and words, in the browser's language (Korean or English, as the
//! library's rejections: `Accept-Language` decides, English when it names neither).

use iamport_mock::html::{escape, favicon_link};
use iamport_tower::{Language, Rejection};
use serde_json::{Value, json};

/// The outcome kinds a page can show; the page's script and the tests read them from
/// `data-kind`.
pub(crate) const KINDS: [&str; 7] = [
    "created",
    "registered",
    "cancelled",
    "unbound",
    "refused",
    "invalid",
    "error",
];

/// Every sentence of the demo's own, in one language.
pub(crate) struct Words {
    pub(crate) title: &'static str,
    pub(crate) heading: &'static str,
    pub(crate) rule: &'static str,
    pub(crate) emulated: &'static str,
    pub(crate) real: &'static str,
    pub(crate) popup: &'static str,
    pub(crate) redirect: &'static str,
    pub(crate) verifying: &'static str,
    pub(crate) verifying_detail: &'static str,
    pub(crate) back: &'static str,
    pub(crate) expired: &'static str,
    pub(crate) expired_detail: &'static str,
}

pub(crate) fn words(language: Language) -> &'static Words {
    match language {
        Language::Korean => &KO,
        _ => &EN,
    }
}

const KO: Words = Words {
    title: "본인인증 가입 데모",
    heading: "본인인증 후 가입하기",
    rule: "1999년 또는 그 이전에 태어난 분만, 한 사람당 한 번 가입할 수 있습니다.",
    emulated: "PortOne 에뮬레이터로 동작합니다. 인증 창에서 테스트용 인물을 고를 수 있습니다.",
    real: "실제 PortOne 본인인증이 진행됩니다.",
    popup: "본인인증 후 가입 (팝업)",
    redirect: "본인인증 후 가입 (페이지 이동)",
    verifying: "본인인증을 진행하고 있습니다…",
    verifying_detail: "열린 창에서 본인인증을 마쳐 주세요.",
    back: "← 처음으로",
    expired: "결과를 찾을 수 없습니다",
    expired_detail: "결과 페이지는 본인인증을 진행한 브라우저에서 10분 동안만 볼 수 있습니다. 처음부터 다시 시도해 주세요.",
};

const EN: Words = Words {
    title: "Identity-verified signup demo",
    heading: "Sign up with identity verification",
    rule: "Adults born in 1999 or earlier, one account per person.",
    emulated: "PortOne is emulated: the verification window lets you pick a test person.",
    real: "Real PortOne: a real identity verification runs.",
    popup: "Verify and sign up (popup)",
    redirect: "Verify and sign up (redirect)",
    verifying: "Verifying…",
    verifying_detail: "Finish the verification in the window that opened.",
    back: "← back",
    expired: "No such result",
    expired_detail: "A result page can be seen for 10 minutes, in the browser that verified only. Please start again.",
};

/// The headline of an outcome kind.
pub(crate) fn headline(kind: &str, language: Language) -> &'static str {
    let korean = language == Language::Korean;
    match (kind, korean) {
        ("created", true) => "가입이 완료되었습니다",
        ("created", false) => "Account created",
        ("registered", true) => "이미 가입된 회원입니다",
        ("registered", false) => "Already registered",
        ("cancelled", true) => "본인인증이 취소되었습니다",
        ("cancelled", false) => "Verification cancelled",
        ("unbound", true) => "이 브라우저에서 진행한 본인인증이 아닙니다",
        ("unbound", false) => "Not verified in this browser",
        ("refused", true) => "가입할 수 없습니다",
        ("refused", false) => "You cannot sign up",
        ("invalid", true) => "잘못된 요청입니다",
        ("invalid", false) => "Bad request",
        (_, true) => "잠시 후 다시 시도해 주세요",
        (_, false) => "Please try again shortly",
    }
}

/// The outcome kind of a problem+json refusal.
pub(crate) fn kind_of(problem_type: &str, status: u16) -> &'static str {
    match (problem_type.rsplit(':').next().unwrap_or(""), status) {
        ("already-registered", _) => "registered",
        ("verification-cancelled", _) => "cancelled",
        ("unbound-verification", _) => "unbound",
        ("policy-not-met" | "not-certified" | "unknown-verification", _) => "refused",
        (_, 400..=499) => "invalid",
        _ => "error",
    }
}

/// The person a successful signup shows: masked name and birth year.
#[derive(Debug, Clone)]
pub(crate) struct Welcome {
    pub(crate) account_id: String,
    pub(crate) name: Option<String>,
    pub(crate) birth_year: Option<i16>,
}

impl Welcome {
    /// "Welcome, 김*인 (born 1990). Your account id is acct_000001."
    pub(crate) fn sentence(&self, language: Language) -> String {
        let korean = language == Language::Korean;
        let who = match (&self.name, self.birth_year, korean) {
            (Some(name), Some(year), true) => format!("{name}님({year}년생), 환영합니다. "),
            (Some(name), None, true) => format!("{name}님, 환영합니다. "),
            (Some(name), Some(year), false) => format!("Welcome, {name} (born {year}). "),
            (Some(name), None, false) => format!("Welcome, {name}. "),
            (None, _, true) => "환영합니다. ".into(),
            (None, _, false) => "Welcome. ".into(),
        };
        let id = &self.account_id;
        if korean {
            format!("{who}계정 번호는 {id}입니다.")
        } else {
            format!("{who}Your account id is {id}.")
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "account_id": self.account_id,
            "person": { "name": self.name, "birth_year": self.birth_year },
        })
    }

    pub(crate) fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            account_id: value["account_id"].as_str()?.to_owned(),
            name: value["person"]["name"].as_str().map(str::to_owned),
            birth_year: value["person"]["birth_year"]
                .as_i64()
                .and_then(|y| i16::try_from(y).ok()),
        })
    }
}

/// `홍길동` → `홍*동`, `김철` → `김*`, `남궁민수` → `남**수`, `John Smith` → `J**n S***h`:
/// the first and last character of each word, the rest masked, as Korean sites show a
/// verified name.
pub(crate) fn mask_name(name: &str) -> String {
    name.split(' ')
        .map(|word| {
            let chars: Vec<char> = word.chars().collect();
            match chars.len() {
                0 => String::new(),
                1 => "*".into(),
                2 => format!("{}*", chars[0]),
                n => format!("{}{}{}", chars[0], "*".repeat(n - 2), chars[n - 1]),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const STYLE: &str = "<style>body{font-family:system-ui,'Noto Sans KR','NanumGothic',sans-serif;\
background:#f4f5f8;margin:0}main{max-width:560px;margin:40px auto;background:#fff;padding:28px;\
border-radius:14px;box-shadow:0 2px 12px rgba(0,0,0,.06)}h1{font-size:20px}button{font-size:15px;\
padding:10px 16px;border-radius:8px;border:0;background:#3056d3;color:#fff;cursor:pointer;\
margin:4px 8px 4px 0}button.secondary{background:#5b6478}.outcome{margin-top:18px;padding:14px;\
border-radius:10px;background:#eef1f6;min-height:1.4em}.outcome.created{background:#e3f6e8}\
.outcome.registered,.outcome.refused,.outcome.unbound{background:#fdecec}\
.outcome.cancelled{background:#fff6dd}.outcome[data-kind=idle]{display:none}small{color:#666}</style>";

/// A result page: the redirect flow's answer (after Post/Redirect/Get), and the page for an
/// unknown or expired result.
pub(crate) fn result_page(language: Language, kind: &str, headline: &str, detail: &str) -> String {
    let words = words(language);
    format!(
        r#"<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">{icon}{STYLE}</head>
<body><main><h1>{title}</h1>
<div id="outcome" class="outcome {kind}" data-kind="{kind}"><strong>{headline}</strong><p>{detail}</p></div>
<p><a href="/">{back}</a></p></main></body></html>"#,
        lang = language.tag(),
        title = escape(words.title),
        kind = escape(kind),
        headline = escape(headline),
        detail = escape(detail),
        back = escape(words.back),
        icon = favicon_link(),
    )
}

/// The page's script: both flows, v1 and v2, in the page's language.
const SCRIPT: &str = r#"
const CONFIG = JSON.parse(document.getElementById("config").textContent);
const WORDS = CONFIG.words;
const outcome = document.getElementById("outcome");
function show(kind, detail) {
  outcome.className = "outcome " + kind;
  outcome.dataset.kind = kind;
  outcome.innerHTML = "";
  const strong = document.createElement("strong");
  strong.textContent = WORDS.headlines[kind] || "";
  const p = document.createElement("p");
  p.textContent = detail || "";
  outcome.append(strong, p);
}
function welcome(answer) {
  const person = answer.person || {};
  const who = person.name ? WORDS.welcome.replace("{name}", person.name)
    .replace("{year}", person.birth_year || "?") : "";
  return who + WORDS.account.replace("{id}", answer.account_id);
}
// The popup flow's last step, as in PortOne's guide: send the id to the server. The browser
// sends its Accept-Language, so refusals come back in the page's language.
async function signUp(body) {
  const response = await fetch("/certifications", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.status === 201) return show("created", welcome(answer));
  const kind = response.status === 409 ? "registered"
    : answer.type && answer.type.endsWith(":unbound-verification") ? "unbound"
    : response.status === 403 ? "refused"
    : response.status < 500 ? "invalid" : "error";
  show(kind, answer.detail || "");
}
// Ours, in both flows: the redirect flow's cancellation is the server's 400 with this same
// sentence, so PortOne's own message (Korean only) is not shown here either.
function cancelled() { show("cancelled", WORDS.cancelled); }
const redirectUrl = location.origin + "/certifications/redirect";
// Binding: the server minted this page's ticket (`data-merchant-uid` / v1,
// `data-identity-verification-id` / v2); each further attempt gets a fresh one.
const page = document.getElementById("signup");
let nextTicket = page.dataset.merchantUid || page.dataset.identityVerificationId || null;
async function takeTicket(fallback) {
  if (page.dataset.bound !== "true") return fallback();
  const ticket = nextTicket || (await (await fetch("/ticket", { cache: "no-store" })).json()).ticket;
  nextTicket = null;
  return ticket;
}
if (CONFIG.api === "v2") {
  const newId = () => takeTicket(() => "identity-verification-" + Date.now() + "-" + Math.random().toString(16).slice(2));
  document.getElementById("popup").addEventListener("click", async () => {
    show("pending", WORDS.verifying);
    const rsp = await PortOne.requestIdentityVerification({
      storeId: CONFIG.storeId, channelKey: CONFIG.channelKey, identityVerificationId: await newId(),
    });
    if (rsp === undefined || rsp.code !== undefined) return cancelled();
    await signUp({ identityVerificationId: rsp.identityVerificationId });
  });
  document.getElementById("redirect").addEventListener("click", async () => {
    PortOne.requestIdentityVerification({
      storeId: CONFIG.storeId, channelKey: CONFIG.channelKey, identityVerificationId: await newId(), redirectUrl,
    });
  });
} else {
  IMP.init(CONFIG.merchantCode);
  const merchantUid = () => takeTicket(() => "signup_" + Date.now());
  document.getElementById("popup").addEventListener("click", async () => {
    show("pending", WORDS.verifying);
    IMP.certification({ merchant_uid: await merchantUid(), popup: true }, async (rsp) => {
      if (!rsp.success) return cancelled();
      await signUp({ imp_uid: rsp.imp_uid, merchant_uid: rsp.merchant_uid });
    });
  });
  document.getElementById("redirect").addEventListener("click", async () => {
    IMP.certification({ merchant_uid: await merchantUid(), m_redirect_url: redirectUrl }, () => {});
  });
}
"#;

/// The signup page. `config` holds the SDK settings (`api`, `merchantCode` / `storeId`,
/// `channelKey`); `ticket_attribute` the binding ticket's `data-…` attribute, if any.
pub(crate) fn index_page(
    language: Language,
    script_url: &str,
    emulated: bool,
    mut config: Value,
    ticket_attribute: &str,
    bound: bool,
) -> String {
    let words = words(language);
    let mut headlines = serde_json::Map::new();
    for kind in KINDS {
        headlines.insert(kind.into(), headline(kind, language).into());
    }
    headlines.insert("pending".into(), words.verifying.into());
    let korean = language == Language::Korean;
    config["words"] = json!({
        "headlines": headlines,
        "verifying": words.verifying_detail,
        "cancelled": Rejection::Cancelled.detail_in(language),
        "welcome": if korean { "{name}님({year}년생), 환영합니다. " } else { "Welcome, {name} (born {year}). " },
        "account": if korean { "계정 번호는 {id}입니다." } else { "Your account id is {id}." },
    });
    let api = config["api"].as_str().unwrap_or("v1").to_owned();
    // `</` cannot end the JSON's <script> element early: escape every `<`.
    let config = config.to_string().replace('<', "\\u003c");
    format!(
        r#"<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">{icon}{STYLE}
<script src="{script}"></script></head>
<body><main id="signup"{ticket_attribute} data-bound="{bound}">
<h1>{heading}</h1>
<p>{rule} <small>{note} PortOne API {api}.</small></p>
<button id="popup">{popup}</button>
<button id="redirect" class="secondary">{redirect}</button>
<div id="outcome" class="outcome" data-kind="idle" aria-live="polite"></div>
</main>
<script type="application/json" id="config">{config}</script>
<script>{SCRIPT}</script>
</body></html>"#,
        lang = language.tag(),
        title = escape(words.title),
        script = escape(script_url),
        heading = escape(words.heading),
        rule = escape(words.rule),
        note = escape(if emulated { words.emulated } else { words.real }),
        popup = escape(words.popup),
        redirect = escape(words.redirect),
        icon = favicon_link(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_masked_as_korean_sites_do() {
        assert_eq!(mask_name("홍길동"), "홍*동");
        assert_eq!(mask_name("김철"), "김*");
        assert_eq!(mask_name("남궁민수"), "남**수");
        assert_eq!(mask_name("John Smith"), "J**n S***h");
        assert_eq!(mask_name("이"), "*");
    }

    #[test]
    fn welcome_in_both_languages() {
        let w = Welcome {
            account_id: "acct_000001".into(),
            name: Some("홍*동".into()),
            birth_year: Some(1990),
        };
        assert_eq!(
            w.sentence(Language::Korean),
            "홍*동님(1990년생), 환영합니다. 계정 번호는 acct_000001입니다."
        );
        assert_eq!(
            w.sentence(Language::English),
            "Welcome, 홍*동 (born 1990). Your account id is acct_000001."
        );
    }
}
