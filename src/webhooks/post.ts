// One webhook POST over node:http(s) with keep-alive agents. Measured
// against fetch (undici) for the same POSTs to a loopback receiver (see
// docs/webhooks.md, "Cost"): http.request costs less CPU per POST, and the
// per-message CPU budget with webhooks on is what limits us, not latency.
//
// The timeout covers the whole attempt (connection, TLS handshake, request
// and the answer to its last byte), so a receiver that accepts and then
// trickles cannot hold a slot for longer. Redirects are not followed: the
// URL is what the key registered (Standard Webhooks treats 3xx as failure).

import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';

/** Where POSTs to one URL go, worked out once per webhook rather than once per POST. */
export interface PostTarget {
  secure: boolean;
  options: http.RequestOptions;
}

/** The request options of `url` (http: or https:; user:password@ becomes basic auth, as Node's URL handling does). */
export function postTarget(url: URL): PostTarget {
  return {
    secure: url.protocol === 'https:',
    options: {
      // An IPv6 literal without its brackets; the agent sends SNI for names, not addresses (RFC 6066 §3).
      hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: url.port === '' ? undefined : Number(url.port),
      path: url.pathname + url.search,
      ...(url.username || url.password ? { auth: `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}` } : {}),
    },
  };
}

/** What one attempt came to: an HTTP status, or why there was none. */
export type PostResult = { status: number; error: null; ms: number } | { status: null; error: string; ms: number };

/** Bytes of an answer read and thrown away; past this the connection is dropped (nobody needs the body). */
const MAX_ANSWER_BYTES = 64 * 1024;
/**
 * How long an idle keep-alive connection is kept: less than the shortest
 * common server idle timeout (Node's http server: 5 s), so we close first
 * and never send on a connection the receiver is closing (a reset, a retry).
 */
const IDLE_SOCKET_MS = 4000;

/** `Tern/<version>`: the version in package.json, two levels up from here both in src/webhooks/ and dist/webhooks/. */
export const USER_AGENT = `Tern/${(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version} (webhooks)`;

export class WebhookPoster {
  readonly #http: http.Agent;
  readonly #https: https.Agent;
  readonly #timeoutMs: number;
  /** Requests in flight, so close() can end them. */
  readonly #live = new Set<http.ClientRequest>();

  /** `maxSockets` per host: at most the dispatcher's concurrency is ever in flight anyway. */
  constructor(o: { timeoutMs: number; maxSockets: number }) {
    this.#timeoutMs = o.timeoutMs;
    const agent = { keepAlive: true, maxSockets: o.maxSockets, maxFreeSockets: o.maxSockets, timeout: IDLE_SOCKET_MS, scheduling: 'lifo' as const };
    this.#http = new http.Agent(agent);
    this.#https = new https.Agent(agent);
  }

  /** POSTs `body` with `headers` (which it owns from here, and completes with Content-Length); never throws. */
  post(target: PostTarget, headers: Record<string, string>, body: Buffer): Promise<PostResult> {
    headers['content-length'] = String(body.length);
    const started = performance.now();
    const ms = (): number => Math.round(performance.now() - started);
    return new Promise((resolve) => {
      let settled = false;
      const finish = (r: PostResult): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#live.delete(req);
        resolve(r);
      };
      const fail = (error: string): void => finish({ status: null, error, ms: ms() });
      const { secure, options } = target;
      const req = (secure ? https : http).request({
        ...options,
        method: 'POST',
        agent: secure ? this.#https : this.#http,
        headers,
      });
      const timer = setTimeout(() => {
        fail(`timed out after ${this.#timeoutMs} ms`);
        req.destroy();
      }, this.#timeoutMs);
      this.#live.add(req);
      req.on('error', (e: NodeJS.ErrnoException) => fail(e.code ? `${e.code}: ${e.message}` : e.message));
      req.on('response', (res) => {
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > MAX_ANSWER_BYTES) {
            // The status is all we need; a receiver streaming a large answer loses the connection, not our memory.
            finish({ status: res.statusCode ?? 0, error: null, ms: ms() });
            req.destroy();
          }
        });
        res.on('end', () => finish({ status: res.statusCode ?? 0, error: null, ms: ms() }));
        res.on('error', (e) => fail(e.message));
        res.on('aborted', () => fail('answer cut off'));
      });
      req.end(body);
    });
  }

  /** Ends every request in flight (they resolve as failures) and every idle connection. */
  close(): void {
    for (const req of this.#live) req.destroy(new Error('shutting down'));
    this.#http.destroy();
    this.#https.destroy();
  }
}
