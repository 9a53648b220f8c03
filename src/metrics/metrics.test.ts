// The metric families fed by plain counts and by the event stream: the
// counter children, the events subscriber (received once per message,
// one delivery result per recipient, the acceptance-to-delivery time), the
// queue gauge's states and the TLS version mapping. The registry is the
// process's, so every check reads a value before and after.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { registry } from './registry.ts';
import { CounterFamily } from './counter.ts';
import { HistogramFamily } from './histogram.ts';
import { metricsSubscriber, TRANSPORTS } from './events.ts';
import { queueStates, watchQueue } from './queue.ts';
import { countTlsSession } from './tls.ts';
import { watchSuppressions } from './suppressions.ts';
import { countWebhookDelivery } from './webhooks.ts';
import { EventStream } from '../events/events.ts';
import { Scheduler } from '../queue/scheduler.ts';
import { Spool } from '../spool/spool.ts';
import { perRecipient, router, tempfail } from '../../test/helpers/transports.ts';
import { silentLogger } from '../util/log.ts';
import type { Envelope, QueuedMessage } from '../spool/types.ts';

/** The value of one series (`name` may be a histogram's name_bucket/_sum/_count); 0 when absent. */
async function value(name: string, labels: Record<string, string> = {}): Promise<number> {
  const family = name.replace(/_(bucket|sum|count)$/, '');
  const metric = registry.getSingleMetric(registry.getSingleMetric(name) ? name : family);
  assert.ok(metric, `${name} is registered`);
  const got = await metric.get();
  // A histogram's values carry their series name (name_bucket, _sum, _count).
  const values = got.values as { value: number; labels: Record<string, string | number | undefined>; metricName?: string }[];
  const match = values.find(
    (v) => (v.metricName ?? got.name) === name && Object.keys(labels).length === Object.keys(v.labels).length && Object.entries(labels).every(([k, x]) => String(v.labels[k]) === x),
  );
  return match?.value ?? 0;
}

function message(recipients: number, opts: { source?: Envelope['source']; receivedAt?: number } = {}): QueuedMessage {
  const envelope: Envelope = {
    id: `m${Math.random().toString(36).slice(2)}`,
    sender: 'alice@tern.test',
    receivedAt: opts.receivedAt ?? Date.now(),
    smtputf8: false,
    recipients: Array.from({ length: recipients }, (_, i) => ({ address: `r${i}@tern.test`, original: `r${i}@tern.test` })),
    ...(opts.source ? { source: opts.source } : {}),
  };
  return { envelope, size: 100, state: { status: envelope.recipients.map(() => 'pending'), attempts: 0, nextAttempt: 0, lastReply: [] } } as unknown as QueuedMessage;
}

const ok = { reply: { code: 250, enhanced: '2.0.0', text: 'ok' }, relay: null, tls: null };
const later = { reply: { code: 451, enhanced: '4.3.0', text: 'busy' }, relay: null, tls: null };
const no = { reply: { code: 550, enhanced: '5.1.1', text: 'no such user' }, relay: null, tls: null };

