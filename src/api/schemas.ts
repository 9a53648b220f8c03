// The route schemas: Fastify validates every request against them, and the
// OpenAPI document (openapi.ts) is assembled from the very same objects, so
// the two cannot drift. JSON Schema 2020-12-compatible subset (OpenAPI 3.1).

import { BOUNCE_CLASSES } from '../events/bounce-class.ts';

/** Tags per message. */
export const MAX_TAGS = 20;
/** Messages per batch (the contract). */
export const MAX_BATCH = 500;

const address = { type: 'string', minLength: 3, maxLength: 256, description: 'local@domain' } as const;

/** Event types (src/events/events.ts). */
export const EVENT_TYPES = ['queued', 'delivered', 'deferred', 'bounced', 'expired', 'suppressed', 'complained', 'delayed'] as const;

const reply = {
  type: ['object', 'null'],
  properties: { code: { type: 'integer' }, enhanced: { type: ['string', 'null'] }, text: { type: 'string' } },
} as const;

export const eventSchema = {
  type: 'object',
  properties: {
    id: { type: 'string', description: 'Event id; ids sort by time and serve as the paging cursor' },
    type: { type: 'string', enum: EVENT_TYPES },
    timestamp: { type: 'string', format: 'date-time' },
    queueId: { type: 'string' },
    recipient: { type: 'string' },
    data: {
      type: 'object',
      properties: {
        attempt: { type: ['integer', 'null'] },
        relay: { type: ['object', 'null'], properties: { host: { type: 'string' }, ip: { type: 'string' }, port: { type: 'integer' } } },
        tls: {
          type: ['object', 'null'],
          description: 'TLS of the attempt; null in clear',
          properties: {
            version: { type: 'string' },
            cipher: { type: 'string' },
            verified: { type: 'boolean', description: 'The certificate verified (chain and name), whether or not that was required (RFC 7435)' },
            policy: { type: 'string', enum: ['dane', 'mta-sts', 'mta-sts-testing'], description: 'The recipient domain\'s policy that judged the session (RFC 7672, RFC 8461); absent for opportunistic TLS' },
          },
        },
        reply,
        bounceClass: { type: ['string', 'null'], enum: [...BOUNCE_CLASSES, null], description: 'Why a recipient failed (deferred, bounced, expired): see the README\'s bounce class table' },
        source: { type: 'string', enum: ['smtp', 'submission', 'api', 'bounce'] },
        tags: { type: ['object', 'null'], additionalProperties: { type: 'string' } },
        transport: { type: ['string', 'null'] },
      },
    },
  },
} as const;

export const problemSchema = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    status: { type: 'integer' },
    title: { type: 'string' },
    detail: { type: 'string' },
    errors: { type: 'array', items: { type: 'object', properties: { path: { type: 'string' }, message: { type: 'string' } } } },
  },
} as const;

/** A recipient or sender in the built form: an address, or a display name with it. */
const mailbox = {
  oneOf: [address, { type: 'object', additionalProperties: false, required: ['address'], properties: { name: { type: 'string', maxLength: 256, pattern: '^[^\\r\\n]*$' }, address } }],
} as const;

const addressList = (what: string) => ({ type: 'array', maxItems: 1000, items: mailbox, description: what }) as const;

/**
 * POST /v1/messages, either form in one schema (so that a typo is reported
 * once, by name, rather than once per alternative): raw (`from`, `to`,
 * `raw`) or built (everything else, composed with nodemailer). send.ts
 * refuses a mix.
 */
