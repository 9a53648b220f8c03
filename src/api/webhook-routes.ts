// POST/GET /v1/webhooks, DELETE /v1/webhooks/{id} (CONTRACT.md, "Webhooks";
// docs/webhooks.md). A key manages its own webhooks, and they get the
// events that key may read; an --admin key's get every event, and an admin
// key lists and deletes every key's webhooks (operators clean up after a
// tenant). Another key's webhook is 404, not 403, as for messages: ids
// cannot be probed.

import type { EventType } from '../events/events.ts';
import type { ApiKeyRecord } from '../store/store.ts';
import type { WebhookRecord } from '../store/webhooks.ts';
import type { WebhookView } from '../webhooks/webhooks.ts';
import { ApiError, fieldError } from './problem.ts';
import { EVENT_TYPES, problemSchema } from './schemas.ts';
import type { Route } from './server.ts';

/** What the webhook routes need (src/webhooks/webhooks.ts is the one implementation). */
export interface WebhookApi {
  /** Registers a webhook of `owner`; `events` null takes every type. The record holds the new secret. */
  create(owner: ApiKeyRecord, url: string, events: EventType[] | null): WebhookRecord;
  /** How many webhooks `owner` has (enabled or not). */
  countOwn(owner: ApiKeyRecord): number;
  /** The viewer's webhooks, or every key's for an admin key. */
  list(viewer: ApiKeyRecord): WebhookView[];
  /** False when there is no such webhook the viewer may delete. */
  remove(viewer: ApiKeyRecord, id: string): boolean;
}

/**
 * Webhooks per key. Each one is a row per matching event in the outbox and
 * a POST per row, so the number bounds what one key can make the server do
 * per message.
 */
export const MAX_WEBHOOKS_PER_KEY = 10;
/** Longer URLs are more likely a mistake than an endpoint. */
const MAX_URL_LENGTH = 2048;

const eventTypes = {
  type: ['array', 'null'],
  items: { type: 'string', enum: EVENT_TYPES },
  description: 'The event types the webhook gets; null (or absent when creating): every type, including types added later',
} as const;

const createBody = {
  type: 'object',
  additionalProperties: false,
  required: ['url'],
  properties: {
    url: { type: 'string', minLength: 1, maxLength: MAX_URL_LENGTH, description: 'An absolute http: or https: URL; any host, loopback and private networks included' },
    events: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: EVENT_TYPES }, description: 'The event types to POST; absent: every type, including types added later' },
  },
} as const;

const createResponse = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    url: { type: 'string' },
    events: eventTypes,
    secret: { type: 'string', description: 'whsec_ and the base64 of the HMAC key. Shown only in this answer: store it now' },
    createdAt: { type: 'string', format: 'date-time' },
  },
} as const;

const delivery = {
  type: 'object',
  properties: {
    eventId: { type: 'string', description: 'The event id, sent as webhook-id' },
    attempt: { type: 'integer', description: '1 for the first POST of this event' },
    at: { type: 'string', format: 'date-time', description: 'When the attempt started' },
    status: { type: ['integer', 'null'], description: 'The HTTP status of the answer; null when there was none' },
    error: { type: ['string', 'null'], description: 'Why there was no answer (connection refused, timeout)' },
    durationMs: { type: 'integer' },
    outcome: { type: 'string', enum: ['delivered', 'retrying', 'failed', 'disabled'], description: 'delivered (2xx), retrying (tried again later), failed (given up after webhooks.retryFor), disabled (410)' },
  },
} as const;

const webhookView = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    url: { type: 'string' },
    events: eventTypes,
    createdAt: { type: 'string', format: 'date-time' },
    owner: { type: ['string', 'null'], description: 'The name of the API key that made it; null once that key is revoked' },
    state: { type: 'string', enum: ['enabled', 'disabled'] },
    disabledAt: { type: ['string', 'null'], format: 'date-time' },
    disabledReason: { type: ['string', 'null'] },
    pending: { type: 'integer', description: 'Events waiting to be delivered (counted up to 10000)' },
    deliveries: { type: 'array', items: delivery, description: 'The last attempts, newest first' },
  },
} as const;

const listResponse = {
  type: 'object',
  properties: { webhooks: { type: 'array', items: webhookView, description: 'Oldest first' } },
} as const;

const webhookParams = {
  type: 'object',
  additionalProperties: false,
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' } },
} as const;

/** Why `url` cannot be a webhook's, or undefined. Any host is fine (CONTRACT.md): keys are handed out by the operator. */
export function webhookUrlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'is not an absolute URL';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return 'must be an http: or https: URL';
  if (u.hostname === '') return 'has no host';
  if (u.hash !== '') return 'must not have a #fragment (it is never sent)';
  return undefined;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function viewOf(w: WebhookView) {
  const revoked = w.ownerName === null;
  return {
    id: w.id,
    url: w.url,
    events: w.events,
    createdAt: iso(w.createdAt),
    owner: w.ownerName,
    state: w.disabledAt !== null || revoked ? 'disabled' : 'enabled',
    disabledAt: iso(w.disabledAt),
    disabledReason: w.disabledReason ?? (revoked ? 'the API key that made it was revoked' : null),
    pending: w.pending,
    deliveries: w.deliveries.map((d) => ({ eventId: d.eventId, attempt: d.attempt, at: iso(d.at), status: d.status, error: d.error, durationMs: d.durationMs, outcome: d.outcome })),
  };
}

export function webhookRoutes(api: WebhookApi): Route[] {
  const errors = { 400: problemSchema, 401: problemSchema };
  return [
    {
      method: 'POST',
      url: '/v1/webhooks',
      summary: `Register a webhook for this key: each event the key may read (of the listed types) is POSTed with Standard Webhooks headers. 201 with the signing secret, shown only here. At most ${MAX_WEBHOOKS_PER_KEY} per key`,
      auth: true,
      schema: { body: createBody, response: { 201: createResponse, ...errors, 409: problemSchema } },
      handler: async (req, key, reply) => {
        const body = req.body as { url: string; events?: EventType[] };
        const problem = webhookUrlProblem(body.url);
        if (problem) throw fieldError(400, '/body/url', problem);
        if (api.countOwn(key!) >= MAX_WEBHOOKS_PER_KEY) throw new ApiError(409, `This key has ${MAX_WEBHOOKS_PER_KEY} webhooks already; delete one first`);
        const w = api.create(key!, new URL(body.url).href, body.events ?? null);
        return reply.code(201).send({ id: w.id, url: w.url, events: w.events, secret: w.secret, createdAt: iso(w.createdAt) });
      },
    },
    {
      method: 'GET',
      url: '/v1/webhooks',
      summary: 'This key\'s webhooks (an admin key: every key\'s), each with its state and its last attempts; never the secret',
      auth: true,
      schema: { response: { 200: listResponse, ...errors } },
      handler: async (_req, key) => ({ webhooks: api.list(key!).map(viewOf) }),
    },
    {
      method: 'DELETE',
      url: '/v1/webhooks/:id',
      summary: 'Delete a webhook of this key (an admin key: any); events not yet delivered to it are dropped',
      auth: true,
      schema: { params: webhookParams, response: { 204: { type: 'null', description: 'Deleted' }, ...errors, 404: problemSchema } },
      handler: async (req, key, reply) => {
        const { id } = req.params as { id: string };
        if (!api.remove(key!, id)) throw new ApiError(404, `No webhook ${id}`);
        return reply.code(204).send();
      },
    },
  ];
}
