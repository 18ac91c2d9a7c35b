// Drives the axum-signup demo in a real headless Chromium, through the emulator's browser SDK
// stand-in, in both of PortOne's flows. Usage: node browser.mjs APP_URL [SCREENSHOT_DIR]
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

const ADULT = "imp_100000000001";
const MINOR = "imp_100000000002";
const FOREIGNER = "imp_100000000003";
const REGISTERED = "imp_100000000007";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
page.setDefaultTimeout(15000);

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

/** Popup flow: click, pick a person (or cancel) in the SDK's overlay, read the outcome. */
async function popup(choice, shot) {
  await page.goto(appUrl);
  await page.click("#popup");
  const frame = page.frameLocator("#imp-certification-frame");
  if (choice === "cancel") await frame.locator("#cancel").click();
  else await frame.locator(`button[data-person="${choice}"]`).click();
  await page.waitForFunction(() => {
    const kind = document.getElementById("outcome").dataset.kind;
    return kind !== "idle" && kind !== "pending";
  });
  await page.screenshot({ path: join(shots, `${shot}.png`) });
  return {
    kind: await page.getAttribute("#outcome", "data-kind"),
    text: (await page.textContent("#outcome")).trim(),
  };
}

/** Redirect flow: the browser leaves for the emulator and comes back to the app's page. */
async function redirect(choice, shot) {
  await page.goto(appUrl);
  await Promise.all([page.waitForURL(/\/certify\?/), page.click("#redirect")]);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/certifications/redirect")),
    choice === "cancel" ? page.click("#cancel") : page.click(`button[data-person="${choice}"]`),
  ]);
  await page.waitForSelector("#outcome");
  await page.screenshot({ path: join(shots, `${shot}.png`) });
  return {
    status: response.status(),
    kind: await page.getAttribute("#outcome", "data-kind"),
    text: (await page.textContent("#outcome")).trim(),
  };
}

try {
  await page.goto(appUrl);
  await page.screenshot({ path: join(shots, "00-home.png") });
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

  let r = await popup(ADULT, "01-popup-adult-created");
  check("popup: an adult gets an account", r.kind === "created" && /Account created/.test(r.text), JSON.stringify(r));
  r = await popup(ADULT, "02-popup-adult-again");
  check("popup: the same person again is already registered", r.kind === "registered" && /Already registered/.test(r.text), JSON.stringify(r));
  r = await popup(REGISTERED, "03-popup-registered-person");
  check("popup: a person registered before is already registered", r.kind === "registered", JSON.stringify(r));
  r = await popup(MINOR, "04-popup-minor-refused");
  check("popup: a minor is refused", r.kind === "refused" && /1999 or earlier/.test(r.text), JSON.stringify(r));
  r = await popup("cancel", "05-popup-cancelled");
  check("popup: cancelling shows cancelled", r.kind === "cancelled" && /cancelled/.test(r.text), JSON.stringify(r));

  r = await redirect(FOREIGNER, "06-redirect-created");
  check("redirect: an adult gets an account (201 page)", r.status === 201 && r.kind === "created", JSON.stringify(r));
  r = await redirect(FOREIGNER, "07-redirect-again");
  check("redirect: the same person again is already registered (409 page)", r.status === 409 && r.kind === "registered", JSON.stringify(r));
  r = await redirect(MINOR, "08-redirect-minor");
  check("redirect: a minor is refused (403 page)", r.status === 403 && r.kind === "refused", JSON.stringify(r));
  r = await redirect("cancel", "09-redirect-cancelled");
  check("redirect: cancelling shows cancelled (400 page)", r.status === 400 && r.kind === "cancelled", JSON.stringify(r));
} catch (error) {
  failed += 1;
  console.log(`not ok - browser run aborted: ${error.stack || error}`);
  await page.screenshot({ path: join(shots, "99-failure.png") }).catch(() => {});
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
