import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BOUNCE_CLASSES, bounceClass } from './bounce-class.ts';

const c = (code: number, enhanced: string | null, text = ''): string => bounceClass({ code, enhanced, text });

test('the enhanced code decides where it can (RFC 3463 subjects and details)', () => {
  const cases: [number, string, string][] = [
    [550, '5.1.1', 'invalid-recipient'],
    [550, '5.1.10', 'invalid-recipient'], // RFC 7505 null MX is x.1.10: the recipient's domain accepts no mail
    [550, '5.2.1', 'invalid-recipient'],
    [452, '4.2.2', 'mailbox-full'],
    [552, '5.2.2', 'mailbox-full'],
    [552, '5.2.3', 'content'],
    [552, '5.3.4', 'content'],
    [451, '4.3.0', 'system'],
    [550, '5.1.2', 'dns'],
    [451, '4.4.3', 'dns'],
    [554, '5.4.4', 'dns'],
    [451, '4.4.1', 'connection'],
    [451, '4.4.7', 'expired'],
    [501, '5.5.2', 'protocol'],
    [554, '5.6.0', 'content'],
    [550, '5.7.1', 'policy'],
    [530, '5.7.10', 'tls'],
    [550, '5.7.30', 'tls'],
    [550, '5.1.8', 'policy'],
  ];
  for (const [code, enhanced, want] of cases) assert.equal(c(code, enhanced), want, enhanced);
});

test('the text refines a code that cannot tell (5.7.1 blocklists, 4.4.2 timeouts) and decides without one', () => {
  assert.equal(c(550, '5.7.1', 'Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org'), 'spam-block');
  assert.equal(c(554, '5.7.1', 'Message rejected as spam'), 'spam-block');
  assert.equal(c(550, '5.7.1', 'Relaying denied'), 'policy');
  assert.equal(c(451, '4.7.1', 'greylisted, come back later'), 'policy');
  assert.equal(c(451, '4.4.2', 'connection timed out'), 'timeout');
  assert.equal(c(451, '4.4.2', 'connection reset by peer'), 'connection');
  assert.equal(c(554, '5.6.0', 'message looks like spam'), 'spam-block');
  // No enhanced code, or only x.0.0: the text.
  assert.equal(c(550, null, 'No such user here'), 'invalid-recipient');
  assert.equal(c(550, '5.0.0', 'User unknown in virtual mailbox table'), 'invalid-recipient');
  assert.equal(c(452, null, 'Mailbox full'), 'mailbox-full');
  assert.equal(c(452, null, 'user is over quota'), 'mailbox-full');
  assert.equal(c(554, null, 'Your IP is listed on a DNSBL'), 'spam-block');
  assert.equal(c(451, null, 'Timeout waiting for data'), 'timeout');
  assert.equal(c(421, null, 'TLS handshake failed: certificate has expired'), 'tls');
  assert.equal(c(552, null, 'Message too large'), 'content');
  assert.equal(c(554, null, 'Transaction failed'), 'other');
  assert.equal(c(550, null, ''), 'other');
});

test('every class the function can give is listed (the API schema and docs enumerate them)', () => {
  const seen = new Set<string>();
  for (const code of [421, 450, 451, 452, 550, 552, 554]) {
    for (const s of ['0', '1', '2', '3', '4', '5', '6', '7', '9']) {
      for (const d of ['0', '1', '2', '3', '4', '5', '6', '7', '8', '10', '11', '30']) {
        for (const text of ['', 'spam', 'timed out']) seen.add(c(code, `${String(code)[0]}.${s}.${d}`, text));
      }
    }
  }
  for (const k of seen) assert.ok(BOUNCE_CLASSES.includes(k as never), k);
});
