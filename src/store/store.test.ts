import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { openStore, SCHEMA_VERSION, STORE_FILE, type UserRecord } from './store.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-store-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => path.join(root, `d${n++}`);

const alice: UserRecord = { address: 'alice@tern.test', passwordHash: '$scrypt$x', sendAs: ['@tern.test'], messagesPerHour: 100, createdAt: 1_700_000_000_000 };
const bob: UserRecord = { address: 'Bob@Tern.test', passwordHash: '$scrypt$y', sendAs: [], recipientsPerMessage: 5, createdAt: 1_700_000_000_001 };

test('CRUD: put, get (case-insensitive), replace, list sorted, delete', () => {
  const store = openStore(freshDir());
  try {
    assert.equal(store.getUser('alice@tern.test'), null);
    store.putUser(alice);
    store.putUser(bob);
    assert.deepEqual(store.getUser('ALICE@tern.test'), { ...alice, recipientsPerMessage: undefined, admin: undefined });
    assert.deepEqual(store.getUser('bob@tern.test'), { ...bob, address: 'bob@tern.test', messagesPerHour: undefined, admin: undefined });
    store.putUser({ ...alice, passwordHash: '$scrypt$z', sendAs: [] });
    assert.equal(store.getUser('alice@tern.test')!.passwordHash, '$scrypt$z');
    assert.deepEqual(store.getUser('alice@tern.test')!.sendAs, []);
    assert.deepEqual(store.listUsers().map((u) => u.address), ['alice@tern.test', 'bob@tern.test']);
    assert.equal(store.deleteUser('BOB@tern.test'), true);
    assert.equal(store.deleteUser('bob@tern.test'), false);
    assert.deepEqual(store.listUsers().map((u) => u.address), ['alice@tern.test']);
  } finally {
    store.close();
  }
});

test('persists across reopen; owner-only file; WAL; schema_version recorded', () => {
  const dir = freshDir();
  const a = openStore(dir);
  a.putUser(alice);
  a.close();
  a.close(); // idempotent
  const b = openStore(dir);
  assert.equal(b.getUser('alice@tern.test')!.messagesPerHour, 100);
  b.close();
  const file = path.join(dir, STORE_FILE);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  const db = new DatabaseSync(file);
  assert.deepEqual({ ...db.prepare('PRAGMA journal_mode').get() }, { journal_mode: 'wal' });
  assert.deepEqual({ ...db.prepare('SELECT version FROM schema_version').get() }, { version: SCHEMA_VERSION });
  db.close();
});

test('two handles at once (server + CLI) see each other’s writes', () => {
  const dir = freshDir();
  const server = openStore(dir);
  const cli = openStore(dir);
  try {
    cli.putUser(alice);
    assert.equal(server.getUser('alice@tern.test')!.address, 'alice@tern.test');
    server.putUser(bob);
    assert.equal(cli.listUsers().length, 2);
    assert.equal(cli.deleteUser('alice@tern.test'), true);
    assert.equal(server.getUser('alice@tern.test'), null);
  } finally {
    server.close();
    cli.close();
  }
});

test('refuses a database from a newer Tern', () => {
  const dir = freshDir();
  openStore(dir).close();
  const db = new DatabaseSync(path.join(dir, STORE_FILE));
  db.exec('UPDATE schema_version SET version = 99');
  db.close();
  assert.throws(() => openStore(dir), /schema version 99 is newer/);
});

test('greylist entries: put, get, replace, expire', () => {
  const store = openStore(freshDir());
  try {
    assert.equal(store.getGreylist('192.0.2.0/24 a@x.test b@y.test'), null);
    store.putGreylist('t1', { firstSeen: 1000, passedAt: null, expires: 5000 });
    store.putGreylist('t2', { firstSeen: 1000, passedAt: 2000, expires: 9000 });
    assert.deepEqual(store.getGreylist('t1'), { firstSeen: 1000, passedAt: null, expires: 5000 });
    store.putGreylist('t1', { firstSeen: 1000, passedAt: 3000, expires: 8000 });
    assert.deepEqual(store.getGreylist('t1'), { firstSeen: 1000, passedAt: 3000, expires: 8000 });
    assert.equal(store.expireGreylist(8500), 1);
    assert.equal(store.getGreylist('t1'), null);
    assert.notEqual(store.getGreylist('t2'), null);
  } finally {
    store.close();
  }
});

