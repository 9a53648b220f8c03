// The `http` listener: the JSON API under /v1/ (CONTRACT.md, "HTTP: API,
// dashboard, metrics"), on Fastify. Every route is one entry of ROUTES: its
// schemas validate the request (unknown body fields refused, not dropped)
// and make the OpenAPI document served at /v1/openapi.json. New mail goes
// through intake like SMTP submission's (docs/architecture.md: HTTP must not
// bypass intake); the events come from the store the events subscriber fills.

import https from 'node:https';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifySchema } from 'fastify';
import type { ListenerConfig } from '../config/types.ts';
import type { Logger } from '../util/log.ts';
import type { ApiKeyRecord, EventScope, Store } from '../store/store.ts';
import { ApiKeyCache } from './keys.ts';
import { readJsonBody } from './json-body.ts';
import { ApiError, problem, type FieldError, type Problem } from './problem.ts';
import {
  batchBody,
  batchEnvelope,
  batchResponse,
  eventsQuery,
  eventsResponse,
  idempotencyHeaders,
  messageParams,
  messageResponse,
  problemSchema,
  sendBody,
  sendResponse,
  MAX_EVENTS_PAGE,
} from './schemas.ts';
import { Idempotency, type Outcome } from './idempotency.ts';
import { buildOpenApi } from './openapi.ts';
import { exposition } from '../metrics/registry.ts';
import { SERVER_TLS_OPTIONS } from '../server/tls.ts';
import { messageView } from './messages.ts';
import { RateLimited, type Sender, type SendBody } from './send.ts';
import { webhookRoutes, type WebhookApi } from './webhook-routes.ts';
import { suppressionRoutes, type SuppressionApi } from './suppression-routes.ts';

export interface ApiDeps {
  store: Store;
  sender: Sender;
  log: Logger;
  /** The server certificate, for `tls: true`: the PEM at start (clients without SNI) and the current context (SNI, follows reloads). */
  tls: () => { cert: string; key: string; context: import('node:tls').SecureContext };
  /** The largest message accepted (limits.messageSize): the body limit follows from it. */
  messageSize: number;
  /**
   * Writes the events still gathering for the store (EventRecorder.drain):
   * reads call it first, so a client that got its 202 finds its message at
   * once although events are written in batches.
   */
  flushEvents: () => Promise<void>;
  /** The webhook routes' own dependencies (webhook-routes.ts); absent: none are served. */
  webhooks?: WebhookApi | undefined;
  /** The suppression routes' own dependencies (suppression-routes.ts); absent: none are served. */
  suppressions?: SuppressionApi | undefined;
  /** http.metricsFrom: whether a client address may read /metrics without a key. */
  metricsFrom: (ip: string) => boolean;
  /**
   * Whatever else the listener serves outside /v1/ (the dashboard at / and
   * its JSON under /ui/: src/dashboard/): registered on the same Fastify
   * instance after the API's routes, with their own authentication.
   */
  mount?: ((app: FastifyInstance) => void) | undefined;
  /** The process's key cache, shared with the dashboard (which clears it when it makes or revokes a key); absent: this server's own. */
  apiKeys?: ApiKeyCache | undefined;
}

/** One API route: everything Fastify and the OpenAPI document need. */
export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Fastify syntax (`:id`); openapi.ts writes `{id}`. */
  url: string;
  summary: string;
  /** Needs a key (everything but the OpenAPI document). */
  auth: boolean;
  schema: { body?: object; querystring?: object; params?: object; headers?: object; response: Record<number, object> };
  /** What Fastify validates the body against, when it checks less than `schema.body` (the batch: each message is checked on its own). */
  validateBody?: object;
  handler: (req: FastifyRequest, key: ApiKeyRecord | null, reply: FastifyReply) => Promise<unknown>;
}

const PROBLEM = 'application/problem+json';

/** The request property the onRequest hook puts the caller's key in (declared with decorateRequest, so every request has the same shape). */
const API_KEY = 'ternApiKey';
type KeyedRequest = FastifyRequest & { [API_KEY]: ApiKeyRecord | null };

function keyOf(req: FastifyRequest): ApiKeyRecord | null {
  return (req as KeyedRequest)[API_KEY];
}

export class ApiServer {
  readonly config: ListenerConfig;
  readonly #deps: ApiDeps;
  readonly #app: FastifyInstance;
  #keyCache: ApiKeyCache | undefined;
  readonly routes: Route[];
  readonly #idempotency: Idempotency;
  /** Bodies are validated exactly as sent: no coercion ("to": "a@b" is not a list), no silent removal of unknown fields. */
  readonly #strict = new Ajv({ allErrors: true, strict: false, coerceTypes: false, removeAdditional: false, useDefaults: false });
  readonly #validateMessage: ValidateFunction;
  #expiryTimer: NodeJS.Timeout | undefined;
  #boundPort: number;

