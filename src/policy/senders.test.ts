import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mayUseAddress, originatorError } from './senders.ts';

const fields = (m: Record<string, string[]>) => (name: string): string[] => m[name] ?? [];
const reply = (m: Record<string, string[]>, allowed = ['alice@tern.test', '@team.test']): string | null => {
  const e = originatorError(fields(m), allowed);
  return e ? `${e.code} ${e.enhanced} ${e.text}` : null;
};

test('mayUseAddress: exact address, plus-addressing, whole domains', () => {
  assert.ok(mayUseAddress('Alice@Tern.test', ['alice@tern.test']));
  assert.ok(mayUseAddress('alice+x@tern.test', ['alice@tern.test']));
  assert.ok(mayUseAddress('anyone@team.test', ['@team.test']));
  assert.ok(!mayUseAddress('alice@tern.test.evil.test', ['alice@tern.test', '@tern.test']));
});

test('originatorError: every mailbox of From, Sender, Resent-From, Resent-Sender', () => {
  assert.equal(reply({ from: ['Alice <alice@tern.test>, x@team.test'], sender: ['alice+list@tern.test'] }), null);
  assert.equal(reply({ from: ['alice@tern.test'], 'resent-from': ['g: a@team.test, b@team.test;'], 'resent-sender': ['alice@tern.test'] }), null);
  assert.equal(reply({ from: ['alice@tern.test', 'bob@evil.test'] }), '550 5.7.1 Sender address <bob@evil.test> in From: is not yours to use');
  assert.equal(reply({ from: ['alice@tern.test'], sender: ['bob@evil.test'] }), '550 5.7.1 Sender address <bob@evil.test> in Sender: is not yours to use');
  assert.equal(reply({ from: ['alice@tern.test'], 'resent-from': ['g: a@team.test, b@evil.test;'] }), '550 5.7.1 Sender address <b@evil.test> in Resent-From: is not yours to use');
  assert.equal(reply({ from: ['alice@tern.test'], 'resent-sender': ['(x) <bob@evil.test>'] }), '550 5.7.1 Sender address <bob@evil.test> in Resent-Sender: is not yours to use');
  // From: must name someone; Sender: alone does not do.
  assert.equal(reply({ sender: ['alice@tern.test'] }), '550 5.7.1 Message has no From: address');
  assert.equal(reply({ from: ['undisclosed:;'] }), '550 5.7.1 Message has no From: address');
  assert.match(reply({ from: ['Alice <alice@tern.test'] })!, /^554 5\.6\.0 Cannot read the addresses in From: \(expected ">" after an address at offset 22\)$/);
});

test('originatorError: a client address in the reply is printable ASCII', () => {
  const r = reply({ from: ['"\x1b[31m\u00e9vil"@evil.test'] })!;
  assert.match(r, /^550 5\.7\.1 Sender address <"\?\[31m\?vil"@evil\.test> in From: /);
  assert.match(r, /^[\x20-\x7e]+$/);
});
