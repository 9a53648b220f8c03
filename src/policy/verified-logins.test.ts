import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VerifiedLogins } from './verified-logins.ts';
import { Authenticator } from './auth.ts';
import { AuthThrottle } from './auth-throttle.ts';
import { hashPassword } from '../store/passwords.ts';
import type { UserRecord, UserStore } from '../store/store.ts';
import { silentLogger } from '../util/log.ts';
import { SmtpError } from '../smtp/reply.ts';

test('VerifiedLogins: a success is remembered until its TTL; identical attempts in flight share one derivation; a new hash never matches', async () => {
  let now = 1_000_000;
  const v = new VerifiedLogins({ now: () => now, ttlMs: 60_000, max: 2 });
  let derivations = 0;
  const slow = (result: boolean) => () => new Promise<boolean>((r) => setTimeout(() => (derivations++, r(result)), 20));
  const tag = v.tag('$scrypt$hash1', 'right password');
  assert.equal(v.known(tag), false);
  const first = v.verify(tag, slow(true));
  assert.ok(v.inflight(tag), 'the second identical attempt finds the first');
  assert.equal(await v.inflight(tag), true);
  assert.equal(await first, true);
  assert.equal(derivations, 1);
  assert.equal(v.known(tag), true);
  assert.equal(v.inflight(tag), undefined);
  // Another password, or the same one against a changed hash: different tags.
  assert.notEqual(v.tag('$scrypt$hash1', 'wrong password'), tag);
  assert.equal(v.known(v.tag('$scrypt$hash2', 'right password')), false);
  // A failure is not remembered.
  const wrong = v.tag('$scrypt$hash1', 'wrong password');
  assert.equal(await v.verify(wrong, slow(false)), false);
  assert.equal(v.known(wrong), false);
  // Expiry and the size bound.
  now += 60_001;
  assert.equal(v.known(tag), false);
  for (const pw of ['a', 'b', 'c']) await v.verify(v.tag('h', pw), async () => true);
  assert.equal(v.size, 2);
  assert.equal(v.known(v.tag('h', 'a')), false, 'the oldest went first');
  assert.equal(v.known(v.tag('h', 'c')), true);
  // Tags depend on a key made at start: another process (or instance) cannot compute them.
  assert.notEqual(new VerifiedLogins().tag('h', 'a'), v.tag('h', 'a'));
});

function storeWith(user: UserRecord): UserStore & { current: UserRecord } {
  const s = {
    current: user,
    getUser: (a: string) => (a.toLowerCase() === s.current.address ? s.current : null),
    putUser: (u: UserRecord) => void (s.current = u),
    deleteUser: () => false,
    listUsers: () => [s.current],
    close: () => {},
  };
  return s;
}

test('Authenticator: 20 parallel logins with the right password all succeed without tripping the throttle; a changed password stops the old one at once', async () => {
  const store = storeWith({ address: 'app@tern.test', passwordHash: await hashPassword('correct horse battery'), sendAs: [], createdAt: 0 });
  const throttle = new AuthThrottle();
  const auth = new Authenticator({ store, configUsers: [], throttle, log: silentLogger });
  const started = performance.now();
  const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => auth.authenticate('192.0.2.7', 'app@tern.test', 'correct horse battery', `c${i}`)));
  const ms = performance.now() - started;
  assert.deepEqual(results.map((r) => r.status), Array(20).fill('fulfilled'), JSON.stringify(results.find((r) => r.status === 'rejected')));
  // Without sharing, each pending check counted as a failure: delays of up to 8 s and 454 from the 11th.
  assert.ok(ms < 2000, `took ${Math.round(ms)} ms`);
  assert.deepEqual(throttle.check('192.0.2.7', 'app@tern.test'), { locked: false, delayMs: 0 });
  // Remembered: the next login needs no derivation (far under one scrypt).
  const t0 = performance.now();
  await auth.authenticate('192.0.2.7', 'app@tern.test', 'correct horse battery', 'c21');
  const cached = performance.now() - t0;
  const t1 = performance.now();
  await assert.rejects(auth.authenticate('192.0.2.8', 'app@tern.test', 'not the password', 'c22'), (e: unknown) => e instanceof SmtpError && e.code === 535);
  const derived = performance.now() - t1;
  assert.ok(cached * 5 < derived, `cached ${cached.toFixed(2)} ms vs a derivation ${derived.toFixed(2)} ms`);
  // A new password: the remembered login no longer matches.
  store.current = { ...store.current, passwordHash: await hashPassword('a brand new passphrase') };
  await assert.rejects(auth.authenticate('192.0.2.9', 'app@tern.test', 'correct horse battery', 'c23'), (e: unknown) => e instanceof SmtpError && e.code === 535);
  await auth.authenticate('192.0.2.9', 'app@tern.test', 'a brand new passphrase', 'c24');
});
