// The dashboard's tables and what src/dashboard/ builds on them: the
// aggregates of a known batch (messages counted once, attempts, TLS share,
// destinations, bounce classes, in every span), their pruning; sessions in
// the store and the login rules; the message search (each kind, paging,
// dates) and that every read is an index range (EXPLAIN). Everything that
// touches a store runs against both kinds (test/helpers/stores.ts).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { STORE_FILE, type Store, type StoredEvent } from './store.ts';
import { DASHBOARD_SQL, ID_TOP } from './dashboard.ts';
import { PG_DASHBOARD_SQL } from './pg/dashboard.ts';
import { SyncPgClient } from './pg/sync-client.ts';
import { storeKinds, type StoreKind } from '../../test/helpers/stores.ts';
import type { EventType, MessageEvent } from '../events/events.ts';
import { DAY, HOUR, KEPT, MINUTE, StatsMaintainer, currentMinute, overviewStats, rangeStart, statDeltas } from '../dashboard/stats.ts';
import { LoginRefused, SESSIONS_PER_USER, Sessions, cookieValue, tokenHash } from '../dashboard/sessions.ts';
import { Authenticator } from '../policy/auth.ts';
import { silentLogger } from '../util/log.ts';
import { containsPattern, idTimePrefix, searchMessages } from '../dashboard/search.ts';
import { AuthThrottle } from '../policy/auth-throttle.ts';
import { hashPassword } from './passwords.ts';
import { Spool } from '../spool/spool.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-dashboard-store-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const KINDS = storeKinds();

/** Where each store the tests open lives (a directory or a database URL): a few tests read its tables directly. */
const locations = new WeakMap<Store, string>();
function openFresh(kind: StoreKind): Store {
  const at = kind.location();
  const store = kind.openAt(at);
  locations.set(store, at);
  return store;
}

/** Runs `fn` with a query function on a connection of its own to `store`'s database, of either kind. */
function withRawDb<T>(kind: StoreKind, store: Store, fn: (all: (sql: string, args?: unknown[]) => Record<string, unknown>[]) => T): T {
  const at = locations.get(store)!;
  if (kind.name === 'sqlite') {
    const db = new DatabaseSync(path.join(at, STORE_FILE));
    try {
      return fn((sql, args = []) => db.prepare(sql).all(...(args as (string | number)[])) as Record<string, unknown>[]);
    } finally {
      db.close();
    }
  }
  const db = new SyncPgClient(at);
  try {
    return fn((sql, args = []) => db.rows(sql, args));
  } finally {
    db.close();
  }
}

/** 2025-12-06 10:30:15 UTC: inside a minute, an hour and a day, none at a boundary. */
const NOW = Date.UTC(2025, 11, 6, 10, 30, 15);
let seq = 0;

/** A queue id of time `ms`, as Spool#newId makes them. */
function idAt(ms: number): string {
  const c = (seq++ % 1296).toString(36).toUpperCase().padStart(2, '0');
  return idTimePrefix(ms) + c + 'ABCDE';
}

function ev(type: EventType, queueId: string, recipient: string, at: number, data: Partial<MessageEvent['data']> = {}): MessageEvent {
  return {
    id: `${at.toString(36).padStart(10, '0')}${(seq++).toString(36).padStart(6, '0')}`,
    type,
    timestamp: new Date(at).toISOString(),
    queueId,
    recipient,
    data: { attempt: type === 'queued' ? null : 1, relay: null, tls: null, reply: null, bounceClass: null, source: 'smtp', tags: null, transport: null, ...data },
  };
}

const stored = (event: MessageEvent, sender = 'alice@tern.test', extra: Partial<StoredEvent> = {}): StoredEvent => ({ event, sender, ...extra });
const TLS = { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true };

/** As EventRecorder#writeBatch does it: the events and the aggregates in one transaction. */
function writeBatch(store: Store, stats: StatsMaintainer, batch: StoredEvent[]): void {
  store.transaction(() => {
    store.addEvents(batch);
    stats.write(batch);
  });
}

