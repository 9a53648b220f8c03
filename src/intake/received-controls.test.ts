// The Received: field is built from the session's trace: EHLO name, TLS
// description, authenticated user, recipient, IP. The session validates what
// it can; receivedHeader still must not let a control byte into the header
// whatever a caller passes (issue 11, break 5).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { receivedHeader } from './intake.ts';

const date = new Date(Date.UTC(2026, 10, 24, 3, 1, 16));
const CONTROLS = '\x00\x01\x07\x08\t\x0b\x0c\x1b[0m\x7f\x85\x9b\u2028\u2029';

test('Received: no control character from any trace field reaches the header', () => {
  const h = receivedHeader('mx.tern.test', 'ID1', {
    sender: 'a@x.test',
    params: { smtputf8: true },
    recipients: [{ address: 'b@y.test', original: `b${CONTROLS}@y.test` }],
    trace: { ip: `192.0.2.7${CONTROLS}`, helo: `nul${CONTROLS}byte`, protocol: `ESMTPSA${CONTROLS}`, tls: `TLSv1.3${CONTROLS}`, user: `u${CONTROLS}@x.test` },
  }, date);
  // The only control characters left are our own folding: CRLF followed by a tab.
  const unfolded = h.replace(/\r\n\t/g, ' ').replace(/\r\n$/, '');
  assert.doesNotMatch(unfolded, /[\x00-\x1f\x7f-\x9f\u2028\u2029]/, JSON.stringify(h));
  // Printable text around them stays ("[0m" is left once its ESC is gone).
  assert.match(h, /^Received: from nul\?+\[0m\?+byte \(\[192\.0\.2\.7\?+\[0m\?+\]\)\r\n/);
  assert.match(h, /\(authenticated as u\?+\[0m\?+@x\.test\)/);
});

test('Received: a cut at 255 characters never leaves half a surrogate pair', () => {
  const helo = 'a'.repeat(254) + '\u{1F600}';
  const h = receivedHeader('mx.tern.test', 'ID2', {
    sender: '', params: { smtputf8: true }, recipients: [], trace: { ip: '192.0.2.7', helo, protocol: 'ESMTP' },
  }, date);
  assert.ok(h.startsWith(`Received: from ${'a'.repeat(254)} ([`), h.slice(0, 300));
  assert.ok(h.isWellFormed(), 'no lone surrogate');
});
