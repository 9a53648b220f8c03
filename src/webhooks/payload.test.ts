// A webhook's payload carries the event exactly as GET /v1/events shows it:
// the same projection through eventSchema that the route's serializer
// (fast-json-stringify) makes, checked here against that serializer itself.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import type { MessageEvent } from '../events/events.ts';
import { eventSchema } from '../api/schemas.ts';
import { publicEvent, webhookPayload } from './payload.ts';

const delivered = {
  id: '01m97mm9fn000025k36d',
  type: 'delivered',
  timestamp: '2026-12-07T06:56:29.267Z',
  queueId: '0MXCU1BNJ010KHA6',
  recipient: 'bob@example.test',
  data: {
    attempt: 1,
    relay: { host: 'mx.example.test', ip: '192.0.2.25', port: 25 },
    tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true, peer: 'mx.example.test', policy: 'mta-sts' },
    reply: { code: 250, enhanced: '2.0.0', text: 'ok' },
    bounceClass: null,
    source: 'api',
    tags: { order: '42' },
    transport: 'mx',
  },
} as unknown as MessageEvent;

test('tls keeps version, cipher, verified and policy (the README promises them), and drops the certificate name', () => {
  const shown = publicEvent(delivered) as { data: { tls: Record<string, unknown> } };
  assert.deepEqual(shown.data.tls, { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true, policy: 'mta-sts' });
  const opportunistic = { ...delivered, data: { ...delivered.data, tls: { version: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', verified: false } } } as MessageEvent;
  assert.deepEqual((publicEvent(opportunistic) as { data: { tls: unknown } }).data.tls, { version: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', verified: false });
});

test('the payload\'s data is what a Fastify route with eventSchema as its response schema writes for the same event', async () => {
  const app = Fastify();
  app.get('/event', { schema: { response: { 200: eventSchema } } }, async () => delivered);
  const res = await app.inject({ method: 'GET', url: '/event' });
  await app.close();
  const payload = JSON.parse(webhookPayload(delivered)) as { type: string; timestamp: string; data: unknown };
  assert.equal(payload.type, 'delivered');
  assert.equal(payload.timestamp, delivered.timestamp);
  assert.deepEqual(payload.data, res.json());
});

test('the payload made from the event\'s stored JSON is byte for byte the one made from the event itself (a claimed row has no stored copy)', () => {
  const events: MessageEvent[] = [
    delivered,
    // Fields in another order, optional ones absent or undefined, tags whose names look like numbers.
    { recipient: 'x@y.test', queueId: 'Q', id: 'e2', timestamp: delivered.timestamp, type: 'bounced', data: { ...delivered.data, tls: undefined, relay: null, bounceClass: 'invalid-recipient', tags: { '10': 'b', '2': 'a', z: 'c' } } } as unknown as MessageEvent,
    { ...delivered, id: 'e3', type: 'queued', data: { attempt: null, source: 'smtp', tags: null, transport: null, reply: undefined } } as unknown as MessageEvent,
  ];
  for (const e of events) assert.equal(webhookPayload(JSON.parse(JSON.stringify(e)) as MessageEvent), webhookPayload(e), e.id);
});