test('a counter family: one child per label set, listed at 0 from the start, added up at scrape', async () => {
  const family = new CounterFamily({ name: 'tern_test_things_total', help: 'Things, for the test.', labelNames: ['kind'] });
  const a = family.child({ kind: 'a' });
  family.child({ kind: 'b' });
  assert.equal(family.child({ kind: 'a' }), a, 'the same child for the same labels');
  assert.equal(await value('tern_test_things_total', { kind: 'b' }), 0);
  a.inc();
  a.inc(2);
  assert.equal(await value('tern_test_things_total', { kind: 'a' }), 3);
  const text = await registry.metrics();
  assert.match(text, /^# HELP tern_test_things_total Things, for the test\.$/m);
  assert.match(text, /^# TYPE tern_test_things_total counter$/m);
  assert.match(text, /^tern_test_things_total\{kind="a"\} 3$/m);
  assert.match(text, /^tern_test_things_total\{kind="b"\} 0$/m);
  // A second scrape reports the same, not double.
  assert.match(await registry.metrics(), /^tern_test_things_total\{kind="a"\} 3$/m);
  registry.removeSingleMetric('tern_test_things_total');
});

test('a histogram family: le buckets are inclusive and cumulative, +Inf counts all, sum and count; reset keeps the series', async () => {
  const family = new HistogramFamily({ name: 'tern_test_seconds', help: 'Seconds, for the test.', labelNames: ['kind'], buckets: [1, 10] });
  const a = family.child({ kind: 'a' });
  assert.equal(family.child({ kind: 'a' }), a);
  for (const v of [0.5, 1, 5, 10, 11]) a.observe(v);
  const text = await registry.metrics();
  assert.match(text, /^# TYPE tern_test_seconds histogram$/m);
  const lines = text.split('\n').filter((l) => l.startsWith('tern_test_seconds'));
  assert.deepEqual(lines, [
    'tern_test_seconds_bucket{kind="a",le="1"} 2',
    'tern_test_seconds_bucket{kind="a",le="10"} 4',
    'tern_test_seconds_bucket{kind="a",le="+Inf"} 5',
    'tern_test_seconds_sum{kind="a"} 27.5',
    'tern_test_seconds_count{kind="a"} 5',
  ]);
  registry.resetMetrics();
  assert.match(await registry.metrics(), /^tern_test_seconds_count\{kind="a"\} 0$/m);
  registry.removeSingleMetric('tern_test_seconds');
  assert.throws(() => new HistogramFamily({ name: 'tern_test_bad', help: 'x', labelNames: [], buckets: [2, 1] }), /ascend/);
});

test('events: received once per message by source; one delivery result per recipient and attempt by transport', async () => {
  const events = new EventStream();
  const clock = 1_000_000;
  const unsubscribe = events.subscribe(metricsSubscriber(() => clock));
  const before = {
    smtp: await value('tern_messages_received_total', { source: 'smtp' }),
    api: await value('tern_messages_received_total', { source: 'api' }),
    delivered: await value('tern_deliveries_total', { transport: 'maildir', result: 'delivered' }),
    deferred: await value('tern_deliveries_total', { transport: 'mx', result: 'deferred' }),
    bounced: await value('tern_deliveries_total', { transport: 'mx', result: 'bounced' }),
    count: await value('tern_delivery_duration_seconds_count', { transport: 'maildir' }),
    sum: await value('tern_delivery_duration_seconds_sum', { transport: 'maildir' }),
    le1: await value('tern_delivery_duration_seconds_bucket', { transport: 'maildir', le: '1' }),
    le2: await value('tern_delivery_duration_seconds_bucket', { transport: 'maildir', le: '2.5' }),
  };
  const three = message(3, { receivedAt: clock - 2000 }); // delivered 2 s after acceptance
  for (let i = 0; i < 3; i++) events.emit('queued', three, i);
  const api = message(1, { source: 'api' });
  events.emit('queued', api, 0);
  events.emit('delivered', three, 0, 1, ok, 'maildir');
  events.emit('deferred', three, 1, 1, later, 'mx');
  events.emit('bounced', three, 2, 1, no, 'mx');
  // Not attempts: nothing counted.
  events.emit('expired', three, 1, 2, later);
  events.emit('delayed', three, 1, 1, later);
  unsubscribe();

  assert.equal(await value('tern_messages_received_total', { source: 'smtp' }), before.smtp + 1, 'three recipients, one message');
  assert.equal(await value('tern_messages_received_total', { source: 'api' }), before.api + 1);
  assert.equal(await value('tern_deliveries_total', { transport: 'maildir', result: 'delivered' }), before.delivered + 1);
  assert.equal(await value('tern_deliveries_total', { transport: 'mx', result: 'deferred' }), before.deferred + 1);
  assert.equal(await value('tern_deliveries_total', { transport: 'mx', result: 'bounced' }), before.bounced + 1);
  assert.equal(await value('tern_delivery_duration_seconds_count', { transport: 'maildir' }), before.count + 1);
  assert.equal(await value('tern_delivery_duration_seconds_sum', { transport: 'maildir' }), before.sum + 2);
  assert.equal(await value('tern_delivery_duration_seconds_bucket', { transport: 'maildir', le: '1' }), before.le1, '2 s is above the 1 s bucket');
  assert.equal(await value('tern_delivery_duration_seconds_bucket', { transport: 'maildir', le: '2.5' }), before.le2 + 1);
});

test('events: every transport and result series exists before its first event; a clock stepped back counts 0 s', async () => {
  const text = await registry.metrics();
  for (const transport of TRANSPORTS) {
    for (const result of ['delivered', 'deferred', 'bounced']) assert.match(text, new RegExp(`^tern_deliveries_total\\{transport="${transport}",result="${result}"\\} \\d+$`, 'm'));
  }
  for (const source of ['smtp', 'submission', 'api', 'bounce']) assert.match(text, new RegExp(`^tern_messages_received_total\\{source="${source}"\\} \\d+$`, 'm'));

  const events = new EventStream();
  const unsubscribe = events.subscribe(metricsSubscriber(() => 0));
  const before = await value('tern_delivery_duration_seconds_bucket', { transport: 'discard', le: '0.01' });
  const sum = await value('tern_delivery_duration_seconds_sum', { transport: 'discard' });
  events.emit('delivered', message(1, { receivedAt: 5000 }), 0, 1, ok, 'discard');
  unsubscribe();
  assert.equal(await value('tern_delivery_duration_seconds_bucket', { transport: 'discard', le: '0.01' }), before + 1);
  assert.equal(await value('tern_delivery_duration_seconds_sum', { transport: 'discard' }), sum);
});

test('queue states: every message in exactly one of active, deferred, held', () => {
  assert.deepEqual(queueStates({ total: 10, waiting: 6, held: 1 }), { active: 3, deferred: 6, held: 1 });
  assert.deepEqual(queueStates({ total: 0, waiting: 0, held: 0 }), { active: 0, deferred: 0, held: 0 });
});

test('the queue gauge reads the scheduler\'s O(1) counts at scrape: a deferred message, then held, then released and deleted', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-metrics-queue-'));
  const spool = new Spool({ dir, fsync: false });
  spool.init();
  const scheduler = new Scheduler({
    spool,
    router: router({ maildir: perRecipient('maildir', () => tempfail('mailbox busy')) }),
    retrySchedule: [60_000],
    maxLifetime: 86_400_000,
    log: silentLogger,
  });
  const unwatch = watchQueue(scheduler);
  try {
    const base = {
      active: await value('tern_queue_messages', { state: 'active' }),
      deferred: await value('tern_queue_messages', { state: 'deferred' }),
      held: await value('tern_queue_messages', { state: 'held' }),
    };
    const now = async () => ({
      active: (await value('tern_queue_messages', { state: 'active' })) - base.active,
      deferred: (await value('tern_queue_messages', { state: 'deferred' })) - base.deferred,
      held: (await value('tern_queue_messages', { state: 'held' })) - base.held,
    });
    const env: Envelope = {
      id: spool.newId(),
      sender: 's@x.test',
      receivedAt: Date.now(),
      smtputf8: false,
      recipients: [{ address: 'bob@tern.test', original: 'bob@tern.test', mailbox: { domain: 'tern.test', localPart: 'bob' } }],
    };
    const w = spool.create(env);
    w.write(Buffer.from('Subject: t\r\n\r\nbody\r\n'));
    scheduler.add(await w.commit());
    assert.deepEqual(await now(), { active: 1, deferred: 0, held: 0 }, 'in its first round');
    await scheduler.idle();
    assert.deepEqual(await now(), { active: 0, deferred: 1, held: 0 });
    assert.equal(await scheduler.hold(env.id), true);
    assert.equal(await scheduler.hold(env.id), true, 'a second hold changes nothing');
    assert.deepEqual(await now(), { active: 0, deferred: 0, held: 1 });
    await scheduler.release(env.id);
    await scheduler.idle();
    assert.deepEqual(await now(), { active: 0, deferred: 1, held: 0 });
    await scheduler.hold(env.id);
    await scheduler.delete(env.id);
    assert.deepEqual(await now(), { active: 0, deferred: 0, held: 0 }, 'a deleted held message leaves the count');
    assert.deepEqual(scheduler.counts, { total: 0, waiting: 0, held: 0 });
  } finally {
    unwatch();
    await scheduler.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('TLS sessions by direction and version; anything unexpected is "other"', async () => {
  const v13 = await value('tern_tls_sessions_total', { direction: 'inbound', version: 'TLSv1.3' });
  const other = await value('tern_tls_sessions_total', { direction: 'outbound', version: 'other' });
  countTlsSession('inbound', 'TLSv1.3');
  countTlsSession('outbound', 'TLSv9');
  countTlsSession('outbound', null);
  assert.equal(await value('tern_tls_sessions_total', { direction: 'inbound', version: 'TLSv1.3' }), v13 + 1);
  assert.equal(await value('tern_tls_sessions_total', { direction: 'outbound', version: 'other' }), other + 2);
  assert.equal(await value('tern_tls_sessions_total', { direction: 'outbound', version: 'TLSv9' }), 0, 'no series for an unknown version');
});

test('the webhook counter and the suppression gauge others bump', async () => {
  const delivered = await value('tern_webhook_deliveries_total', { result: 'delivered' });
  countWebhookDelivery('delivered');
  assert.equal(await value('tern_webhook_deliveries_total', { result: 'delivered' }), delivered + 1);
  const before = await value('tern_suppressions');
  const unwatch = watchSuppressions(() => 7);
  assert.equal(await value('tern_suppressions'), before + 7);
  unwatch();
  assert.equal(await value('tern_suppressions'), before);
});
