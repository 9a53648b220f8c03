// One webhook POST over our own HTTP/1.1 client (http1.ts). Measured
// against node:http with a keep-alive agent, and before that fetch (undici),
// for the same POSTs to a loopback receiver: the per-message CPU budget with
// webhooks on is what limits us, not latency, and node:http spends about
// twice the CPU per POST that building one buffer and reading a status line
// needs.
//
// The timeout covers the whole attempt (connection, TLS handshake, request
// and the answer to its last byte), so a receiver that accepts and then
// trickles cannot hold a slot for longer. Redirects are not followed: the
// URL is what the key registered (Standard Webhooks treats 3xx as failure).

import net from 'node:net';
import type tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { Http1Client, type Http1Result, type Origin } from './http1.ts';

/** Where POSTs to one URL go, worked out once per webhook rather than once per POST. */
export interface PostTarget {
  secure: boolean;
  origin: Origin;
  /** The request line, Host and (for user:password@) Authorization, CRLF-terminated (RFC 9112 §3, §3.2). */
  head: string;
}

/** Where and how to POST to `url` (http: or https:; user:password@ becomes basic auth, as Node's URL handling does). */
export function postTarget(url: URL): PostTarget {
  const secure = url.protocol === 'https:';
  // An IPv6 literal without its brackets; SNI is for names, not addresses (RFC 6066 §3).
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? (secure ? 443 : 80) : Number(url.port);
  // URL has percent-encoded the path and dropped a default port from `host`, as Host wants it (RFC 9112 §3.2).
  let head = `POST ${url.pathname + url.search || '/'} HTTP/1.1\r\nhost: ${url.host}\r\n`;
  if (url.username || url.password) {
    const auth = Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`, 'utf8').toString('base64');
    head += `authorization: Basic ${auth}\r\n`;
  }
  return {
    secure,
    origin: { key: `${secure ? 'https' : 'http'}://${host}:${port}`, secure, host, port, servername: net.isIP(host) === 0 ? host : undefined },
    head,
  };
}

/** What one attempt came to: an HTTP status, or why there was none. */
export type PostResult = Http1Result;

/** `Tern/<version>`: the version in package.json, two levels up from here both in src/webhooks/ and dist/webhooks/. */
export const USER_AGENT = `Tern/${(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version} (webhooks)`;

/** A field name is a token (RFC 9110 §5.1). */
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Field values: visible characters, space and tab, obs-text (RFC 9110 §5.5); CR and LF would split the request. */
const BAD_FIELD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

/** The fields every event POST carries, ahead of its own. */
const EVENT_FIELDS = `content-type: application/json\r\nuser-agent: ${USER_AGENT}\r\n`;
/** An event id as the store makes them (and room for other printable ids): safe in a field value. */
const EVENT_ID = /^[\x21-\x7e]{1,200}$/;

export class WebhookPoster {
  readonly #client: Http1Client;

  /** `maxSockets` per origin: at most the dispatcher's concurrency is ever in flight anyway. `tlsOptions` is for tests (a `ca`). */
  constructor(o: { timeoutMs: number; maxSockets: number; tlsOptions?: tls.ConnectionOptions }) {
    this.#client = new Http1Client(o);
  }

  /** POSTs `body` with `headers` (which it owns from here); never throws. */
  post(target: PostTarget, headers: Record<string, string>, body: Buffer): Promise<PostResult> {
    // The whole head by concatenation, then head and body in one buffer and one write.
    let head = target.head;
    for (const name in headers) {
      const value = headers[name]!;
      if (!FIELD_NAME.test(name) || BAD_FIELD_VALUE.test(value)) {
        return Promise.resolve({ status: null, error: `invalid header field ${JSON.stringify(name)}`, ms: 0 });
      }
      head += name + ': ' + value + '\r\n';
    }
    head += 'content-length: ' + body.length + '\r\n\r\n';
    // Every character is at most 0xff (checked above; the URL parts are ASCII), so latin1 is one byte each.
    const data = Buffer.allocUnsafe(head.length + body.length);
    data.write(head, 0, 'latin1');
    body.copy(data, head.length);
    return this.#client.request(target.origin, data);
  }

  /**
   * POSTs one event with the Standard Webhooks fields: post() without the
   * general path's per-field checks, for the values the dispatcher makes
   * itself (a signature is base64, a timestamp digits). Only the id comes
   * from the store, and is checked against the shape of ours.
   */
  postEvent(target: PostTarget, eventId: string, timestamp: number, signature: string, body: Buffer): Promise<PostResult> {
    if (!EVENT_ID.test(eventId)) return Promise.resolve({ status: null, error: `invalid webhook-id ${JSON.stringify(eventId)}`, ms: 0 });
    const head = `${target.head}${EVENT_FIELDS}webhook-id: ${eventId}\r\nwebhook-timestamp: ${timestamp}\r\nwebhook-signature: ${signature}\r\ncontent-length: ${body.length}\r\n\r\n`;
    const data = Buffer.allocUnsafe(head.length + body.length);
    data.write(head, 0, 'latin1');
    body.copy(data, head.length);
    return this.#client.request(target.origin, data);
  }

  /** Ends every request in flight (they resolve as failures) and every idle connection. */
  close(): void {
    this.#client.close();
  }
}