describe('dashboard aggregates of a batch', () => {
  it('a message whose queued events span two batches counts once; a later message again', () => {
    const state = { lastQueued: '' };
    const m = idAt(NOW);
    const first = statDeltas([stored(ev('queued', m, 'a@x.test', NOW)), stored(ev('queued', m, 'b@x.test', NOW))], state);
    const second = statDeltas([stored(ev('queued', m, 'c@x.test', NOW)), stored(ev('queued', idAt(NOW), 'a@x.test', NOW))], state);
    const received = (d: ReturnType<typeof statDeltas>) => d.filter((x) => x.metric === 'received' && x.span === MINUTE).reduce((s, x) => s + x.count, 0);
    assert.equal(received(first), 1);
    assert.equal(received(second), 1, 'the split message is not counted again; the next message is');
    // Summed per batch: one delta per (span, metric, bucket, key), not per event.
    assert.equal(first.length, 3);
  });
});

for (const kind of KINDS) describe(`dashboard aggregates (${kind.name})`, { skip: kind.skip }, () => {
  it('counts a known batch: messages once, attempts, TLS share, destinations and bounce classes, in every span', () => {
    const store = openFresh(kind);
    const stats = new StatsMaintainer(store.dashboard, () => NOW);
    const a = idAt(NOW - 5000);
    const b = idAt(NOW - 4000);
    const t = NOW - 3000;
    writeBatch(store, stats, [
      // Message a: three recipients, one message.
      stored(ev('queued', a, 'x@one.test', t)),
      stored(ev('queued', a, 'y@two.test', t)),
      stored(ev('queued', a, 'bob@tern.test', t)),
      stored(ev('queued', b, 'z@one.test', t)),
      stored(ev('delivered', a, 'x@one.test', t, { transport: 'mx', tls: TLS })),
      stored(ev('delivered', a, 'y@Two.TEST', t, { transport: 'smarthost' })),
      stored(ev('delivered', a, 'bob@tern.test', t, { transport: 'maildir' })),
      stored(ev('delivered', b, 'z@one.test', t, { transport: 'mx', tls: TLS })),
      stored(ev('deferred', b, 'z@one.test', t, { transport: 'mx' })),
      stored(ev('bounced', b, 'z@one.test', t, { transport: 'mx', bounceClass: 'mailbox-full' })),
      stored(ev('bounced', b, 'w@one.test', t, { transport: 'mx', bounceClass: 'mailbox-full' })),
      stored(ev('bounced', b, 'v@one.test', t, { transport: 'mx', bounceClass: 'spam-block' })),
      // Not among the overview's figures.
      stored(ev('expired', b, 'u@one.test', t)),
      stored(ev('delayed', b, 'u@one.test', t)),
    ]);
    for (const range of ['hour', 'day', 'month'] as const) {
      const o = overviewStats(store.dashboard, range, NOW);
      const last = o.buckets.length - 1;
      assert.equal(o.buckets.length, { hour: 60, day: 24, month: 30 }[range]);
      assert.equal(o.buckets[0], rangeStart(range, NOW));
      assert.ok(o.buckets[last]! <= NOW && NOW < o.buckets[last]! + { hour: MINUTE, day: HOUR, month: DAY }[range], `${range}: the last bucket holds now`);
      assert.deepEqual(
        Object.fromEntries(Object.entries(o.series).map(([k, v]) => [k, v[last]])),
        { received: 2, delivered: 4, deferred: 1, bounced: 3 },
        range,
      );
      assert.equal(o.series.delivered.slice(0, last).reduce((x, y) => x + y, 0), 0, 'earlier buckets are empty');
      // Outbound: three remote deliveries (mx, smarthost), two with TLS; Maildir is not outbound.
      assert.deepEqual(o.tls, { tls: 2, total: 3 });
      assert.deepEqual(o.topDomains, [{ domain: 'one.test', count: 2 }, { domain: 'two.test', count: 1 }]);
      assert.deepEqual(o.topBounceClasses, [{ bounceClass: 'mailbox-full', count: 2 }, { bounceClass: 'spam-block', count: 1 }]);
    }
    assert.deepEqual(currentMinute(store.dashboard, NOW), { received: 2, delivered: 4, deferred: 1, bounced: 3 });
    assert.deepEqual(currentMinute(store.dashboard, NOW + MINUTE), { received: 0, delivered: 0, deferred: 0, bounced: 0 });
    store.close();
  });

  it('adds the deltas of equal keys in one call together', () => {
    const store = openFresh(kind);
    const d = { span: MINUTE, metric: 'domain', bucket: NOW - (NOW % MINUTE), key: 'one.test', count: 2 };
    store.dashboard.addStats([d, { ...d, count: 3 }, { ...d, key: 'two.test' }]);
    store.dashboard.addStats([d]);
    assert.deepEqual(store.dashboard.topKeys(MINUTE, 'domain', 0, 10).map((r) => ({ ...r })), [{ key: 'one.test', count: 7 }, { key: 'two.test', count: 2 }]);
    assert.equal(d.count, 2, 'the caller\'s deltas are left as they were');
    store.close();
  });

  it('puts events in the buckets of their own time, and prunes rows past their span\'s keep', () => {
    const store = openFresh(kind);
    let now = NOW;
    const stats = new StatsMaintainer(store.dashboard, () => now);
    const old = NOW - 3 * HOUR;
    const id = idAt(old);
    writeBatch(store, stats, [stored(ev('queued', id, 'a@x.test', old)), stored(ev('delivered', id, 'a@x.test', old, { transport: 'maildir' }))]);
    // Three hours ago: outside the hour view, in the day's and the month's.
    assert.equal(overviewStats(store.dashboard, 'hour', NOW).series.delivered.reduce((x, y) => x + y, 0), 0);
    const day = overviewStats(store.dashboard, 'day', NOW);
    assert.equal(day.series.delivered[day.buckets.indexOf(old - (old % HOUR))], 1);
    assert.equal(overviewStats(store.dashboard, 'month', NOW).series.delivered.at(-1), 1);
    // The write above pruned already (a new minute of the clock): the 3-hour-old minute rows are gone.
    const rows = (span: number) => store.dashboard.series(span, ['delivered'], 0).length;
    assert.deepEqual([rows(MINUTE), rows(HOUR), rows(DAY)], [0, 1, 1]);
    now = NOW + 3 * DAY;
    assert.ok(stats.prune() > 0);
    assert.deepEqual([rows(MINUTE), rows(HOUR), rows(DAY)], [0, 0, 1], 'hours go after two days, days stay');
    now = NOW + KEPT.get(DAY)! + 2 * DAY;
    stats.prune();
    assert.equal(rows(DAY), 0);
    store.close();
  });
});