  constructor(config: ListenerConfig, deps: ApiDeps) {
    this.config = config;
    this.#deps = deps;
    this.#idempotency = new Idempotency(deps.store, deps.log);
    this.#validateMessage = this.#strict.compile(sendBody);
    this.#boundPort = config.port;
    this.routes = this.#routes();
    this.#app = this.#build();
  }

  get port(): number {
    return this.#boundPort;
  }

  async listen(): Promise<void> {
    await this.#app.listen({ host: this.config.address, port: this.config.port });
    const addr = this.#app.server.address();
    if (addr && typeof addr === 'object') this.#boundPort = addr.port;
    this.#expiryTimer = setInterval(() => void this.#idempotency.expire(), IDEMPOTENCY_EXPIRY_INTERVAL_MS);
    this.#expiryTimer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#expiryTimer);
    this.#idempotency.close();
    await this.#app.close();
  }

  /** For tests: the OpenAPI document as served. */
  openApi(): object {
    return buildOpenApi(this.routes);
  }

  #build(): FastifyInstance {
    const { tls } = this.#deps;
    // A raw message travels as a JSON string: room for its escaping, on top of the size limit that send.ts applies to the message itself.
    const bodyLimit = this.#deps.messageSize * 2 + 64 * 1024;
    const app = Fastify({
      logger: false,
      bodyLimit,
      // A path parameter may be a whole address (/v1/suppressions/{address}: up to 256 octets, percent-encoded up to three times that).
      routerOptions: { maxParamLength: 1024 },
      forceCloseConnections: true,
      return503OnClosing: true,
      ...(this.config.tls
        ? {
            https: (() => {
              const t = tls();
              // The SMTP listeners' offer (TLS 1.2 AEAD and 1.3): OpenSSL fixes the cipher list before SNI switches context, so it is set here too.
              const opts: https.ServerOptions = { cert: t.cert, key: t.key, ...SERVER_TLS_OPTIONS, SNICallback: (_name, cb) => cb(null, tls().context) };
              return opts;
            })(),
          }
        : {}),
    }) as unknown as FastifyInstance;
    app.decorateRequest(API_KEY, null);
    const strict = this.#strict;
    // Query strings and path parameters are text: numbers in them are coerced, defaults filled in.
    const lenient = new Ajv({ allErrors: true, strict: false, coerceTypes: true, removeAdditional: false, useDefaults: true });
    app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : lenient).compile(schema));
    app.setSchemaErrorFormatter((errors, dataVar) => {
      const e = new ApiError(400, `Invalid request ${dataVar}`, fieldErrorsOf(dataVar, errors as ErrorObject[]));
      e.message = `${e.errors!.map((f) => `${f.path}: ${f.message}`).join('; ')}`;
      return e;
    });
    app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
      if (err instanceof ApiError) {
        if (err instanceof RateLimited) reply.header('retry-after', String(err.retryAfter));
        return sendProblem(reply, err.status, err.message, err.errors);
      }
      const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      if (status >= 500) this.#deps.log.error('api request failed', { method: req.method, url: req.url, error: err });
      // Fastify's own refusals (bad JSON, too large, wrong media type) say clearly what was wrong; our bugs say nothing inside.
      return sendProblem(reply, status, status >= 500 ? 'Internal error; see the server log' : err.message);
    });
    // JSON is UTF-8 (RFC 8259 §8.1). Fastify's own parser would decode other
    // bytes to U+FFFD and carry on, so a message would go out with text the
    // client never sent: json-body.ts refuses them (and enforces the body
    // limit as the body streams in), then the text is parsed as Fastify does,
    // its prototype-poisoning guard included.
    const json = app.getDefaultJsonParser('error', 'error');
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', (req, payload, done) =>
      readJsonBody(payload, Number(req.headers['content-length']), bodyLimit, (text, parsed) => json(req, text, parsed), done),
    );
    app.setNotFoundHandler((req, reply) => sendProblem(reply, 404, `No route ${req.method} ${req.url.split('?')[0]}`));
    // Prometheus scrapes with no key from http.metricsFrom (loopback by
    // default); from anywhere else the metrics need an admin key, as they
    // show every sender's volume.
    app.get('/metrics', async (req, reply) => {
      if (!this.#deps.metricsFrom(req.socket.remoteAddress ?? '')) {
        this.#authenticate(req);
        if (!keyOf(req)?.admin) throw new ApiError(403, 'Metrics need an admin key from outside http.metricsFrom');
      }
      const { contentType, body } = await exposition();
      return reply.type(contentType).send(body);
    });
    this.#deps.mount?.(app);
    for (const route of this.routes) {
      app.route({
        method: route.method,
        url: route.url,
        schema: (route.validateBody ? { ...route.schema, body: route.validateBody } : route.schema) as FastifySchema,
        // A callback hook and a handler that returns the route's promise: no promise of their own per request.
        onRequest: route.auth
          ? (req, _reply, done) => {
              try {
                this.#authenticate(req);
              } catch (e) {
                done(e as Error);
                return;
              }
              done();
            }
          : undefined,
        handler: (req, reply) => route.handler(req, keyOf(req), reply),
      });
    }
    return app;
  }

  /** Runs a send under its Idempotency-Key, if it has one; `Idempotent-Replayed: true` marks a stored first response. */
  async #idempotent(req: FastifyRequest, key: ApiKeyRecord, reply: FastifyReply, send: () => Promise<Outcome>): Promise<FastifyReply> {
    const idemKey = req.headers['idempotency-key'];
    if (typeof idemKey !== 'string') {
      const out = await send();
      return reply.code(out.status).send(out.body);
    }
    const out = await this.#idempotency.run(key.hash, idemKey, req.routeOptions.url ?? req.url, req.body, send);
    if (out.replayed) reply.header('idempotent-replayed', 'true');
    return reply.code(out.status).send(out.body);
  }

  /** Each message of a batch on its own: validated against sendBody, then sent; a refusal is that message's result only. */
  async #batch(req: FastifyRequest, key: ApiKeyRecord): Promise<BatchResult[]> {
    const messages = (req.body as { messages: unknown[] }).messages;
    const results: BatchResult[] = new Array<BatchResult>(messages.length);
    let next = 0;
    const one = async (i: number): Promise<BatchResult> => {
      const at = `body/messages/${i}`;
      const m = messages[i];
      if (!this.#validateMessage(m)) {
        const errors = fieldErrorsOf(at, this.#validateMessage.errors ?? []);
        return { status: 400, error: problem(400, errors.map((f) => `${f.path}: ${f.message}`).join('; '), errors) };
      }
      try {
        return { status: 202, ...(await this.#deps.sender.send(m as SendBody, key, req.ip, this.config.tls === true)) };
      } catch (e) {
        if (!(e instanceof ApiError)) {
          this.#deps.log.error('api batch message failed', { index: i, error: e });
          return { status: 500, error: problem(500, 'Internal error; see the server log') };
        }
        // send.ts names paths as for a single send (/body/to/0): here they lead with the message's place in the batch.
        const rebase = (s: string): string => s.replace(/^\/body(?=\/|$)/, `/${at}`);
        return { status: e.status, error: problem(e.status, rebase(e.message), e.errors?.map((f) => ({ path: rebase(f.path), message: f.message }))) };
      }
    };
    const worker = async (): Promise<void> => {
      while (next < messages.length) {
        const i = next++;
        results[i] = await one(i);
      }
    };
    await Promise.all(Array.from({ length: Math.min(BATCH_CONCURRENCY, messages.length) }, worker));
    return results;
  }

  #authenticate(req: FastifyRequest): void {
    const header = req.headers.authorization;
    const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) throw new ApiError(401, 'An API key is required: Authorization: Bearer <key>');
    // The lookup is by the hash of the key, so its timing tells nothing about any stored key.
    this.#keyCache ??= this.#deps.apiKeys ?? new ApiKeyCache(this.#deps.store);
    const key = this.#keyCache.byKey(m[1]!);
    if (!key) throw new ApiError(401, 'Unknown or revoked API key');
    (req as KeyedRequest)[API_KEY] = key;
  }

  #routes(): Route[] {
    const { store, sender } = this.#deps;
    const errors = { 400: problemSchema, 401: problemSchema, 403: problemSchema, 404: problemSchema, 413: problemSchema };
    return [
      {
        method: 'GET',
        url: '/v1/openapi.json',
        summary: 'This API as an OpenAPI 3.1 document',
        auth: false,
        schema: { response: { 200: { type: 'object', additionalProperties: true } } },
        handler: async () => buildOpenApi(this.routes),
      },
      {
        method: 'POST',
        url: '/v1/messages',
        summary: 'Send a message (raw or built form): through the same intake as SMTP submission; 202 once it is durably queued',
        auth: true,
        schema: { body: sendBody, headers: idempotencyHeaders, response: { 202: sendResponse, ...errors, ...idempotencyErrors, 503: problemSchema } },
        handler: async (req, key, reply) =>
          this.#idempotent(req, key!, reply, async () => ({ status: 202, body: await sender.send(req.body as SendBody, key!, req.ip, this.config.tls === true) })),
      },
      {
        method: 'POST',
        url: '/v1/messages/batch',
        summary: `Send up to ${batchBody.properties.messages.maxItems} messages, each validated and sent on its own: 207 with one result per message, in order (202 and the send's fields, or a 4xx/5xx status and a problem)`,
        auth: true,
        schema: { body: batchBody, headers: idempotencyHeaders, response: { 207: batchResponse, ...errors, ...idempotencyErrors } },
        validateBody: batchEnvelope,
        handler: async (req, key, reply) => this.#idempotent(req, key!, reply, async () => ({ status: 207, body: { results: await this.#batch(req, key!) } })),
      },
      {
        method: 'GET',
        url: '/v1/messages/:id',
        summary: 'A message: its recipients\' state and its events, oldest first',
        auth: true,
        schema: { params: messageParams, response: { 200: messageResponse, ...errors } },
        handler: async (req, key) => {
          const { id } = req.params as { id: string };
          await this.#deps.flushEvents();
          const found = store.messageEvents(id, scopeOf(key!));
          // Another sender's message is not there at all for this key: 404, not 403, so ids cannot be probed.
          if (!found) throw new ApiError(404, `No message ${id}`);
          return messageView(found.message, found.events);
        },
      },
      {
        method: 'GET',
        url: '/v1/events',
        summary: 'Events, oldest first, after a cursor',
        auth: true,
        schema: { querystring: eventsQuery, response: { 200: eventsResponse, ...errors } },
        handler: async (req, key) => {
          const q = req.query as { after?: string; type?: string; recipient?: string; limit?: number };
          const after = q.after ?? '';
          await this.#deps.flushEvents();
          const events = store.queryEvents({ after, type: q.type, recipient: q.recipient, limit: Math.min(q.limit ?? 100, MAX_EVENTS_PAGE), scope: scopeOf(key!) });
          return { events, next: events.at(-1)?.id ?? after };
        },
      },
      ...(this.#deps.webhooks ? webhookRoutes(this.#deps.webhooks) : []),
      ...(this.#deps.suppressions ? suppressionRoutes(this.#deps.suppressions) : []),
    ];
  }
}

