// The signature is Standard Webhooks' (https://www.standardwebhooks.com):
// checked against two computations that share no code with sign.ts, the
// standardwebhooks package (fast-sha256 underneath) and WebCrypto.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { newSecret, secretKey, signature, signingKey, SECRET_PREFIX } from './sign.ts';

test('a new secret is whsec_ and the base64 of 32 random bytes, different each time', () => {
  const a = newSecret();
  const b = newSecret();
  assert.match(a, /^whsec_[A-Za-z0-9+/]{43}=$/);
  assert.notEqual(a, b);
  assert.equal(secretKey(a).length, 32);
  assert.equal(Buffer.from(a.slice(SECRET_PREFIX.length), 'base64').equals(secretKey(a)), true);
  assert.throws(() => secretKey('not-a-secret'), /whsec_/);
});

test('the signature equals the standardwebhooks package\'s and WebCrypto\'s HMAC-SHA256 over "{id}.{timestamp}.{body}"', async () => {
  const secret = newSecret();
  const id = '01m97fr3t60000r0thyc';
  const ts = 1_765_000_000;
  // Non-ASCII text: the body is signed as its UTF-8 bytes.
  const body = JSON.stringify({ type: 'delivered', timestamp: '2026-12-07T05:31:11.558Z', data: { recipient: 'zoë@example.test', text: '250 ✓' } });
  const ours = signature(signingKey(secret), id, ts, Buffer.from(body));
  assert.equal(ours, new Webhook(secret).sign(id, new Date(ts * 1000), body));

  const raw = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const k = await crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = Buffer.from(await crypto.subtle.sign('HMAC', k, new TextEncoder().encode(`${id}.${ts}.${body}`)));
  assert.equal(ours, `v1,${mac.toString('base64')}`);
  // A string body signs the same as its bytes; a non-ASCII id goes in as UTF-8 too (checked against node's own HMAC).
  assert.equal(signature(signingKey(secret), id, ts, body), ours);
  const hmac = (i: string) => `v1,${createHmac('sha256', secretKey(secret)).update(`${i}.${ts}.${body}`, 'utf8').digest('base64')}`;
  assert.equal(signature(signingKey(secret), 'ïd', ts, body), hmac('ïd'));
});

test('a secret longer than the hash block (64 bytes) is hashed first, as RFC 2104 §2 says', () => {
  const secret = SECRET_PREFIX + Buffer.alloc(100, 7).toString('base64');
  const body = '{"type":"queued"}';
  const ours = signature(signingKey(secret), 'evt1', 1_765_000_000, body);
  assert.equal(ours, `v1,${createHmac('sha256', secretKey(secret)).update(`evt1.1765000000.${body}`).digest('base64')}`);
  assert.equal(ours, new Webhook(secret).sign('evt1', new Date(1_765_000_000 * 1000), body));
});

test('the standardwebhooks verifier accepts it, and refuses it for another body, id, timestamp or secret', () => {
  const secret = newSecret();
  const ts = Math.floor(Date.now() / 1000);
  const body = '{"type":"queued"}';
  const headers = { 'webhook-id': 'evt1', 'webhook-timestamp': String(ts), 'webhook-signature': signature(signingKey(secret), 'evt1', ts, body) };
  assert.deepEqual(new Webhook(secret).verify(body, headers), { type: 'queued' });
  assert.throws(() => new Webhook(secret).verify('{"type":"bounced"}', headers));
  assert.throws(() => new Webhook(secret).verify(body, { ...headers, 'webhook-id': 'evt2' }));
  assert.throws(() => new Webhook(secret).verify(body, { ...headers, 'webhook-timestamp': String(ts - 1) }));
  assert.throws(() => new Webhook(newSecret()).verify(body, headers));
});