describe('dashboard session cookie', () => {
  it('reads the cookie by name', () => {
    assert.equal(cookieValue('a=1; tern_session=abc; b=2', 'tern_session'), 'abc');
    assert.equal(cookieValue('tern_session="abc"', 'tern_session'), 'abc');
    assert.equal(cookieValue('xtern_session=abc', 'tern_session'), null);
    assert.equal(cookieValue(undefined, 'tern_session'), null);
  });
});

for (const kind of KINDS) describe(`dashboard sessions (${kind.name})`, { skip: kind.skip }, () => {
  const T = NOW;
  it('are kept by the hash of the token; trimmed per user; expired ones go a bounded batch at a time', () => {
    const store = openFresh(kind);
    const d = store.dashboard;
    for (let i = 0; i < 30; i++) d.addSession({ tokenHash: `h${i}`, csrf: `c${i}`, user: i < 25 ? 'root@tern.test' : 'ops@tern.test', createdAt: T + i, expiresAt: T + 1000 + i });
    assert.deepEqual(d.getSession('h3'), { tokenHash: 'h3', csrf: 'c3', user: 'root@tern.test', createdAt: T + 3, expiresAt: T + 1003 });
    d.trimUserSessions('root@tern.test', 20);
    assert.equal(d.getSession('h4'), null, 'the oldest beyond 20 went');
    assert.ok(d.getSession('h5') && d.getSession('h24') && d.getSession('h25'));
    assert.equal(d.expireSessions(T + 1010, 3), 3, 'bounded');
    assert.equal(d.getSession('h5'), null);
    assert.ok(d.getSession('h8'));
    assert.equal(d.expireSessions(T + 1010, 100), 2);
    assert.ok(d.getSession('h10'), 'not expired yet');
    assert.deepEqual(d.deleteUserSessions('ops@tern.test').sort(), ['h25', 'h26', 'h27', 'h28', 'h29']);
    assert.equal(d.deleteSession('h10'), true);
    assert.equal(d.deleteSession('h10'), false);
    store.close();
  });

  it('log in admins only, refuse alike otherwise, throttle, and end on expiry, logout or demotion', async () => {
    const store = openFresh(kind);
    const hash = await hashPassword('correct horse battery');
    store.putUser({ address: 'root@tern.test', passwordHash: hash, sendAs: [], admin: true, createdAt: T });
    store.putUser({ address: 'user@tern.test', passwordHash: hash, sendAs: [], createdAt: T });
    let now = T;
    const throttle = new AuthThrottle({ baseDelayMs: 0, lockoutAfter: 4, now: () => now });
    const auth = new Authenticator({ store, configUsers: [], throttle, log: silentLogger });
    const sessions = new Sessions({ users: store, store: store.dashboard, throttle, authenticate: (ip, login, pw) => auth.authenticate(ip, login, pw, 'test'), now: () => now });

    const { token, session } = await sessions.login('192.0.2.1', 'ROOT@tern.test', 'correct horse battery');
    assert.match(token, /^[A-Za-z0-9_-]{43}$/, '256 bits, base64url');
    assert.equal(session.tokenHash, tokenHash(token));
    assert.equal(store.dashboard.getSession(token), null, 'the token itself is not a key');
    assert.equal(session.user, 'root@tern.test');
    assert.equal(session.expiresAt - session.createdAt, 12 * HOUR);
    assert.deepEqual(sessions.current(`other=1; tern_session=${token}`), session);
    assert.equal(sessions.current(`tern_session=${token}x`), null);
    assert.equal(sessions.current(undefined), null);

    // Wrong password, unknown account, right password of a non-admin: one refusal, one text.
    const refusals: string[] = [];
    for (const [who, pw] of [['root@tern.test', 'wrong'], ['nobody@tern.test', 'correct horse battery'], ['user@tern.test', 'correct horse battery']] as const) {
      await assert.rejects(sessions.login('192.0.2.2', who, pw), (e) => e instanceof LoginRefused && e.status === 401 && (refusals.push(e.message), true));
    }
    assert.equal(new Set(refusals).size, 1);
    // A fourth failure from the same address locks it out: 429 even with the right password.
    await assert.rejects(sessions.login('192.0.2.2', 'root@tern.test', 'nope'), (e) => e instanceof LoginRefused && e.status === 401);
    await assert.rejects(sessions.login('192.0.2.2', 'ops@tern.test', 'whatever'), (e) => e instanceof LoginRefused && e.status === 429);

    // Expiry: the session is dead at its end and deleted when found so.
    now = session.expiresAt;
    assert.equal(sessions.current(`tern_session=${token}`), null);
    assert.equal(store.dashboard.getSession(session.tokenHash), null);

    // Demotion (or deletion) ends a session at once.
    now = T + HOUR;
    const second = await sessions.login('192.0.2.1', 'root@tern.test', 'correct horse battery');
    assert.ok(sessions.current(`tern_session=${second.token}`));
    assert.equal(sessions.stillValid(second.session), true);
    store.putUser({ ...store.getUser('root@tern.test')!, admin: undefined });
    assert.equal(sessions.current(`tern_session=${second.token}`), null);
    store.putUser({ ...store.getUser('root@tern.test')!, admin: true });
    const third = await sessions.login('192.0.2.1', 'root@tern.test', 'correct horse battery');
    sessions.logout(third.session);
    assert.equal(sessions.current(`tern_session=${third.token}`), null);
    assert.equal(sessions.stillValid(third.session), false);

    // At most SESSIONS_PER_USER per account.
    for (let i = 0; i < SESSIONS_PER_USER + 2; i++) {
      now++;
      await sessions.login('192.0.2.1', 'root@tern.test', 'correct horse battery');
    }
    assert.equal(withRawDb(kind, store, (all) => all('SELECT count(*) AS n FROM ui_sessions')[0]!.n), SESSIONS_PER_USER);
    store.close();
  });
});