const idempotencyErrors = { 409: problemSchema, 422: problemSchema, 429: problemSchema };

/** Messages of one batch in intake at once: the spool's fsyncs overlap, and one batch cannot take every intake slot. */
const BATCH_CONCURRENCY = 8;
/** How often Idempotency-Key entries past their 24 h are looked for. */
const IDEMPOTENCY_EXPIRY_INTERVAL_MS = 60_000;

type BatchResult = { status: number; id?: string; messageId?: string; recipients?: unknown[]; error?: Problem };

export function scopeOf(key: ApiKeyRecord): EventScope {
  return key.admin ? { admin: true } : { admin: false, sendAs: key.sendAs };
}

function sendProblem(reply: FastifyReply, status: number, detail: string, errors?: FieldError[]): FastifyReply {
  return reply.code(status).type(PROBLEM).serializer(JSON.stringify).send(problem(status, detail, errors));
}

/**
 * Ajv's errors as fields. A bad name in a map (headers, tags) comes twice,
 * as the name's own error (which carries propertyName) and as the map's
 * propertyNames error: the first is kept, at the name's path.
 */
function fieldErrorsOf(part: string, errors: ErrorObject[]): FieldError[] {
  return errors.filter((e) => e.keyword !== 'propertyNames').map((e) => fieldErrorOf(part, e));
}

/** Ajv's error as {path, message}: the path a JSON Pointer led by the request part, and naming the offending field itself. */
function fieldErrorOf(part: string, e: ErrorObject): FieldError {
  const lead = part === 'querystring' ? '/query' : `/${part}`;
  const p = e.params as { additionalProperty?: string; missingProperty?: string };
  const escape = (s: string): string => s.replace(/~/g, '~0').replace(/\//g, '~1');
  if (e.keyword === 'additionalProperties' && p.additionalProperty !== undefined) {
    return { path: `${lead}${e.instancePath}/${escape(p.additionalProperty)}`, message: 'unknown field' };
  }
  if (e.propertyName !== undefined) {
    return { path: `${lead}${e.instancePath}/${escape(e.propertyName)}`, message: `invalid name: ${e.message ?? 'is invalid'}` };
  }
  if (e.keyword === 'required' && p.missingProperty !== undefined) {
    return { path: `${lead}${e.instancePath}/${escape(p.missingProperty)}`, message: 'is required' };
  }
  return { path: `${lead}${e.instancePath}`, message: e.message ?? 'is invalid' };
}
