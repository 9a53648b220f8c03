// The webhook tables: registration and listing (with the owner key's name,
// gone when revoked), the outbox's claims under a lease, reschedules,
// releases, purges and expiry, and the bounded record of deliveries; run
// against both store kinds (test/helpers/stores.ts). What only several
// nodes sharing PostgreSQL can show is in pg/webhooks.test.ts.

import { after, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { MessageEvent } from '../events/events.ts';
import type { Store } from './store.ts';
import type { OutboxInsert, WebhookRecord } from './webhooks.ts';
import { storeKinds } from '../../test/helpers/stores.ts';

let n = 0;

const T0 = 1_765_000_000_000;

function hook(id: string, owner: string, extra: Partial<WebhookRecord> = {}): WebhookRecord {
  return { id, owner, url: `http://127.0.0.1:9/${id}`, events: null, secret: 'whsec_AAAA', createdAt: T0 + n++, disabledAt: null, disabledReason: null, ...extra };
}

function row(webhookId: string, eventId: string, nextAttempt: number, eventAt = T0): OutboxInsert {
  return { webhookId, eventId, eventAt, body: `{"id":"${eventId}"}`, nextAttempt };
}

for (const kind of storeKinds()) describe(`webhook store (${kind.name})`, { skip: kind.skip }, () => {
  let store: Store;
  beforeEach(() => {
    store?.close();
    store = kind.open();
    store.addApiKey({ name: 'alice-app', hash: 'h-alice', sendAs: ['alice@tern.test'], admin: false, createdAt: T0 });
    store.addApiKey({ name: 'ops', hash: 'h-ops', sendAs: [], admin: true, createdAt: T0 });
  });
  after(() => store?.close());

  it('adds, lists by owner or all (with the owner key\'s name), gets, disables and deletes', () => {
    const w = store.webhooks;
    w.addWebhook(hook('wh_a', 'h-alice', { events: ['bounced', 'delivered'] }));
    w.addWebhook(hook('wh_b', 'h-ops'));
    assert.equal(w.countWebhooks('h-alice'), 1);
    assert.deepEqual(w.listWebhooks('h-alice').map((x) => [x.id, x.ownerName, x.events]), [['wh_a', 'alice-app', ['bounced', 'delivered']]]);
    assert.deepEqual(w.listWebhooks(null).map((x) => x.id), ['wh_a', 'wh_b']);
    assert.equal(w.getWebhook('wh_b')!.events, null);
    assert.equal(w.getWebhook('wh_nope'), null);

    assert.deepEqual(w.activeWebhooks().map((x) => [x.id, x.ownerAdmin, x.ownerSendAs]), [['wh_a', false, ['alice@tern.test']], ['wh_b', true, []]]);
    assert.equal(w.disableWebhook('wh_b', T0 + 5, '410'), true);
    assert.equal(w.disableWebhook('wh_b', T0 + 6, 'again'), false, 'the first reason stays');
    assert.deepEqual([w.getWebhook('wh_b')!.disabledAt, w.getWebhook('wh_b')!.disabledReason], [T0 + 5, '410']);
    assert.deepEqual(w.activeWebhooks().map((x) => x.id), ['wh_a'], 'a disabled webhook is not active');

    // A revoked key's webhooks stay listed (for an admin), owner null, and are not active.
    store.revokeApiKey('alice-app');
    assert.equal(w.getWebhook('wh_a')!.ownerName, null);
    assert.deepEqual(w.activeWebhooks(), []);

    w.recordDelivery({ webhookId: 'wh_a', eventId: 'e1', attempt: 1, at: T0, status: 500, error: null, durationMs: 3, outcome: 'retrying' });
    assert.equal(w.deleteWebhook('wh_a'), true);
    assert.equal(w.deleteWebhook('wh_a'), false);
    assert.deepEqual(w.recentDeliveries('wh_a', 10), [], 'its deliveries went with it');
    w.recordDelivery({ webhookId: 'wh_a', eventId: 'e2', attempt: 1, at: T0, status: 200, error: null, durationMs: 3, outcome: 'delivered' });
    assert.deepEqual(w.recentDeliveries('wh_a', 10), [], 'an attempt that ends after the delete leaves nothing');
  });

  it('claims due rows in due order, per webhook, under a lease; a lease that ran out is claimed again', () => {
    const w = store.webhooks;
    w.enqueue([row('wh_a', 'e3', T0 + 30), row('wh_a', 'e1', T0 + 10), row('wh_b', 'x1', T0), row('wh_a', 'e2', T0 + 20), row('wh_a', 'e4', T0 + 1000)]);
    assert.equal(w.nextDue('wh_a'), T0 + 10);
    const first = w.claim('wh_a', T0 + 100, T0 + 500, 2);
    assert.deepEqual(first.map((r) => [r.eventId, r.attempts, r.body]), [['e1', 0, '{"id":"e1"}'], ['e2', 0, '{"id":"e2"}']]);
    assert.equal(w.nextDue('wh_a'), T0 + 30, 'leased rows do not count as due');
    assert.deepEqual(w.claim('wh_a', T0 + 100, T0 + 500, 10).map((r) => r.eventId), ['e3'], 'not e4 (later), not e1/e2 (leased), not x1 (another webhook)');
    assert.deepEqual(w.claim('wh_a', T0 + 100, T0 + 500, 10), []);
    // A dispatcher that died: past its lease, the rows are due again.
    assert.deepEqual(w.claim('wh_a', T0 + 501, T0 + 900, 10).map((r) => r.eventId), ['e1', 'e2', 'e3']);
    assert.equal(w.countPending('wh_a', 100), 4);
    assert.equal(w.countPending('wh_a', 2), 2, 'counted up to the limit');
  });

  it('finish deletes, reschedule counts the attempt and ends the lease, release ends it without one', () => {
    const w = store.webhooks;
    w.enqueue([row('wh_a', 'e1', T0), row('wh_a', 'e2', T0), row('wh_a', 'e3', T0)]);
    const [r1, r2, r3] = w.claim('wh_a', T0, T0 + 60_000, 3);
    w.finish(r1!.seq);
    w.reschedule(r2!.seq, 1, T0 + 5000);
    w.release([r3!.seq]);
    assert.equal(w.nextDue('wh_a'), T0);
    assert.deepEqual(w.claim('wh_a', T0 + 1, T0 + 60_000, 10).map((r) => [r.eventId, r.attempts]), [['e3', 0]]);
    assert.deepEqual(w.claim('wh_a', T0 + 5000, T0 + 60_000, 10).map((r) => [r.eventId, r.attempts, r.nextAttempt]), [['e2', 1, T0 + 5000]]);
    // Both leases (until T0 + 60 s, a year ago) have run out: the embedded
    // store ends every lease at start, the shared one those that ran out.
    assert.equal(w.releaseAllClaims(), 2);
    assert.equal(w.releaseAllClaims(), 0);
    assert.deepEqual(w.claim('wh_a', T0 + 5000, T0 + 60_000, 10).map((r) => r.eventId).sort(), ['e2', 'e3']);
  });

  it('finishMany deletes the listed rows in one call; enqueueClaimed (embedded only) writes rows already leased and says their seqs in order', () => {
    const w = store.webhooks;
    w.enqueue([row('wh_a', 'e1', T0), row('wh_a', 'e2', T0), row('wh_a', 'e3', T0)]);
    const claimed = w.claim('wh_a', T0, T0 + 60_000, 3);
    w.finishMany([claimed[0]!.seq, claimed[2]!.seq]);
    w.finishMany([]);
    assert.equal(w.countPending('wh_a', 10), 1);
    if (kind.name === 'postgres') {
      assert.equal(w.enqueueClaimed, undefined, 'its insert is deferred to the commit: no seqs to give');
      return;
    }
    const seqs = w.enqueueClaimed!([row('wh_b', 'f1', T0), row('wh_b', 'f2', T0)], T0 + 60_000);
    assert.equal(seqs.length, 2);
    assert.ok(seqs[0]! < seqs[1]!, 'in the order given');
    assert.deepEqual(w.claim('wh_b', T0 + 1, T0 + 120_000, 10), [], 'leased: no claim takes them while the lease lasts');
    assert.deepEqual(w.claim('wh_b', T0 + 60_001, T0 + 120_000, 10).map((r) => [r.seq, r.eventId]), [[seqs[0], 'f1'], [seqs[1], 'f2']], 'due again once it ran out');
    w.finishMany(seqs);
    assert.equal(w.countPending('wh_b', 10), 0);
  });

  it('purges one webhook\'s rows and expires old rows, a bounded batch at a time', () => {
    const w = store.webhooks;
    w.enqueue(Array.from({ length: 5 }, (_, i) => row('wh_a', `a${i}`, T0)));
    w.enqueue(Array.from({ length: 3 }, (_, i) => row('wh_b', `b${i}`, T0)));
    assert.equal(w.purgeOutbox('wh_a', 2), 2);
    assert.equal(w.purgeOutbox('wh_a', 10), 3);
    assert.equal(w.countPending('wh_a', 100), 0);
    assert.equal(w.countPending('wh_b', 100), 3);

    w.enqueue([row('wh_c', 'new', T0, T0 + 10_000)]);
    // Rows of events before T0 + 1 (wh_b's three) go; the newer one stays.
    assert.equal(w.expireOutbox(T0 + 1, 2), 2);
    assert.equal(w.expireOutbox(T0 + 1, 2), 1);
    assert.equal(w.expireOutbox(T0 + 1, 2), 0);
    assert.equal(w.countPending('wh_c', 10), 1);
  });

  it('keeps the newest deliveries per webhook, newest first', () => {
    const w = store.webhooks;
    w.addWebhook(hook('wh_a', 'h-alice'));
    w.addWebhook(hook('wh_b', 'h-alice'));
    for (let i = 1; i <= 8; i++) {
      w.recordDelivery({ webhookId: 'wh_a', eventId: `e${i}`, attempt: i, at: T0 + i, status: i % 2 ? null : 500, error: i % 2 ? 'ECONNREFUSED' : null, durationMs: i, outcome: 'retrying' });
      w.pruneDeliveries('wh_a', 5);
    }
    w.recordDelivery({ webhookId: 'wh_b', eventId: 'b1', attempt: 1, at: T0, status: 204, error: null, durationMs: 1, outcome: 'delivered' });
    w.pruneDeliveries('wh_b', 5);
    assert.deepEqual(w.recentDeliveries('wh_a', 100).map((d) => d.eventId), ['e8', 'e7', 'e6', 'e5', 'e4']);
    assert.deepEqual(w.recentDeliveries('wh_a', 2).map((d) => [d.status, d.error]), [[500, null], [null, 'ECONNREFUSED']]);
    assert.deepEqual(w.recentDeliveries('wh_b', 100).map((d) => [d.eventId, d.outcome]), [['b1', 'delivered']], 'another webhook\'s are untouched');
  });

  it('the outbox commits with the events\' transaction or not at all', () => {
    assert.throws(() =>
      store.transaction(() => {
        store.webhooks.enqueue([row('wh_a', 'e1', T0)]);
        throw new Error('the events write failed');
      }),
    );
    assert.equal(store.webhooks.countPending('wh_a', 10), 0);
    store.transaction(() => store.webhooks.enqueue([row('wh_a', 'e1', T0)]));
    assert.equal(store.webhooks.countPending('wh_a', 10), 1);
  });

  it('a row stored without a payload is claimed with its event\'s stored JSON; with null once the event is gone', () => {
    store.webhooks.addWebhook(hook('wh_a', 'h-alice'));
    const stored: MessageEvent = {
      id: 'E1', type: 'delivered', timestamp: new Date(T0).toISOString(), queueId: 'Q1', recipient: 'bob@remote.test',
      data: { attempt: 1, relay: null, tls: null, reply: { code: 250, enhanced: '2.0.0', text: 'ok' }, bounceClass: null, source: 'api', tags: null, transport: 'mx' },
    };
    const bare = (eventId: string): OutboxInsert => ({ webhookId: 'wh_a', eventId, eventAt: T0, nextAttempt: T0 });
    store.transaction(() => {
      store.addEvents([{ event: stored, sender: 'alice@tern.test' }]);
      store.webhooks.enqueue([bare('E1'), bare('E-never-stored'), row('wh_a', 'e3', T0)]);
    });
    const claimed = store.webhooks.claim('wh_a', T0, T0 + 1000, 10);
    assert.deepEqual(
      claimed.map((c) => [c.eventId, c.body, c.event === null ? null : (JSON.parse(c.event) as MessageEvent)]),
      [['E1', null, stored], ['E-never-stored', null, null], ['e3', '{"id":"e3"}', null]],
    );
  });
});
