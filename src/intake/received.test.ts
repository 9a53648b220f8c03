import { test } from 'node:test';
import assert from 'node:assert/strict';
import { receivedHeader } from './intake.ts';

const base = { sender: 'a@x.test', params: { smtputf8: false }, recipients: [{ address: 'b@y.test', original: 'b@y.test' }] };
const date = new Date(Date.UTC(2026, 10, 24, 3, 1, 16));

test('Received: the client as an address literal (IPv6 tagged, RFC 5321 §4.1.3), protocol, id, for, date', () => {
  const v4 = receivedHeader('mx.tern.test', 'ID1', { ...base, trace: { ip: '192.0.2.7', helo: 'client.test', protocol: 'ESMTPS', tls: 'TLSv1.3 TLS_AES_128_GCM_SHA256' } }, date);
  assert.equal(
    v4,
    'Received: from client.test ([192.0.2.7])\r\n\tby mx.tern.test (Tern) with ESMTPS id ID1\r\n\t(using TLSv1.3 TLS_AES_128_GCM_SHA256)\r\n\tfor <b@y.test>;\r\n\tTue, 24 Nov 2026 03:01:16 +0000\r\n',
  );
  const v6 = receivedHeader('mx.tern.test', 'ID2', { ...base, trace: { ip: '2001:db8::7', helo: 'c.test', protocol: 'ESMTP' } }, date);
  assert.match(v6, /^Received: from c\.test \(\[IPv6:2001:db8::7\]\)\r\n/);
});

test('Received: client text cannot break the header', () => {
  const h = receivedHeader('mx.tern.test', 'ID3', { ...base, trace: { ip: '192.0.2.7', helo: 'evil)\r\nX-Injected: 1', protocol: 'ESMTP' } }, date);
  assert.doesNotMatch(h, /\r\nX-Injected/);
});
