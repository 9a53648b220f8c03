import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dummyVerify, hashPassword, needsRehash, verifyPassword } from './passwords.ts';

test('hash and verify; each hash salted; PHC format', async () => {
  const h1 = await hashPassword('correct horse');
  const h2 = await hashPassword('correct horse');
  assert.match(h1, /^\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  assert.notEqual(h1, h2);
  assert.equal(await verifyPassword('correct horse', h1), true);
  assert.equal(await verifyPassword('correct horse', h2), true);
  assert.equal(await verifyPassword('correct horsE', h1), false);
  assert.equal(await verifyPassword('', h1), false);
  assert.equal(needsRehash(h1), false);
});

test('Unicode: NFC and non-ASCII spaces are prepared (RFC 8265 OpaqueString)', async () => {
  const h = await hashPassword('caf\u00e9\u00a0ol\u00e9');
  assert.equal(await verifyPassword('cafe\u0301 ole\u0301', h), true);
});

test('a malformed or out-of-bounds hash verifies false, without throwing', async () => {
  const good = await hashPassword('pw');
  for (const bad of ['', 'plain', '$scrypt$', good.replace('ln=15', 'ln=40'), good.replace('r=8', 'r=0'), good.slice(0, -5) + '!!!!!', good.replace('$scrypt$', '$argon2id$')]) {
    assert.equal(await verifyPassword('pw', bad), false, bad);
    assert.equal(needsRehash(bad), true);
  }
  // Weaker parameters still verify, and ask for a rehash.
  const [, , , salt] = good.split('$');
  const weak = `$scrypt$ln=10,r=8,p=1$${salt}$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`;
  assert.equal(await verifyPassword('pw', weak), false);
  assert.equal(needsRehash(weak), true);
});

test('dummyVerify costs about what a real verify costs', async () => {
  const hash = await hashPassword('secret');
  const time = async (f: () => Promise<boolean>): Promise<number> => {
    const t = performance.now();
    await f();
    return performance.now() - t;
  };
  // Interleaved, and medians, so one scheduling hiccup does not decide it.
  const real: number[] = [];
  const dummy: number[] = [];
  for (let i = 0; i < 5; i++) {
    real.push(await time(() => verifyPassword('guess', hash)));
    dummy.push(await time(() => dummyVerify('guess')));
  }
  const median = (xs: number[]): number => xs.sort((a, b) => a - b)[xs.length >> 1]!;
  const ratio = median(dummy) / median(real);
  assert.ok(ratio > 0.5 && ratio < 2, `dummy/real = ${ratio.toFixed(2)} (${dummy.join(', ')} vs ${real.join(', ')} ms)`);
  assert.equal(await dummyVerify('secret'), false);
});