export const sendBody = {
  type: 'object',
  additionalProperties: false,
  required: ['from'],
  properties: {
    from: { ...mailbox, description: 'Raw form: the envelope sender. Built form: the From: field and the envelope sender. Must be covered by the key\'s send-as' },
    to: addressList('The recipients (raw form: the envelope recipients, addresses only)'),
    cc: addressList('Built form: Cc recipients'),
    bcc: addressList('Built form: Bcc recipients (envelope only; no Bcc: field is written)'),
    replyTo: { ...mailbox, description: 'Built form: Reply-To' },
    subject: { type: 'string', maxLength: 998, pattern: '^[^\\r\\n]*$' },
    text: { type: 'string' },
    html: { type: 'string' },
    headers: {
      type: 'object',
      maxProperties: 100,
      description: 'Built form: extra header fields; names are RFC 5322 field names, values have no CR or LF',
      propertyNames: { pattern: '^[!-9;-~]{1,76}$' },
      additionalProperties: { type: 'string', maxLength: 998, pattern: '^[^\\r\\n]*$' },
    },
    attachments: {
      type: 'array',
      maxItems: 100,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['content'],
        properties: {
          filename: { type: 'string', maxLength: 255, pattern: '^[^\\r\\n]*$' },
          contentType: { type: 'string', maxLength: 255, pattern: '^[!-~]+/[!-~]+$' },
          content: { type: 'string', pattern: '^[A-Za-z0-9+/]*={0,2}$', description: 'base64' },
          contentId: { type: 'string', maxLength: 255, pattern: '^[!-~]+$', description: 'For inline images: <img src="cid:ID">' },
        },
      },
    },
    raw: { type: 'string', minLength: 1, description: 'Raw form: the RFC 5322 message; bare LF line ends are turned into CRLF' },
    tags: {
      type: 'object',
      maxProperties: MAX_TAGS,
      description: `Either form: your labels, kept with the message and carried in every event's data.tags (metadata only, never written into the message). At most ${MAX_TAGS}; names 1-64 of A-Z a-z 0-9 _ . : -; values up to 256 characters without CR or LF`,
      propertyNames: { pattern: '^[A-Za-z0-9_.:-]{1,64}$' },
      additionalProperties: { type: 'string', maxLength: 256, pattern: '^[^\\r\\n]*$' },
    },
  },
} as const;

export const sendResponse = {
  type: 'object',
  properties: {
    id: { type: 'string', description: 'The queue id' },
    messageId: { type: 'string', description: 'The Message-ID header field' },
    recipients: { type: 'array', items: { type: 'object', properties: { address: { type: 'string' }, status: { type: 'string', enum: ['queued', 'suppressed'] } } } },
  },
} as const;

export const messageParams = {
  type: 'object',
  additionalProperties: false,
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' } },
} as const;

export const messageResponse = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    messageId: { type: ['string', 'null'], description: 'The Message-ID field, for mail from every source (null: the message had none)' },
    subject: { type: ['string', 'null'], description: 'The Subject field as received, unfolded (RFC 2047 words left encoded), up to 1 KiB' },
    from: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    tags: { type: ['object', 'null'], additionalProperties: { type: 'string' } },
    recipients: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          address: { type: 'string' },
          status: { type: 'string', enum: ['queued', 'deferred', 'delivered', 'bounced', 'expired', 'suppressed'] },
          attempts: { type: 'integer' },
          lastReply: reply,
        },
      },
    },
    events: { type: 'array', items: eventSchema },
  },
} as const;

export const MAX_EVENTS_PAGE = 1000;

export const eventsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    after: { type: 'string', maxLength: 64, description: 'The `next` of the previous page; absent: from the oldest event kept' },
    type: { type: 'string', enum: EVENT_TYPES },
    recipient: { type: 'string', maxLength: 256 },
    limit: { type: 'integer', minimum: 1, maximum: MAX_EVENTS_PAGE, default: 100 },
  },
} as const;

export const eventsResponse = {
  type: 'object',
  properties: {
    events: { type: 'array', items: eventSchema },
    next: { type: 'string', description: 'The cursor for the next page; on the last page, the one to poll with later (never null)' },
  },
} as const;

/** POST /v1/messages/batch: the messages are validated one by one (server.ts), so one bad message fails only itself. */
export const batchBody = {
  type: 'object',
  additionalProperties: false,
  required: ['messages'],
  properties: {
    messages: { type: 'array', minItems: 1, maxItems: MAX_BATCH, items: sendBody, description: `At most ${MAX_BATCH} messages, each as the body of POST /v1/messages` },
  },
} as const;

/** What Fastify checks of a batch before the handler: its shape; each message gets sendBody in the handler. */
export const batchEnvelope = {
  ...batchBody,
  properties: { messages: { ...batchBody.properties.messages, items: { type: 'object' } } },
} as const;

export const batchResponse = {
  type: 'object',
  properties: {
    results: {
      type: 'array',
      description: 'One per message, in order: status 202 with the fields of a single send, or a 4xx/5xx status with a problem whose paths lead with /body/messages/N',
      items: {
        type: 'object',
        properties: {
          status: { type: 'integer' },
          id: { type: 'string' },
          messageId: { type: 'string' },
          recipients: sendResponse.properties.recipients,
          error: problemSchema,
        },
      },
    },
  },
} as const;

/** The Idempotency-Key request header of both sends. */
export const idempotencyHeaders = {
  type: 'object',
  properties: {
    'idempotency-key': {
      type: 'string',
      minLength: 1,
      maxLength: 255,
      pattern: '^[!-~]+$',
      description: 'Same key and same body within 24 h: the first response again, nothing new queued. Same key, other body: 422. While the first is in flight: 409. Scoped to the API key',
    },
  },
} as const;
