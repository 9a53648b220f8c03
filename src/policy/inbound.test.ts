// The inbound policy table: per recipient domain, trusted forwarders, pct.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InboundPolicy, type AuthFacts } from './inbound.ts';
import { defaultInbound } from '../config/defaults.ts';
import type { InboundConfig } from '../config/types.ts';
import type { Recipient } from '../spool/types.ts';

const rcpt = (address: string, local = true): Recipient => {
  const [localPart = '', domain = ''] = address.split('@');
  return { address, original: address, mailbox: local ? { domain, localPart } : undefined };
};
const config = (over: Partial<InboundConfig> = {}): InboundConfig => ({ ...defaultInbound('mx.tern.test'), ...over });
const facts = (spf: string, dmarc?: { result: string; policy?: string; pct?: number }): AuthFacts => ({
  spf: { result: spf, domain: 'sender.test' },
  dmarc: dmarc ? { domain: 'sender.test', pct: 100, ...dmarc } : null,
});
const IP = '192.0.2.1';

test('DMARC: reject → 550 5.7.1, quarantine → Junk, none and pass → accept', () => {
  const p = new InboundPolicy(config());
  const rs = [rcpt('alice@tern.test'), rcpt('bob@tern.test')];
  const r = p.decide(IP, facts('fail', { result: 'fail', policy: 'reject' }), rs);
  assert.equal(r.action, 'reject');
  assert.equal(r.error?.code, 550);
  assert.equal(r.error?.enhanced, '5.7.1');
  assert.match(r.error!.text, /DMARC policy of sender\.test/);
  assert.deepEqual(p.decide(IP, facts('fail', { result: 'fail', policy: 'quarantine' }), rs), { action: 'quarantine', quarantine: [0, 1], reasons: ['dmarc=fail policy=quarantine'] });
  assert.equal(p.decide(IP, facts('fail', { result: 'fail', policy: 'none' }), rs).action, 'accept');
  assert.equal(p.decide(IP, facts('pass', { result: 'pass', policy: 'reject' }), rs).action, 'accept');
  assert.equal(p.decide(IP, facts('temperror', { result: 'temperror', policy: 'reject' }), rs).action, 'accept', 'never on a temporary error');
  assert.equal(p.decide(IP, facts('fail'), rs).action, 'accept', 'SPF fail is only marked by default');
});

test('SPF onFail: reject → 550 5.7.23, quarantine → Junk', () => {
  const rs = [rcpt('alice@tern.test')];
  const rej = new InboundPolicy(config({ spf: { onFail: 'reject' } })).decide(IP, facts('fail'), rs);
  assert.equal(rej.action, 'reject');
  assert.equal(`${rej.error?.code} ${rej.error?.enhanced}`, '550 5.7.23');
  assert.equal(new InboundPolicy(config({ spf: { onFail: 'reject' } })).decide(IP, facts('softfail'), rs).action, 'accept');
  assert.deepEqual(new InboundPolicy(config({ spf: { onFail: 'quarantine' } })).decide(IP, facts('fail'), rs).quarantine, [0]);
});

test('per recipient domain: a message is refused only if every recipient says so', () => {
  const p = new InboundPolicy(config({
    dmarc: { enforce: false },
    domains: { 'strict.test': { spf: { onFail: 'reject' }, dmarc: { enforce: true } } },
  }));
  const f = facts('fail', { result: 'fail', policy: 'reject' });
  assert.equal(p.decide(IP, f, [rcpt('a@strict.test'), rcpt('b@strict.test')]).action, 'reject');
  assert.equal(p.decide(IP, f, [rcpt('a@tern.test')]).action, 'accept', 'enforcement off for tern.test');
  // Mixed: the strict domain's recipient gets Junk instead of a refusal for everyone.
  assert.deepEqual(p.decide(IP, f, [rcpt('a@tern.test'), rcpt('b@strict.test')]).quarantine, [1]);
  // A remote recipient has no Junk folder: delivered, marked.
  assert.deepEqual(p.decide(IP, f, [rcpt('a@strict.test'), rcpt('x@remote.test', false)]).quarantine, [0]);
});

test('trusted forwarders are never rejected or quarantined', () => {
  const p = new InboundPolicy(config({ spf: { onFail: 'reject' }, trustedForwarders: ['198.51.100.0/24', '2001:db8::/32'] }));
  const f = facts('fail', { result: 'fail', policy: 'reject' });
  assert.equal(p.decide('198.51.100.7', f, [rcpt('a@tern.test')]).action, 'accept');
  assert.equal(p.decide('::ffff:198.51.100.7', f, [rcpt('a@tern.test')]).action, 'accept');
  assert.equal(p.decide('2001:db8::1', f, [rcpt('a@tern.test')]).action, 'accept');
  assert.equal(p.decide('198.51.101.7', f, [rcpt('a@tern.test')]).action, 'reject');
});

test('pct (RFC 7489 §6.6.4): outside the sample, the next weaker policy', () => {
  const rs = [rcpt('a@tern.test')];
  const at = (n: number) => new InboundPolicy(config(), () => n);
  assert.equal(at(0.49).decide(IP, facts('fail', { result: 'fail', policy: 'reject', pct: 50 }), rs).action, 'reject');
  assert.equal(at(0.5).decide(IP, facts('fail', { result: 'fail', policy: 'reject', pct: 50 }), rs).action, 'quarantine');
  assert.equal(at(0).decide(IP, facts('fail', { result: 'fail', policy: 'quarantine', pct: 0 }), rs).action, 'accept');
  assert.equal(at(0.99).decide(IP, facts('fail', { result: 'fail', policy: 'reject', pct: 100 }), rs).action, 'reject');
});
