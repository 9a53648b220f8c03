import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Directory } from './directory.ts';

const dir = new Directory([
  { name: 'tern.test', mailboxes: ['alice', 'bob'], aliases: { postmaster: ['alice'], team: ['alice', 'bob', 'team2'], team2: ['bob'], out: ['x@remote.test'], 'sales+eu': ['bob'] } },
  { name: 'catch.test', mailboxes: ['carol'], aliases: {}, catchAll: 'carol' },
  { name: 'any.test', mailboxes: '*', aliases: {} },
  { name: 'loop.test', mailboxes: [], aliases: { a: ['b'], b: ['a'] } },
]);
const addrs = (l: string, d: string) => dir.resolve(l, d)?.map((t) => `${t.kind}:${t.address}`) ?? null;

test('mailboxes, case folding and plus-addressing', () => {
  assert.deepEqual(addrs('alice', 'tern.test'), ['local:alice@tern.test']);
  assert.deepEqual(addrs('ALICE', 'TERN.TEST'), ['local:alice@tern.test']);
  assert.deepEqual(addrs('alice+news', 'tern.test'), ['local:alice@tern.test']);
  assert.equal(addrs('nobody', 'tern.test'), null);
  assert.equal(addrs('nobody+x', 'tern.test'), null);
});

test('aliases expand recursively, without duplicates, to local and remote targets', () => {
  assert.deepEqual(addrs('team', 'tern.test'), ['local:alice@tern.test', 'local:bob@tern.test']);
  assert.deepEqual(addrs('out', 'tern.test'), ['remote:x@remote.test']);
  assert.deepEqual(addrs('postmaster', 'tern.test'), ['local:alice@tern.test']);
  // An alias containing the delimiter wins over the plus-address fallback.
  assert.deepEqual(addrs('sales+eu', 'tern.test'), ['local:bob@tern.test']);
});

test('catch-all and wildcard domains', () => {
  assert.deepEqual(addrs('whoever', 'catch.test'), ['local:carol@catch.test']);
  assert.deepEqual(addrs('user%remote.test', 'catch.test'), ['local:carol@catch.test']);
  assert.deepEqual(addrs('Zed+tag', 'any.test'), ['local:zed@any.test']);
});

test('an alias loop is an error, not a hang', () => {
  assert.throws(() => dir.resolve('a', 'loop.test'), /alias loop/);
});

test('local domain check', () => {
  assert.equal(dir.isLocalDomain('TERN.test'), true);
  assert.equal(dir.isLocalDomain('remote.test'), false);
});