test('a version-1 database gains the greylist table on open', () => {
  const dir = freshDir();
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, STORE_FILE);
  const db = new DatabaseSync(file);
  db.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
    CREATE TABLE users (address TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL, send_as TEXT NOT NULL DEFAULT '[]',
      messages_per_hour INTEGER, recipients_per_message INTEGER, created_at INTEGER NOT NULL) STRICT`);
  db.close();
  const store = openStore(dir);
  try {
    store.putGreylist('t', { firstSeen: 1, passedAt: null, expires: 2 });
    assert.equal(store.getGreylist('t')!.firstSeen, 1);
  } finally {
    store.close();
  }
});

test('step 5 moves the sender from events to messages: events stored by schema 4 stay readable and scoped', () => {
  const dir = freshDir();
  fs.mkdirSync(dir, { recursive: true });
  // A database as schema 4 left it, with one message's event.
  const db = new DatabaseSync(path.join(dir, STORE_FILE));
  db.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (4);
    CREATE TABLE users (address TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL, send_as TEXT NOT NULL DEFAULT '[]', messages_per_hour INTEGER, recipients_per_message INTEGER, created_at INTEGER NOT NULL) STRICT;
    CREATE TABLE greylist (triplet TEXT PRIMARY KEY NOT NULL, first_seen INTEGER NOT NULL, passed_at INTEGER, expires INTEGER NOT NULL) STRICT;
    CREATE TABLE api_keys (name TEXT PRIMARY KEY NOT NULL, hash TEXT NOT NULL UNIQUE, send_as TEXT NOT NULL DEFAULT '[]', admin INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL) STRICT;
    CREATE TABLE events (id TEXT PRIMARY KEY NOT NULL, queue_id TEXT NOT NULL, type TEXT NOT NULL, recipient TEXT NOT NULL, sender TEXT NOT NULL, sender_base TEXT NOT NULL, sender_domain TEXT NOT NULL, body TEXT NOT NULL) STRICT, WITHOUT ROWID;
    CREATE INDEX events_sender_base ON events (sender_base, id);
    CREATE INDEX events_sender_domain ON events (sender_domain, id);
    CREATE TABLE messages (id TEXT PRIMARY KEY NOT NULL, sender TEXT NOT NULL, message_id TEXT, created_at INTEGER NOT NULL) STRICT;
    CREATE TABLE idempotency (api_key TEXT NOT NULL, idem_key TEXT NOT NULL, body_hash TEXT NOT NULL, created_at INTEGER NOT NULL, status INTEGER, response TEXT, PRIMARY KEY (api_key, idem_key)) STRICT, WITHOUT ROWID;`);
  const event = { id: '0000000001000000aaaa', type: 'queued', timestamp: '2026-01-01T00:00:00.000Z', queueId: 'Q1', recipient: 'r@x.test', data: {} };
  db.prepare('INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(event.id, 'Q1', 'queued', 'r@x.test', 'ann+tag@a.test', 'ann@a.test', '@a.test', JSON.stringify(event));
  db.prepare('INSERT INTO messages VALUES (?, ?, NULL, ?)').run('Q1', 'ann+tag@a.test', 1);
  db.close();
  const store = openStore(dir);
  try {
    assert.equal(store.messageEvents('Q1', { admin: false, sendAs: ['ann@a.test'] })?.events[0]?.id, event.id);
    assert.equal(store.queryEvents({ after: '', limit: 10, scope: { admin: false, sendAs: ['@a.test'] } }).length, 1);
    assert.equal(store.queryEvents({ after: '', limit: 10, scope: { admin: false, sendAs: ['@b.test'] } }).length, 0);
    assert.equal(store.messageEvents('Q1', { admin: false, sendAs: ['bob@a.test'] }), null);
  } finally {
    store.close();
  }
});
