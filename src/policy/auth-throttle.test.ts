import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthThrottle, ipKey } from './auth-throttle.ts';

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

test('delay doubles from the base with each recent failure, capped', () => {
  const c = clock();
  const th = new AuthThrottle({ now: c.now, lockoutAfter: 100 });
  assert.deepEqual(th.check('192.0.2.1', 'alice@tern.test'), { locked: false, delayMs: 0 });
  const seen: number[] = [];
  for (let i = 0; i < 7; i++) {
    th.failure('192.0.2.1', 'alice@tern.test');
    seen.push(th.check('192.0.2.1', 'alice@tern.test').delayMs);
  }
  assert.deepEqual(seen, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
});

test('per IP and per account: either one slows the other pairings', () => {
  const c = clock();
  const th = new AuthThrottle({ now: c.now });
  th.failure('192.0.2.1', 'alice@tern.test');
  th.failure('192.0.2.1', 'bob@tern.test');
  assert.equal(th.check('192.0.2.1', 'carol@tern.test').delayMs, 1000); // the IP has 2
  assert.equal(th.check('198.51.100.7', 'ALICE@tern.test').delayMs, 500); // the account has 1
  assert.equal(th.check('198.51.100.7', 'dave@tern.test').delayMs, 0);
});

test('success clears the account, not the IP', () => {
  const c = clock();
  const th = new AuthThrottle({ now: c.now });
  th.failure('192.0.2.1', 'alice@tern.test');
  th.failure('192.0.2.1', 'alice@tern.test');
  th.success('192.0.2.1', 'alice@tern.test');
  assert.equal(th.check('198.51.100.7', 'alice@tern.test').delayMs, 0);
  assert.equal(th.check('192.0.2.1', 'alice@tern.test').delayMs, 1000);
});

test('lockout after too many failures, and its expiry', () => {
  const c = clock();
  const th = new AuthThrottle({ now: c.now, lockoutAfter: 3, lockoutMs: 60_000, windowMs: 30_000 });
  th.failure('192.0.2.1', 'alice@tern.test');
  th.failure('192.0.2.1', 'alice@tern.test');
  assert.equal(th.check('192.0.2.1', 'x@tern.test').locked, false);
  th.failure('192.0.2.1', 'alice@tern.test');
  assert.equal(th.check('192.0.2.1', 'x@tern.test').locked, true); // the IP
  assert.equal(th.check('203.0.113.9', 'alice@tern.test').locked, true); // the account
  assert.equal(th.check('203.0.113.9', 'x@tern.test').locked, false);
  c.advance(59_999);
  assert.equal(th.check('192.0.2.1', '').locked, true); // still locked past the window
  c.advance(1);
  assert.deepEqual(th.check('192.0.2.1', 'alice@tern.test'), { locked: false, delayMs: 0 });
});

test('failures older than the window are forgotten', () => {
  const c = clock();
  const th = new AuthThrottle({ now: c.now, windowMs: 10_000 });
  th.failure('192.0.2.1', 'alice@tern.test');
  th.failure('192.0.2.1', 'alice@tern.test');
  c.advance(9_999);
  assert.equal(th.check('192.0.2.1', 'alice@tern.test').delayMs, 1000);
  c.advance(1);
  assert.equal(th.check('192.0.2.1', 'alice@tern.test').delayMs, 0);
});

test('memory stays bounded: stale entries swept, size capped', () => {
  const c = clock();
  const th = new AuthThrottle({ now: c.now, windowMs: 1000, maxEntries: 50 });
  for (let i = 0; i < 200; i++) th.failure(`10.0.${i >> 8}.${i & 255}`, `u${i}@tern.test`);
  assert.ok(th.size <= 50, `size ${th.size}`);
  c.advance(1000);
  th.failure('192.0.2.1', '');
  assert.equal(th.size, 1);
});

test('IPv6 is counted per /64; IPv4-mapped as IPv4', () => {
  assert.equal(ipKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(ipKey('2001:0db8:0001:0002:0:0:0:9'), '2001:db8:1:2::/64');
  assert.equal(ipKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(ipKey('::1'), '0:0:0:0::/64');
  assert.equal(ipKey('::ffff:192.0.2.1'), '192.0.2.1');
  assert.equal(ipKey('192.0.2.1'), '192.0.2.1');
  const th = new AuthThrottle();
  th.failure('2001:db8:1:2::1', '');
  assert.equal(th.check('2001:db8:1:2:ffff::', '').delayMs, 500);
  assert.equal(th.check('2001:db8:1:3::1', '').delayMs, 0);
});
