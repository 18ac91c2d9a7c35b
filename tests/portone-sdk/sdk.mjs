// PortOne's official server SDK against the emulator: get, not found, unauthorized, store
// mismatch, list, login/refresh, and the send/confirm paths the emulator does not serve —
// every error must arrive typed (the SDK's error class with `data.type`), not as an untyped
// failure. Usage: node sdk.mjs <emulator URL> <v2 secret> <store id>
// Prints one line per check and exits non-zero on the first failure.
import assert from "node:assert/strict";
import { PortOneClient } from "@portone/server-sdk";
import {
  GetIdentityVerificationError,
  GetIdentityVerificationsError,
  SendIdentityVerificationError,
} from "@portone/server-sdk/identityVerification";

const [baseUrl, secret, storeId] = process.argv.slice(2);
assert.ok(baseUrl && secret && storeId, "usage: node sdk.mjs URL SECRET STORE_ID");

const client = PortOneClient({ secret, baseUrl, storeId });
const iv = client.identityVerification;

async function rejects(promise, ErrorClass, type) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ErrorClass, `expected ${ErrorClass.name}, got ${error}`);
    assert.equal(error.data?.type, type, `error data: ${JSON.stringify(error.data)}`);
    return error;
  }
  assert.fail(`expected ${ErrorClass.name} ${type}, got success`);
}

const checks = {
  async "get: a verified person"() {
    const v = await iv.getIdentityVerification({ identityVerificationId: "imp_100000000001" });
    assert.equal(v.status, "VERIFIED");
    assert.equal(v.id, "imp_100000000001");
    assert.equal(v.verifiedCustomer.name, "김성인");
    assert.equal(v.verifiedCustomer.birthDate, "1990-01-01");
    assert.equal(v.verifiedCustomer.isForeigner, false);
    assert.equal(v.version, "V1");
    assert.ok(!Number.isNaN(Date.parse(v.verifiedAt)));
  },
  async "get: no foreigner contract leaves isForeigner absent"() {
    const v = await iv.getIdentityVerification({ identityVerificationId: "imp_100000000006" });
    assert.equal(v.status, "VERIFIED");
    assert.ok(!("isForeigner" in v.verifiedCustomer), JSON.stringify(v.verifiedCustomer));
  },
  async "get: a browser-born v2 verification carries customer.id and customData"() {
    const v = await iv.getIdentityVerification({ identityVerificationId: "iv-sdk-1" });
    assert.equal(v.status, "VERIFIED");
    assert.equal(v.version, "V2");
    assert.equal(v.verifiedCustomer.id, "customer-sdk");
    assert.deepEqual(JSON.parse(v.customData), { plan: "pro" });
  },
  async "get: not found is typed"() {
    await rejects(
      iv.getIdentityVerification({ identityVerificationId: "iv-does-not-exist" }),
      GetIdentityVerificationError,
      "IDENTITY_VERIFICATION_NOT_FOUND",
    );
  },
  async "get: a wrong secret is typed UNAUTHORIZED"() {
    const wrong = PortOneClient({ secret: "wrong-secret", baseUrl }).identityVerification;
    await rejects(
      wrong.getIdentityVerification({ identityVerificationId: "imp_100000000001" }),
      GetIdentityVerificationError,
      "UNAUTHORIZED",
    );
  },
  async "get: another store is typed FORBIDDEN"() {
    await rejects(
      iv.getIdentityVerification({ identityVerificationId: "imp_100000000001", storeId: "store-other" }),
      GetIdentityVerificationError,
      "FORBIDDEN",
    );
  },
  async "list: filter and page"() {
    const all = await iv.getIdentityVerifications({ page: { number: 0, size: 2 } });
    assert.equal(all.items.length, 2);
    assert.equal(all.page.size, 2);
    assert.ok(all.page.totalCount >= 7, JSON.stringify(all.page));
    const verified = await iv.getIdentityVerifications({
      page: { number: 0, size: 100 },
      filter: { statuses: ["VERIFIED"], version: "V2" },
    });
    assert.deepEqual(verified.items.map((v) => v.id), ["iv-sdk-1"]);
    const failed = await iv.getIdentityVerifications({ filter: { statuses: ["FAILED"] } });
    assert.ok(failed.items.every((v) => v.status === "FAILED" && v.failure));
  },
  async "list: unauthorized is typed"() {
    const wrong = PortOneClient({ secret: "wrong-secret", baseUrl }).identityVerification;
    await rejects(wrong.getIdentityVerifications({}), GetIdentityVerificationsError, "UNAUTHORIZED");
  },
  async "send: an unserved path still answers in v2's shape"() {
    await rejects(
      iv.sendIdentityVerification({
        identityVerificationId: "iv-does-not-exist",
        channelKey: "channel-key",
        customer: { name: "x", phoneNumber: "01000000000" },
        operator: "SKT",
        method: "SMS",
      }),
      SendIdentityVerificationError,
      "IDENTITY_VERIFICATION_NOT_FOUND",
    );
  },
  async "auth: login and refresh"() {
    const tokens = await client.auth.loginViaApiSecret({ apiSecret: secret });
    assert.ok(tokens.accessToken && tokens.refreshToken);
    const refreshed = await client.auth.refreshToken({ refreshToken: tokens.refreshToken });
    assert.notEqual(refreshed.accessToken, tokens.accessToken);
  },
};

let failed = 0;
for (const [name, check] of Object.entries(checks)) {
  try {
    await check();
    console.log(`ok   ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name}: ${error?.stack ?? error}`);
  }
}
console.log(`${Object.keys(checks).length - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