describe('queue ids', () => {
  it('carry their time as the spool makes them', () => {
    const spool = new Spool({ dir: path.join(root, 'spool'), fsync: false });
    const before = Date.now();
    const id = spool.newId();
    assert.ok(id.slice(0, 9) >= idTimePrefix(before) && id.slice(0, 9) <= idTimePrefix(Date.now()), id);
    assert.equal(id.length, 16);
  });
});

for (const kind of KINDS) describe(`message search (${kind.name})`, { skip: kind.skip }, () => {
  let store: Store;
  const ids: string[] = [];
  /** Minutes before NOW of each message; the newest last. */
  const DAYS_BACK = [40 * 24 * 60, 3 * 24 * 60, 90, 30, 10, 2];

  before(() => {
    store = openFresh(kind);
    const batch: StoredEvent[] = [];
    DAYS_BACK.forEach((minutes, i) => {
      const at = NOW - minutes * MINUTE;
      const id = idAt(at);
      ids.push(id);
      const sender = i % 2 === 0 ? 'alice@tern.test' : 'news@list.example';
      const extra = { subject: `Invoice ${i} for 100% of the_order`, messageId: `<m${i}@tern.test>` };
      batch.push(stored(ev('queued', id, 'bob@example.org', at + 10), sender, extra));
      if (i === 5) batch.push(stored(ev('queued', id, 'carol@example.org', at + 10), sender, extra));
      batch.push(stored(ev(i === 4 ? 'bounced' : 'delivered', id, 'bob@example.org', at + 20, { transport: 'mx' }), sender, extra));
    });
    store.addEvents(batch);
  });
  after(() => store.close());

  const search = (q: string | undefined, extra: { since?: number; until?: number; limit?: number; before?: string } = {}) =>
    searchMessages(store.dashboard, { q, limit: 50, ...extra });
  const found = (page: ReturnType<typeof search>) => page.messages.map((m) => ids.indexOf(m.id));

  it('lists every message newest first, with its recipients\' status', () => {
    const page = search('');
    assert.deepEqual(found(page), [5, 4, 3, 2, 1, 0]);
    assert.equal(page.next, null);
    const m = page.messages[0]!;
    assert.deepEqual(
      { from: m.from, subject: m.subject, messageId: m.messageId, recipients: m.recipients },
      { from: 'news@list.example', subject: 'Invoice 5 for 100% of the_order', messageId: '<m5@tern.test>', recipients: [{ address: 'bob@example.org', status: 'delivered' }, { address: 'carol@example.org', status: 'queued' }] },
    );
    assert.equal(m.createdAt, new Date(NOW - 2 * MINUTE + 10).toISOString());
    assert.deepEqual(page.messages[1]!.recipients, [{ address: 'bob@example.org', status: 'bounced' }]);
  });

  it('finds by sender or recipient (exact, any case), Message-ID with or without <>, queue id, subject substring', () => {
    assert.deepEqual(found(search('Alice@Tern.test')), [4, 2, 0]);
    assert.deepEqual(found(search('carol@example.org')), [5]);
    assert.deepEqual(found(search('bob@example.org')), [5, 4, 3, 2, 1, 0]);
    assert.deepEqual(found(search('alice@tern')), [], 'an address matches whole');
    assert.deepEqual(found(search('<m3@tern.test>')), [3]);
    assert.deepEqual(found(search('m3@tern.test')), [3]);
    assert.deepEqual(found(search(ids[2]!.toLowerCase())), [2]);
    assert.deepEqual(found(search('invoice 1')), [1]);
    assert.deepEqual(found(search('100%')), [5, 4, 3, 2, 1, 0]);
    assert.deepEqual(found(search('0%')), [5, 4, 3, 2, 1, 0]);
    assert.deepEqual(found(search('I_voice')), [], '_ is literal, not any character');
    assert.deepEqual(found(search('the_order')), [5, 4, 3, 2, 1, 0]);
    assert.deepEqual(found(search('nothing like it')), []);
    assert.equal(containsPattern('a%b_c\\'), '%a\\%b\\_c\\\\%');
  });

  it('narrows by date, and pages with the cursor', () => {
    assert.deepEqual(found(search('', { since: NOW - 2 * HOUR })), [5, 4, 3, 2]);
    assert.deepEqual(found(search('', { since: NOW - 4 * DAY, until: NOW - HOUR })), [2, 1]);
    assert.deepEqual(found(search('bob@example.org', { until: NOW - 20 * MINUTE })), [3, 2, 1, 0]);
    assert.deepEqual(found(search('invoice', { since: NOW - 31 * MINUTE, until: NOW - 5 * MINUTE })), [4, 3]);
    let page = search('bob@example.org', { limit: 4 });
    assert.deepEqual(found(page), [5, 4, 3, 2]);
    assert.equal(page.next, ids[2]);
    page = search('bob@example.org', { limit: 4, before: page.next! });
    assert.deepEqual(found(page), [1, 0]);
    assert.equal(page.next, null);
    // Two kinds (sender, recipient) merged across pages without repeats or gaps.
    const seen: number[] = [];
    let before: string | undefined;
    do {
      page = search('alice@tern.test', { limit: 1, ...(before ? { before } : {}) });
      seen.push(...found(page));
      before = page.next ?? undefined;
    } while (before);
    assert.deepEqual(seen, [4, 2, 0]);
  });

  it('a subject scan stops at its bound and says where to go on', () => {
    const w = { below: ID_TOP, from: '', since: 0, until: Number.MAX_SAFE_INTEGER };
    const r = store.dashboard.idsBySubject(containsPattern('invoice 0'), w, 10, 3);
    assert.deepEqual(r, { ids: [], floor: ids[3] }, 'three newest looked at, nothing found, go on below the third');
    const rest = store.dashboard.idsBySubject(containsPattern('invoice 0'), { ...w, below: r.floor }, 10, 3);
    assert.deepEqual(rest, { ids: [ids[0]], floor: '' });
  });

  it('a subject matches ignoring the case of ASCII letters only, as SQLite\'s LIKE does', () => {
    const other = openFresh(kind);
    try {
      other.addEvents([stored(ev('queued', idAt(NOW), 'bob@example.org', NOW), 'alice@tern.test', { subject: 'Café Émile' })]);
      const w = { below: ID_TOP, from: '', since: 0, until: Number.MAX_SAFE_INTEGER };
      const hits = (q: string) => other.dashboard.idsBySubject(containsPattern(q), w, 10, 100).ids.length;
      assert.deepEqual(['CAFé', 'café Émile', 'CAFÉ', 'émile'].map(hits), [1, 1, 0, 0]);
    } finally {
      other.close();
    }
  });

  it('reads through indexes, never a scan of messages or events (EXPLAIN)', () => {
    if (kind.name === 'postgres') return postgresPlans(kind);
    const db = new DatabaseSync(path.join(locations.get(store)!, STORE_FILE));
    const plan = (sql: string, args: (string | number)[]) =>
      (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...args) as { detail: string }[]).map((r) => r.detail).join(' | ');
    const w = [ID_TOP, '', 0, Number.MAX_SAFE_INTEGER];
    const cases: [string, string, (string | number)[], RegExp][] = [
      ['sender', DASHBOARD_SQL.bySender, ['a@b', ...w, 10], /SEARCH messages USING (COVERING )?INDEX dash_messages_sender \(sender=\? AND id>\? AND id<\?\)/],
      ['recipient', DASHBOARD_SQL.byRecipient, ['a@b', ...w, 10], /SEARCH e USING COVERING INDEX dash_events_recipient \(recipient=\? AND queue_id>\? AND queue_id<\?\).*SEARCH m USING (COVERING )?INDEX \w+ \(id=\?/],
      ['message id', DASHBOARD_SQL.byMessageId(2), ['<a@b>', 'a@b', ...w, 10], /SEARCH messages USING INDEX messages_message_id \(message_id=\?\)/],
      ['subject', DASHBOARD_SQL.bySubject, [...w, 1000, '%x%', 10], /SEARCH messages USING COVERING INDEX dash_messages_scan \(id>\? AND id<\?\)/],
      ['scan end', DASHBOARD_SQL.scanEnd, [...w, 1000], /SEARCH messages USING COVERING INDEX dash_messages_scan \(id>\? AND id<\?\)/],
      ['time', DASHBOARD_SQL.byTime, [...w, 10], /SEARCH messages USING COVERING INDEX dash_messages_scan \(id>\? AND id<\?\)/],
      ['series', DASHBOARD_SQL.series(4), [MINUTE, 'received', 'delivered', 'deferred', 'bounced', 0], /SEARCH dash_stats USING PRIMARY KEY \(span=\? AND metric=\? AND bucket>\?\)/],
      ['top', DASHBOARD_SQL.top, [MINUTE, 'domain', 0, 10], /SEARCH dash_stats USING PRIMARY KEY \(span=\? AND metric=\? AND bucket>\?\)/],
    ];
    for (const [name, sql, args, want] of cases) {
      const p = plan(sql, args);
      assert.match(p, want, `${name}: ${p}`);
      assert.doesNotMatch(p, /\bSCAN (messages|events|e|m|dash_stats)\b(?! USING)/, `${name} scans a table: ${p}`);
    }
    db.close();
  });
});

