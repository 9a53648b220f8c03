// GET /v1/suppressions, GET|PUT|DELETE /v1/suppressions/{address}
// (CONTRACT.md, "Suppressions"). Any valid key may read the list and change
// it: the list is the server's, not a sender's (a complaint about one
// sender's mail is a reason not to mail that person from any of them).
// Changes apply to the next delivery attempt at once (src/suppress/list.ts).

import type { Route } from './server.ts';
import { problemSchema } from './schemas.ts';
import { fieldError, ApiError } from './problem.ts';
import { formatAddress, parseMailbox } from '../smtp/address.ts';
import { SmtpError } from '../smtp/reply.ts';
import type { SuppressionRecord } from '../store/suppressions.ts';
import type { SuppressionList } from '../suppress/list.ts';

/** What the suppression routes need: the server's one list. */
export interface SuppressionApi {
  list: Pick<SuppressionList, 'get' | 'page' | 'put' | 'remove'>;
}

export const MAX_SUPPRESSIONS_PAGE = 1000;

const suppressionSchema = {
  type: 'object',
  properties: {
    address: { type: 'string', description: 'local@domain, lower case: addresses match without regard to case' },
    reason: { type: 'string', description: "'hard-bounce', 'complaint', or the reason given to PUT" },
    source: { type: 'string', enum: ['api', 'cli', 'bounce', 'complaint'], description: 'Who added it: the API (or the dashboard), `tern suppression add`, a hard bounce (5.1.x, 5.2.1), an ARF complaint (RFC 5965)' },
    detail: { type: ['string', 'null'], description: "What the entry rests on: the bounce's reply and relay, the complaint's Feedback-Type and reporter; null from the API" },
    createdAt: { type: 'string', format: 'date-time' },
  },
} as const;

const addressParams = {
  type: 'object',
  additionalProperties: false,
  required: ['address'],
  properties: { address: { type: 'string', minLength: 3, maxLength: 256, description: 'local@domain (the @ may be written %40)' } },
} as const;

const putBody = {
  type: 'object',
  additionalProperties: false,
  required: ['reason'],
  properties: { reason: { type: 'string', minLength: 1, maxLength: 256, pattern: '^[^\\u0000-\\u001f\\u007f]*$', description: 'Why: your words, up to 256 characters, no control characters' } },
} as const;

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    after: { type: 'string', maxLength: 256, description: 'The `next` of the previous page; absent: from the first address' },
    limit: { type: 'integer', minimum: 1, maximum: MAX_SUPPRESSIONS_PAGE, default: 100 },
  },
} as const;

const listResponse = {
  type: 'object',
  properties: {
    suppressions: { type: 'array', items: suppressionSchema },
    next: { type: 'string', description: 'The cursor for the next page (the last address); on the last page, the one to poll with later (never null)' },
  },
} as const;

export function suppressionRoutes(api: SuppressionApi): Route[] {
  const { list } = api;
  const errors = { 400: problemSchema, 401: problemSchema, 404: problemSchema };
  return [
    {
      method: 'GET',
      url: '/v1/suppressions',
      summary: 'The suppression list, sorted by address, after a cursor',
      auth: true,
      schema: { querystring: listQuery, response: { 200: listResponse, 400: problemSchema, 401: problemSchema } },
      handler: async (req) => {
        const q = req.query as { after?: string; limit?: number };
        const after = (q.after ?? '').toLowerCase();
        const page = list.page(after, q.limit ?? 100);
        return { suppressions: page.map(view), next: page.at(-1)?.address ?? after };
      },
    },
    {
      method: 'GET',
      url: '/v1/suppressions/:address',
      summary: 'One suppressed address',
      auth: true,
      schema: { params: addressParams, response: { 200: suppressionSchema, ...errors } },
      handler: async (req) => {
        const address = addressParam(req.params);
        const found = list.get(address);
        if (!found) throw new ApiError(404, `<${address}> is not on the suppression list`);
        return view(found);
      },
    },
    {
      method: 'PUT',
      url: '/v1/suppressions/:address',
      summary: 'Suppress an address (201), or replace its entry (200); mail to it stops with the next delivery attempt',
      auth: true,
      schema: { params: addressParams, body: putBody, response: { 200: suppressionSchema, 201: suppressionSchema, 400: problemSchema, 401: problemSchema } },
      handler: async (req, _key, reply) => {
        const address = addressParam(req.params);
        const { reason } = req.body as { reason: string };
        const { record, created } = list.put(address, reason, 'api');
        return reply.code(created ? 201 : 200).send(view(record));
      },
    },
    {
      method: 'DELETE',
      url: '/v1/suppressions/:address',
      summary: 'Lift a suppression: 200 with the entry removed; mail to the address flows with the next delivery attempt',
      auth: true,
      schema: { params: addressParams, response: { 200: suppressionSchema, ...errors } },
      handler: async (req) => {
        const address = addressParam(req.params);
        const found = list.get(address);
        if (!found || !list.remove(address)) throw new ApiError(404, `<${address}> is not on the suppression list`);
        return view(found);
      },
    },
  ];
}

/** The path's address, as RFC 5321 §4.1.2 reads a mailbox, in the list's form (lower case); 400 naming /params/address otherwise. */
function addressParam(params: unknown): string {
  const raw = (params as { address: string }).address;
  try {
    return formatAddress(parseMailbox(raw)).toLowerCase();
  } catch (e) {
    throw fieldError(400, '/params/address', `not an address (local@domain): ${e instanceof SmtpError ? e.text : 'bad syntax'}`);
  }
}

function view(r: SuppressionRecord) {
  return { address: r.address, reason: r.reason, source: r.source, detail: r.detail, createdAt: new Date(r.createdAt).toISOString() };
}
