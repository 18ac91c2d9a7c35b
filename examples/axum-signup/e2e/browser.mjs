// Drives the axum-signup demo in a real headless Chromium, through the emulator's browser SDK
// stand-in, in both of PortOne's flows, in English and in Korean. Usage:
// node browser.mjs APP_URL [SCREENSHOT_DIR]
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const appUrl = process.argv[2];
const shots = process.argv[3] || "screenshots";
if (!appUrl) {
  console.error("usage: node browser.mjs APP_URL [SCREENSHOT_DIR]");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const ADULT = "imp_100000000001"; // 김성인, born 1990
const MINOR = "imp_100000000002";
const FOREIGNER = "imp_100000000003"; // John Smith, born 1988
const MINIMAL = "imp_100000000006"; // 정최소, born 1985
const REGISTERED = "imp_100000000007";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
// Every 404 any page (or its frames) met: the icon included, there must be none.
const notFound = [];
// Playwright sends the locale as Accept-Language: the pages follow it.
async function newPage(locale) {
  const context = await browser.newContext({ locale, viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on("response", (response) => {
    if (response.status() === 404 && !response.url().includes("/certifications/result/")) {
      notFound.push(response.url());
    }
  });
  return page;
}

let passed = 0;
let failed = 0;
function check(name, condition, detail) {
  if (condition) {
    passed += 1;
    console.log(`ok - ${name}`);
  } else {
    failed += 1;
    console.log(`not ok - ${name}: ${detail}`);
  }
}

async function outcomeOf(page) {
  return {
    kind: await page.getAttribute("#outcome", "data-kind"),
    text: (await page.textContent("#outcome")).trim(),
  };
}

async function settled(page) {
  await page.waitForFunction(() => {
    const kind = document.getElementById("outcome").dataset.kind;
    return kind !== "idle" && kind !== "pending";
  });
}

/** Popup flow: click, pick a person (or cancel) in the SDK's overlay, read the outcome. */
async function popup(page, choice, shot) {
  await page.goto(appUrl);
  await page.click("#popup");
  const frame = page.frameLocator("#imp-certification-frame");
  let windowHtml = "";
  if (choice === "cancel") await frame.locator("#cancel").click();
  else if (choice === "escape") {
    await frame.locator("#cancel").waitFor();
    await page.screenshot({ path: join(shots, `${shot}-window.png`) });
    windowHtml = await frame.locator("html").evaluate((html) => html.outerHTML);
    await page.keyboard.press("Escape");
  } else if (choice === "close") await page.click("#imp-certification-close");
  else await frame.locator(`button[data-person="${choice}"]`).click();
  await settled(page);
  await page.screenshot({ path: join(shots, `${shot}.png`) });
  return {
    ...(await outcomeOf(page)),
    overlay: await page.locator("#imp-certification-overlay").count(),
    windowHtml,
  };
}

/** Redirect flow: the browser leaves for the emulator, comes back to the app, which answers
 * with a redirect to a result page (Post/Redirect/Get). */
async function redirect(page, choice, shot) {
  await page.goto(appUrl);
  await Promise.all([page.waitForURL(/\/certify\?/), page.click("#redirect")]);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/certifications/result/")),
    choice === "cancel" ? page.click("#cancel") : page.click(`button[data-person="${choice}"]`),
  ]);
  await page.waitForSelector("#outcome");
  await page.screenshot({ path: join(shots, `${shot}.png`) });
  return { status: response.status(), url: page.url(), ...(await outcomeOf(page)) };
}

try {
  // ---- English ---------------------------------------------------------------------------
  let page = await newPage("en-US");
  await page.goto(appUrl);
  await page.screenshot({ path: join(shots, "00-home-en.png") });
  // Binding is on by default: the page carries this session's ticket, and the browser got
  // the HttpOnly session cookie (invisible to the page's script).
  const ticket = await page.evaluate(() => {
    const main = document.getElementById("signup");
    return main.dataset.merchantUid || main.dataset.identityVerificationId || "";
  });
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "iamport_binding");
  check("the page carries a binding ticket and an HttpOnly session cookie",
    /^[A-Za-z0-9_-]{32}$/.test(ticket) && session && session.httpOnly && session.sameSite === "Lax",
    JSON.stringify({ ticket, session }));
  check("the page is in English for an English browser",
    (await page.getAttribute("html", "lang")) === "en" && /Sign up with identity verification/.test(await page.textContent("h1")),
    await page.textContent("h1"));

  let r = await popup(page, ADULT, "01-popup-adult-created-en");
  check("popup: an adult gets an account, shown masked", r.kind === "created" && /Account created/.test(r.text)
    && r.text.includes("Welcome, 김*인 (born 1990)") && !r.text.includes("김성인"), JSON.stringify(r));
  r = await popup(page, ADULT, "02-popup-adult-again");
  check("popup: the same person again is already registered", r.kind === "registered" && /Already registered/.test(r.text), JSON.stringify(r));
  r = await popup(page, REGISTERED, "03-popup-registered-person");
  check("popup: a person registered before is already registered", r.kind === "registered", JSON.stringify(r));
  r = await popup(page, MINOR, "04-popup-minor-refused-en");
  check("popup: a minor is refused", r.kind === "refused" && /1999 or earlier/.test(r.text), JSON.stringify(r));
  r = await popup(page, "cancel", "05-popup-cancelled");
  check("popup: cancelling shows our cancelled sentence", r.kind === "cancelled"
    && r.text.includes("To continue, please verify your identity again."), JSON.stringify(r));
  r = await popup(page, "escape", "05a-verification-window-en");
  check("the verification window (en) is in English", r.windowHtml.includes('lang="en"')
    && r.windowHtml.includes(">Cancel<") && !r.windowHtml.includes("인증 취소"), r.windowHtml.slice(0, 400));
  check("popup: Escape closes the verification window (cancelled)", r.kind === "cancelled" && r.overlay === 0, JSON.stringify(r));
  r = await popup(page, "close", "05c-popup-close-button");
  check("popup: the close button closes the verification window (cancelled)", r.kind === "cancelled" && r.overlay === 0, JSON.stringify(r));

  r = await redirect(page, FOREIGNER, "06-redirect-created-en");
  check("redirect: an adult gets an account (201 result page), shown masked", r.status === 201 && r.kind === "created"
    && r.text.includes("J**n S***h (born 1988)"), JSON.stringify(r));
  const reloaded = await page.reload();
  check("redirect: reloading the result page shows the same outcome, no second signup",
    reloaded.status() === 201 && (await outcomeOf(page)).kind === "created", `${reloaded.status()}`);
  r = await redirect(page, FOREIGNER, "07-redirect-again");
  check("redirect: the same person again is already registered (409 page)", r.status === 409 && r.kind === "registered", JSON.stringify(r));
  r = await redirect(page, MINOR, "08-redirect-minor-refused-en");
  check("redirect: a minor is refused (403 page)", r.status === 403 && r.kind === "refused", JSON.stringify(r));
  r = await redirect(page, "cancel", "09-redirect-cancelled");
  check("redirect: cancelling shows the same cancelled sentence (400 page)", r.status === 400 && r.kind === "cancelled"
    && r.text.includes("To continue, please verify your identity again."), JSON.stringify(r));

  // ---- Korean ----------------------------------------------------------------------------
  page = await newPage("ko-KR");
  await page.goto(appUrl);
  await page.screenshot({ path: join(shots, "10-home-ko.png") });
  check("the page is in Korean for a Korean browser",
    (await page.getAttribute("html", "lang")) === "ko" && (await page.textContent("h1")) === "본인인증 후 가입하기",
    await page.textContent("h1"));
  r = await popup(page, MINIMAL, "11-popup-created-ko");
  check("popup (ko): an adult gets an account, shown masked", r.kind === "created"
    && r.text.includes("가입이 완료되었습니다") && r.text.includes("정*소님(1985년생)"), JSON.stringify(r));
  r = await popup(page, MINOR, "12-popup-minor-refused-ko");
  check("popup (ko): a minor is refused in Korean", r.kind === "refused"
    && r.text.includes("1999년 또는 그 이전에 태어난 분만 이용할 수 있습니다."), JSON.stringify(r));
  r = await popup(page, "cancel", "13-popup-cancelled-ko");
  check("popup (ko): cancelling shows our Korean sentence", r.kind === "cancelled"
    && r.text.includes("계속하려면 본인인증을 다시 진행해 주세요."), JSON.stringify(r));
  r = await redirect(page, MINOR, "14-redirect-minor-refused-ko");
  check("redirect (ko): a minor is refused (403 page, in Korean)", r.status === 403 && r.kind === "refused"
    && r.text.includes("가입할 수 없습니다"), JSON.stringify(r));
  r = await popup(page, REGISTERED, "15-popup-registered-ko");
  check("popup (ko): a person registered before is already registered, in Korean", r.kind === "registered"
    && r.text.includes("이미 가입된 회원입니다"), JSON.stringify(r));
  r = await popup(page, "escape", "16-verification-window-ko");
  check("the verification window (ko) is in Korean, without English buttons or backticks",
    r.windowHtml.includes('lang="ko"') && r.windowHtml.includes("인증 취소") && !r.windowHtml.includes(">Cancel<")
    && !r.windowHtml.includes("`"), r.windowHtml.slice(0, 400));
  r = await redirect(page, "cancel", "17-redirect-cancelled-ko");
  check("redirect (ko): cancelling shows the Korean sentence, not the headline twice", r.status === 400
    && r.kind === "cancelled" && r.text.includes("계속하려면 본인인증을 다시 진행해 주세요."), JSON.stringify(r));
  check("no page or frame met a 404 (the icon included)", notFound.length === 0, JSON.stringify(notFound));
} catch (error) {
  failed += 1;
  console.log(`not ok - browser run aborted: ${error.stack || error}`);
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
