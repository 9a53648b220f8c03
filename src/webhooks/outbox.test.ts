// The fan-out: each event goes to the webhooks whose filter takes its type
// and whose owner key may read it (the scope of GET /v1/events, matched as
// mayUseAddress matches send-as), as the exact bytes to POST; none without
// webhooks; a revoked key's webhooks stop within ACTIVE_REFRESH_MS.

import { after, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { MessageEvent } from '../events/events.ts';
import { mayUseAddress } from '../policy/senders.ts';
import { openStore, type Store, type StoredEvent } from '../store/store.ts';
import { ACTIVE_REFRESH_MS, mayRead, outboxRowOf, WebhookOutbox } from './outbox.ts';
import { webhookPayload } from './payload.ts';
import { newSecret } from './sign.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-outbox-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const T0 = 1_765_000_000_000;
const FAR = 2 * T0;

function event(id: string, type: MessageEvent['type'], recipient = 'x@remote.test'): MessageEvent {
  return {
    id,
    type,
    timestamp: new Date(T0).toISOString(),
    queueId: 'Q1',
    recipient,
    data: {
      attempt: type === 'queued' ? null : 1,
      relay: type === 'queued' ? null : { host: 'mx.remote.test', ip: '192.0.2.1', port: 25 },
      tls: type === 'queued' ? null : { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: false, peer: 'mx.remote.test' },
      reply: type === 'queued' ? null : { code: 250, enhanced: '2.0.0', text: 'ok' },
      bounceClass: null,
      source: 'api',
      tags: { order: '17' },
      transport: 'mx',
    },
  };
}

describe('webhook outbox fan-out', () => {
  let store: Store;
  let now = T0;
  let outbox: WebhookOutbox;
  const pending = (id: string): string[] => store.webhooks.claim(id, FAR, FAR, 1000).map((r) => r.eventId);

  beforeEach(() => {
    store?.close();
    store = openStore(path.join(root, `d${n++}`));
    now = T0;
    outbox = new WebhookOutbox(store.webhooks, () => now);
    store.addApiKey({ name: 'alice-app', hash: 'h-alice', sendAs: ['alice@tern.test'], admin: false, createdAt: T0 });
    store.addApiKey({ name: 'shop', hash: 'h-shop', sendAs: ['@shop.test'], admin: false, createdAt: T0 });
    store.addApiKey({ name: 'ops', hash: 'h-ops', sendAs: [], admin: true, createdAt: T0 });
  });
  after(() => store?.close());

  const add = (id: string, owner: string, events: MessageEvent['type'][] | null = null): void => {
    store.webhooks.addWebhook({ id, owner, url: `http://127.0.0.1:9/${id}`, events, secret: newSecret(), createdAt: T0, disabledAt: null, disabledReason: null });
    outbox.invalidate();
  };

  it('writes nothing and reads the list at most every few seconds when there are no webhooks', () => {
    let reads = 0;
    const counting = new WebhookOutbox({ ...store.webhooks, activeWebhooks: () => (reads++, []) } as typeof store.webhooks, () => now);
    for (let i = 0; i < 100; i++) counting.write([{ event: event(`e${i}`, 'queued'), sender: 'alice@tern.test' }]);
    assert.equal(reads, 1);
    now += ACTIVE_REFRESH_MS;
    counting.write([{ event: event('e', 'queued'), sender: 'alice@tern.test' }]);
    assert.equal(reads, 2);
    assert.equal(counting.touched().size, 0);
  });

  it('sends each webhook the types it asked for, of the mail its key may read; an admin key\'s gets all', () => {
    add('wh_all', 'h-alice');
    add('wh_bounced', 'h-alice', ['bounced']);
    add('wh_shop', 'h-shop');
    add('wh_ops', 'h-ops', ['queued', 'bounced']);
    const batch: StoredEvent[] = [
      { event: event('e1', 'queued'), sender: 'alice+news@Tern.test' },
      { event: event('e2', 'bounced'), sender: 'alice@tern.test' },
      { event: event('e3', 'delivered'), sender: 'bob@tern.test' },
      { event: event('e4', 'queued'), sender: 'orders@shop.test' },
      // A DSN (null sender): only an admin reads it.
      { event: event('e5', 'queued'), sender: '' },
    ];
    store.transaction(() => outbox.write(batch));
    assert.deepEqual(pending('wh_all'), ['e1', 'e2']);
    assert.deepEqual(pending('wh_bounced'), ['e2']);
    assert.deepEqual(pending('wh_shop'), ['e4']);
    assert.deepEqual(pending('wh_ops'), ['e1', 'e2', 'e4', 'e5']);
    assert.deepEqual([...outbox.touched()].sort(), ['wh_all', 'wh_bounced', 'wh_ops', 'wh_shop']);
  });

  it('stores no copy of the payload: a claimed row\'s {type, timestamp, data} is made from the stored event, identical for every webhook', () => {
    add('wh_a', 'h-alice');
    add('wh_b', 'h-ops');
    const e = event('e1', 'delivered');
    const batch: StoredEvent[] = [{ event: e, sender: 'alice@tern.test' }];
    // As EventRecorder does: the events and their outbox rows in one transaction.
    store.transaction(() => {
      store.addEvents(batch);
      outbox.write(batch);
    });
    const [ca] = store.webhooks.claim('wh_a', FAR, FAR, 1);
    assert.equal(ca!.body, null, 'no payload stored');
    assert.ok(ca!.event, 'the event\'s JSON comes with the claim');
    const a = outboxRowOf(ca!)!;
    const b = outboxRowOf(store.webhooks.claim('wh_b', FAR, FAR, 1)[0]!)!;
    assert.equal(a.body, b.body);
    // The same bytes as the dispatcher that wrote the row POSTs from memory.
    assert.equal(a.body, webhookPayload(e));
    assert.equal(a.eventAt, T0);
    const payload = JSON.parse(a.body) as { type: string; timestamp: string; data: MessageEvent };
    assert.deepEqual(Object.keys(payload), ['type', 'timestamp', 'data']);
    assert.equal(payload.type, 'delivered');
    assert.equal(payload.timestamp, e.timestamp);
    // GET /v1/events's schema names tls.version, cipher, verified and policy: the certificate's name is not shown.
    assert.deepEqual(payload.data, { ...e, data: { ...e.data, tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: false } } });
  });

  it('stops a revoked key\'s webhooks within ACTIVE_REFRESH_MS, a deleted or disabled one at once', () => {
    add('wh_a', 'h-alice');
    add('wh_s', 'h-shop');
    const write = (id: string, sender: string) => store.transaction(() => outbox.write([{ event: event(id, 'queued'), sender }]));
    write('e1', 'alice@tern.test');
    store.revokeApiKey('alice-app'); // `tern apikey revoke`, another process
    now += ACTIVE_REFRESH_MS - 1;
    write('e2', 'alice@tern.test');
    now += 1;
    write('e3', 'alice@tern.test');
    assert.deepEqual(pending('wh_a'), ['e1', 'e2']);

    write('s1', 'a@shop.test');
    store.webhooks.disableWebhook('wh_s', now, '410');
    outbox.invalidate();
    write('s2', 'a@shop.test');
    assert.deepEqual(pending('wh_s'), ['s1']);
  });

  it('reads the scope as mayUseAddress does (plus-tags, @domains, case)', () => {
    const cases: [string[], string][] = [
      [['alice@tern.test'], 'alice@tern.test'],
      [['alice@tern.test'], 'Alice+x@TERN.test'],
      [['alice@tern.test'], 'alice@tern.test.evil'],
      [['@tern.test'], 'bob@Tern.Test'],
      [['@tern.test'], 'bob@sub.tern.test'],
      [['Bob@Tern.test'], 'bob@tern.test'],
      [[], 'alice@tern.test'],
      [['@tern.test'], ''],
    ];
    for (const [sendAs, sender] of cases) assert.equal(mayRead({ admin: false, sendAs }, sender), mayUseAddress(sender, sendAs), `${sendAs} / ${sender}`);
    assert.equal(mayRead({ admin: true, sendAs: [] }, ''), true);
  });
});