/**
 * The PostgreSQL plans of the same reads. The planner picks by the
 * table's statistics, so the store gets enough rows to make a scan look as
 * costly as it would be (20,000 messages, 40,000 events, 15,000 counters)
 * and is analyzed first; each read must then walk the index it was written
 * for, and none may scan a whole table (Seq Scan).
 */
function postgresPlans(kind: StoreKind): void {
  const store = openFresh(kind);
  try {
    withRawDb(kind, store, (all) => {
      all(`INSERT INTO messages (id, sender, sender_base, sender_domain, message_id, created_at, subject)
             SELECT lpad(upper(to_hex(i)), 16, '0'), 's' || (i % 300) || '@x.test', 's' || (i % 300) || '@x.test', '@x.test', '<m' || i || '@x.test>', ${NOW} + i, 'Subject ' || i
             FROM generate_series(1, 20000) AS i`);
      all(`INSERT INTO events (id, queue_id, type, recipient, body)
             SELECT lpad(to_hex(i), 12, '0') || t, lpad(upper(to_hex(i)), 16, '0'), t, 'r' || (i % 500) || '@y.test', '{}'
             FROM generate_series(1, 20000) AS i, unnest(ARRAY['queued', 'delivered']) AS t`);
      all(`INSERT INTO dash_stats (span, metric, bucket, key, count)
             SELECT ${MINUTE}, m, b * ${MINUTE}, k, 1
             FROM unnest(ARRAY['received', 'delivered', 'deferred', 'bounced', 'domain']) AS m, generate_series(1, 1000) AS b, unnest(ARRAY['', 'a.test', 'b.test']) AS k`);
      all('ANALYZE');
      const plan = (sql: string, args: unknown[]) => all(`EXPLAIN ${sql}`, args).map((r) => r['QUERY PLAN']).join(' | ');
      const w = [ID_TOP, '', 0, Number.MAX_SAFE_INTEGER];
      const cases: [string, string, unknown[], RegExp][] = [
        ['sender', PG_DASHBOARD_SQL.bySender, [...w, 's1@x.test', 10], /Index Scan Backward using messages_sender on messages/],
        ['recipient', PG_DASHBOARD_SQL.byRecipient, [...w, 'r1@y.test', 10], /Index (Only )?Scan Backward using dash_events_recipient on events e.*Index (Only )?Scan using messages_pkey on messages m/],
        ['message id', PG_DASHBOARD_SQL.byMessageId, [...w, ['<m3@x.test>', 'm3@x.test'], 10], /Index Scan using messages_message_id on messages/],
        ['subject', PG_DASHBOARD_SQL.bySubject, [...w, 1000, '%x%', 10], /Index (Only )?Scan Backward using (messages_pkey|dash_messages_scan) on messages/],
        ['scan end', PG_DASHBOARD_SQL.scanEnd, [...w, 999], /Index (Only )?Scan Backward using (messages_pkey|dash_messages_scan) on messages/],
        ['time', PG_DASHBOARD_SQL.byTime, [...w, 10], /Index (Only )?Scan Backward using (messages_pkey|dash_messages_scan) on messages/],
        ['series', PG_DASHBOARD_SQL.series, [MINUTE, ['received', 'delivered', 'deferred', 'bounced'], 900 * MINUTE], /Index Scan using dash_stats_pkey|Bitmap Index Scan on dash_stats_pkey/],
        ['top', PG_DASHBOARD_SQL.top, [MINUTE, 'domain', 900 * MINUTE, 10], /Index Scan using dash_stats_pkey|Bitmap Index Scan on dash_stats_pkey/],
        ['bucket', PG_DASHBOARD_SQL.bucket, [MINUTE, ['received', 'delivered'], 950 * MINUTE], /Index Scan using dash_stats_pkey|Bitmap Index Scan on dash_stats_pkey/],
      ];
      for (const [name, sql, args, want] of cases) {
        const p = plan(sql, args);
        assert.match(p, want, `${name}: ${p}`);
        assert.doesNotMatch(p, /Seq Scan/, `${name} scans a table: ${p}`);
      }
    });
  } finally {
    store.close();
  }
}
