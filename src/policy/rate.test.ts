import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RateCheck, SlidingWindowCounter } from './rate.ts';
import { SmtpError } from '../smtp/reply.ts';
import type { SessionInfo } from './policy.ts';

const MIN = 60_000;
const session = (ip: string, extra: Partial<SessionInfo> = {}): SessionInfo =>
  ({ id: 'c1', remoteAddress: ip, remotePort: 1, localPort: 25, role: 'smtp', tls: false, ...extra });
const refusedWith = (code: number, enhanced: string) => (e: unknown): boolean =>
  e instanceof SmtpError && e.code === code && e.enhanced === enhanced;

describe('SlidingWindowCounter', () => {
  it('counts exactly within the first window, then weighs the previous one by its overlap', () => {
    let now = 10 * MIN; // aligned: the window starts here
    const c = new SlidingWindowCounter(MIN, { now: () => now });
    for (let i = 1; i <= 10; i++) assert.equal(c.hit('a'), i);
    now += MIN; // next window: the previous 10 fully overlap
    assert.equal(c.count('a'), 10);
    now += MIN / 2; // half-way: half of them still count
    assert.equal(c.count('a'), 5);
    now += MIN / 2; // a whole window after: nothing left
    assert.equal(c.count('a'), 0);
    now += 5 * MIN; // long idle
    assert.equal(c.hit('a'), 1);
  });

  it('keeps at most maxKeys clients, forgetting the least recently seen', () => {
    const c = new SlidingWindowCounter(MIN, { maxKeys: 3 });
    for (const k of ['a', 'b', 'c']) c.hit(k);
    c.hit('a'); // a is now the most recent
    c.hit('d');
    assert.equal(c.size, 3);
    assert.equal(c.count('b'), 0, 'b was the least recently seen');
    assert.equal(c.count('a'), 2);
  });
});

describe('RateCheck', () => {
  it('connections per minute: the one past the limit gets 421 4.7.0; a minute later it is fine', () => {
    let now = 0;
    const r = new RateCheck({ connectionsPerMinute: 3, messagesPerHour: 0, isTrusted: () => false, now: () => now });
    for (let i = 0; i < 3; i++) r.connect(session('192.0.2.1'));
    assert.throws(() => r.connect(session('192.0.2.1')), refusedWith(421, '4.7.0'));
    r.connect(session('192.0.2.2')); // another client is not affected
    now += 2 * MIN;
    r.connect(session('192.0.2.1'));
  });

  it('IPv6 clients are counted per /64', () => {
    const r = new RateCheck({ connectionsPerMinute: 2, messagesPerHour: 0, isTrusted: () => false });
    r.connect(session('2001:db8:1:2::1'));
    r.connect(session('2001:db8:1:2::ffff'));
    assert.throws(() => r.connect(session('2001:db8:1:2:3::9')), refusedWith(421, '4.7.0'));
    r.connect(session('2001:db8:1:3::1'));
  });

  it('messages per hour: 450 4.7.1 past the limit; refused ones do not count', () => {
    let now = 0;
    const r = new RateCheck({ connectionsPerMinute: 0, messagesPerHour: 2, isTrusted: () => false, now: () => now });
    const s = session('192.0.2.1');
    r.mail(s);
    r.mail(s);
    assert.throws(() => r.mail(s), refusedWith(450, '4.7.1'));
    assert.throws(() => r.mail(s), refusedWith(450, '4.7.1'));
    now += 2 * 3_600_000;
    r.mail(s);
  });

  it('trusted networks, other roles and authenticated users are not limited', () => {
    const r = new RateCheck({ connectionsPerMinute: 1, messagesPerHour: 1, isTrusted: (ip) => ip === '10.0.0.1' });
    for (let i = 0; i < 5; i++) {
      r.connect(session('10.0.0.1'));
      r.mail(session('10.0.0.1'));
      r.connect(session('192.0.2.9', { role: 'submission' }));
      r.mail(session('192.0.2.8', { user: 'alice@tern.test' }));
    }
  });
});

