import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isHeloArgument } from './helo.ts';

test('EHLO/HELO argument: domains and address literals are accepted (RFC 5321 §4.1.1.1, §4.1.3)', () => {
  for (const ok of [
    'client.test',
    'localhost',
    'DESKTOP-7QF2K1', // a single label is a Domain too
    'mail-1.example.co.uk',
    'xn--bcher-kva.example', // an IDN in its A-label form
    'my_pc.corp.example', // underscores: decided to accept (Windows names; Postfix accepts them)
    '_dmarc.example',
    'mx.example.', // one trailing dot
    '192.0.2.7', // a bare IP parses as a Domain (digit labels)
    '[192.0.2.7]',
    '[IPv6:2001:db8::7]',
    '[ipv6:::1]',
    '[x-tag:some-content]', // General-address-literal
    'a'.repeat(63) + '.test',
  ]) assert.equal(isHeloArgument(ok), true, JSON.stringify(ok));
});

test('EHLO/HELO argument: anything else is refused', () => {
  for (const bad of [
    '',
    'nul\x00byte\x0bvt\x1b[0m',
    'evil)\r\nX-Injected: 1',
    'tab\there',
    'two words',
    'a..b',
    '.leading.dot',
    'trailing..',
    '-dash.example',
    'dash-.example',
    'a'.repeat(64) + '.test', // label over 63 octets
    `${'a.'.repeat(128)}test`, // over 255 octets
    'bücher.example', // U-label: ASCII only, send the A-label
    'quote"d.example',
    'paren(s).example',
    '[300.0.0.1]',
    '[192.0.2.7',
    '[IPv6:not-an-address]',
    '[IPv6:2001:db8::7\x00]',
    '[tag:with space]',
    '[tag:bad\\char]',
    '[:no-tag]',
    '[]',
  ]) assert.equal(isHeloArgument(bad), false, JSON.stringify(bad));
});
