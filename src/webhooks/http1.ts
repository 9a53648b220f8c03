// A small HTTP/1.1 client for exactly one job: send a request that is
// already one buffer, and learn the status of the answer. Webhook delivery
// spends its CPU per POST, and node:http's generality (header objects,
// streams for request and response, the agent's bookkeeping) cost about
// twice what the bytes need. What we keep from RFC 9112:
//
// - persistent connections (§9.3), a few per origin, reused last-in first-out
//   so the surplus ones go idle and are closed;
// - the response framing of §6.3: no body for 1xx, 204 and 304, chunked
//   (§7.1, extensions and trailers skipped), Content-Length, or the rest of
//   the connection;
// - §9.3.1: a request sent on a reused connection that the server closed
//   meanwhile is sent once more on a new one.
//
// The parser is socket-free (ResponseParser), so tests can feed it any split
// of the bytes. Nothing of the body is kept: the status is all we report.

import net from 'node:net';
import tls from 'node:tls';

/** Where requests go: one pool of connections per key. */
export interface Origin {
  /** `http://host:port` or `https://host:port`. */
  key: string;
  secure: boolean;
  /** A name or an IP literal (IPv6 without brackets). */
  host: string;
  port: number;
  /** SNI for names only; RFC 6066 §3 forbids literal IP addresses in it. */
  servername: string | undefined;
}

/** What one request came to: an HTTP status, or why there was none. */
export type Http1Result = { status: number; error: null; ms: number } | { status: null; error: string; ms: number };

export interface Http1ClientOptions {
  /** The whole attempt: connect, TLS handshake, request and the answer's last byte. */
  timeoutMs: number;
  /** Connections per origin, busy and idle together. */
  maxSockets: number;
  /** Added to every TLS connection (tests pass a `ca`); production leaves Node's defaults, which verify. */
  tlsOptions?: tls.ConnectionOptions;
}

/** A header section larger than this is refused (Node's http parser allows 16 KiB too). */
export const MAX_HEADER_BYTES = 16 * 1024;
/** Bytes of a body read and thrown away; past this the connection is dropped (the status is all we need). */
export const MAX_BODY_BYTES = 64 * 1024;
/**
 * How long an idle connection is kept: less than the shortest common server
 * idle timeout (Node's http server: 5 s), so we close first and rarely send
 * on a connection the server is closing.
 */
export const IDLE_SOCKET_MS = 4000;

/** ResponseParser.execute: the answer needs more bytes. */
export const MORE = 0;
/** ResponseParser.execute: the answer is complete (`status`, `keepAlive`). */
export const DONE = 1;
/** ResponseParser.execute: the bytes are not HTTP/1.x (`error`); drop the connection. */
export const ERROR = 2;

// Parser states.
const HEAD = 0;
const LENGTH = 1;
const UNTIL_CLOSE = 2;
const CHUNK_SIZE = 3;
const CHUNK_EXT = 4;
const CHUNK_DATA = 5;
const CHUNK_DATA_CR = 6;
const CHUNK_DATA_LF = 7;
const TRAILER_START = 8;
const TRAILER_SKIP = 9;
const TRAILER_END_LF = 10;
const FINISHED = 11;
const FAILED = 12;

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const CR = 13;
const LF = 10;
/** A chunk size above this is not a webhook answer, and would lose precision as a number. */
const MAX_CHUNK_SIZE = 2 ** 40;

/**
 * Parses one response at a time from bytes in any split. reset() before each
 * request; execute() each chunk until it returns DONE or ERROR; atEof() when
 * the connection ends, for an answer delimited by the close (§6.3 item 8).
 */
export class ResponseParser {
  /** The final (non-1xx) status, once the header section is in. */
  status = 0;
  /** Whether the connection may carry another request after this answer. */
  keepAlive = true;
  /** Why execute() returned ERROR. */
  error = '';
  #state = HEAD;
  /** Header bytes of an incomplete section, carried to the next chunk. */
  #pending: Buffer | null = null;
  /** Body bytes still to skip (Content-Length, or the current chunk). */
  #remaining = 0;
  /** Body-phase bytes seen, framing included, against MAX_BODY_BYTES. */
  #bodyBytes = 0;
  /** Hex digits seen in the current chunk-size line. */
  #digits = 0;
  /** Whether any byte of this answer (an interim 1xx included) has arrived. */
  #seen = false;

  reset(): void {
    this.status = 0;
    this.keepAlive = true;
    this.error = '';
    this.#state = HEAD;
    this.#pending = null;
    this.#remaining = 0;
    this.#bodyBytes = 0;
    this.#digits = 0;
    this.#seen = false;
  }

  /** Whether some bytes of this answer have been parsed. */
  get started(): boolean {
    return this.#seen;
  }

  /** The connection ended: DONE if that ends the answer (read-until-close), else ERROR. */
  atEof(): number {
    if (this.#state === FINISHED) return DONE;
    if (this.#state === UNTIL_CLOSE) {
      this.#state = FINISHED;
      this.keepAlive = false;
      return DONE;
    }
    return this.#fail('answer cut off');
  }

  execute(chunk: Buffer): number {
    let buf = chunk;
    let i = 0;
    this.#seen = true;
    const state = this.#state;
    if (state === FINISHED) {
      // Bytes after a complete answer that we did not ask for: out of sync.
      this.keepAlive = false;
      return DONE;
    }
    if (state === FAILED) return ERROR;
    for (;;) {
      if (this.#state === HEAD) {
        if (this.#pending !== null) {
          buf = Buffer.concat([this.#pending, i === 0 ? buf : buf.subarray(i)]);
          i = 0;
          this.#pending = null;
        }
        const end = buf.indexOf(CRLFCRLF, i);
        if (end === -1) {
          if (buf.length - i > MAX_HEADER_BYTES) return this.#fail(`answer header section over ${MAX_HEADER_BYTES} bytes`);
          // Node does not reuse the buffers it hands to 'data' listeners, so keeping a view is safe.
          this.#pending = i === 0 ? buf : buf.subarray(i);
          return MORE;
        }
        if (end + 4 - i > MAX_HEADER_BYTES) return this.#fail(`answer header section over ${MAX_HEADER_BYTES} bytes`);
        if (!this.#head(buf.toString('latin1', i, end))) return ERROR;
        i = end + 4;
        if (this.#state === HEAD) continue; // an interim 1xx answer: the real one follows
        if (this.#state === FINISHED) {
          if (i < buf.length) this.keepAlive = false;
          return DONE;
        }
      }
      return this.#body(buf, i);
    }
  }

  /** Parses the status line and the fields we need (§4, §5); sets the body state. */
  #head(text: string): boolean {
    // status-line = HTTP-version SP status-code SP [ reason-phrase ] (§4)
    if (!text.startsWith('HTTP/1.') || text.charCodeAt(8) !== 32) return this.#fail('not an HTTP/1.x answer') === DONE;
    const minor = text.charCodeAt(7);
    const d0 = text.charCodeAt(9) - 48;
    const d1 = text.charCodeAt(10) - 48;
    const d2 = text.charCodeAt(11) - 48;
    const status = d0 * 100 + d1 * 10 + d2;
    // The reason phrase may be empty; be lenient about its separating space being missing.
    const after = text.length > 12 ? text.charCodeAt(12) : 32;
    if ((minor !== 48 && minor !== 49) || !(d0 >= 1 && d0 <= 9 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9) || (after !== 32 && after !== CR)) {
      return this.#fail('not an HTTP/1.x answer') === DONE;
    }
    if (status < 200) {
      // 1xx are interim (RFC 9110 §15.2): skip them. We never ask to switch protocols, so a 101 is nonsense.
      if (status === 101) return this.#fail('unexpected 101 Switching Protocols') === DONE;
      return true;
    }
    let length = -1;
    let chunked = false;
    let transferEncoding = false;
    // HTTP/1.1 is persistent unless "close"; HTTP/1.0 only with "keep-alive" (§9.3).
    let close = minor === 48;
    let at = text.indexOf('\r\n');
    while (at !== -1) {
      const start = at + 2;
      at = text.indexOf('\r\n', start);
      const line = at === -1 ? text.slice(start) : text.slice(start, at);
      const colon = line.indexOf(':');
      // No whitespace between field name and colon (§5.1); obs-fold is refused too (§5.2).
      if (colon <= 0 || line.charCodeAt(colon - 1) === 32 || line.charCodeAt(colon - 1) === 9 || line.charCodeAt(0) === 32 || line.charCodeAt(0) === 9) {
        return this.#fail('malformed answer header field') === DONE;
      }
      // Only three names matter; lower-case a name only when its length matches one of them.
      if (colon === 14 || colon === 17 || colon === 10) {
        const name = line.slice(0, colon).toLowerCase();
        if (name === 'content-length') {
          // A list of identical values is one value (§6.3 item 5); anything else is an error.
          for (const v of line.slice(colon + 1).split(',')) {
            const s = v.trim();
            if (!/^[0-9]{1,15}$/.test(s) || (length !== -1 && Number(s) !== length)) return this.#fail('invalid Content-Length') === DONE;
            length = Number(s);
          }
        } else if (name === 'transfer-encoding') {
          transferEncoding = true;
          // Only a final "chunked" frames the body (§6.3 item 4); later fields continue the list.
          chunked = /(?:^|,)[ \t]*chunked[ \t]*$/i.test(line.slice(colon + 1));
        } else if (name === 'connection') {
          for (const v of line.slice(colon + 1).split(',')) {
            const s = v.trim().toLowerCase();
            if (s === 'close') close = true;
            else if (s === 'keep-alive' && minor === 48) close = false;
          }
        }
      }
    }
    this.status = status;
    this.keepAlive = !close;
    this.#bodyBytes = 0;
    if (status === 204 || status === 304) {
      this.#state = FINISHED; // never a body (§6.3 item 1), whatever the fields say
    } else if (transferEncoding) {
      // Both Transfer-Encoding and Content-Length may be a smuggling attempt (§6.1): believe
      // Transfer-Encoding, and do not reuse the connection (§6.3 item 3).
      if (length !== -1) this.keepAlive = false;
      if (chunked) {
        this.#state = CHUNK_SIZE;
        this.#remaining = 0;
        this.#digits = 0;
      } else {
        this.#state = UNTIL_CLOSE; // §6.3 item 4: read until the server closes
        this.keepAlive = false;
      }
    } else if (length === 0) {
      this.#state = FINISHED;
    } else if (length > 0) {
      this.#state = LENGTH;
      this.#remaining = length;
    } else {
      this.#state = UNTIL_CLOSE; // §6.3 item 8
      this.keepAlive = false;
    }
    return true;
  }

  /** Skips body bytes from `buf[i]` on; DONE once the framing says the body ended. */
  #body(buf: Buffer, i: number): number {
    const n = buf.length;
    this.#bodyBytes += n - i;
    let state = this.#state;
    while (i < n && state !== FINISHED) {
      switch (state) {
        case LENGTH:
        case CHUNK_DATA: {
          const take = Math.min(this.#remaining, n - i);
          this.#remaining -= take;
          i += take;
          if (this.#remaining === 0) state = state === LENGTH ? FINISHED : CHUNK_DATA_CR;
          break;
        }
        case UNTIL_CLOSE:
          i = n;
          break;
        case CHUNK_SIZE: {
          // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF (§7.1)
          const c = buf[i]!;
          const v = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
          if (v !== -1) {
            this.#remaining = this.#remaining * 16 + v;
            this.#digits++;
            if (this.#remaining > MAX_CHUNK_SIZE) return this.#fail('chunk size too large');
            i++;
          } else if (this.#digits > 0 && (c === 59 || c === 32 || c === 9 || c === CR || c === LF)) {
            state = CHUNK_EXT; // extensions (§7.1.1) are ignored, like every recipient may
          } else {
            return this.#fail('invalid chunk size');
          }
          break;
        }
        case CHUNK_EXT: {
          const lf = buf.indexOf(LF, i);
          if (lf === -1) {
            i = n;
            break;
          }
          i = lf + 1;
          if (this.#remaining === 0) {
            state = TRAILER_START; // last-chunk: trailers follow (§7.1.2)
          } else {
            state = CHUNK_DATA;
          }
          this.#digits = 0;
          break;
        }
        case CHUNK_DATA_CR:
          if (buf[i] === CR) state = CHUNK_DATA_LF;
          else return this.#fail('chunk data not followed by CRLF');
          i++;
          break;
        case CHUNK_DATA_LF:
          if (buf[i] !== LF) return this.#fail('chunk data not followed by CRLF');
          state = CHUNK_SIZE;
          i++;
          break;
        case TRAILER_START: {
          const c = buf[i++];
          state = c === CR ? TRAILER_END_LF : c === LF ? FINISHED : TRAILER_SKIP;
          break;
        }
        case TRAILER_SKIP: {
          const lf = buf.indexOf(LF, i);
          if (lf === -1) i = n;
          else {
            i = lf + 1;
            state = TRAILER_START;
          }
          break;
        }
        case TRAILER_END_LF:
          if (buf[i++] !== LF) return this.#fail('malformed chunked trailer section');
          state = FINISHED;
          break;
      }
    }
    this.#state = state;
    if (state === FINISHED) {
      if (i < n) this.keepAlive = false; // bytes nobody asked for follow: the connection is out of sync
      return DONE;
    }
    if (this.#bodyBytes > MAX_BODY_BYTES) {
      // The status is all we need; a server streaming a large answer loses the connection, not our time.
      this.#state = FINISHED;
      this.keepAlive = false;
      return DONE;
    }
    return MORE;
  }

  #fail(error: string): number {
    this.#state = FAILED;
    this.error = error;
    this.keepAlive = false;
    return ERROR;
  }
}

/** One request: the bytes, its promise, and where it is. */
interface Job {
  readonly origin: Origin;
  readonly data: Buffer;
  readonly resolve: (r: Http1Result) => void;
  readonly started: number;
  timer: NodeJS.Timeout | undefined;
  conn: Conn | null;
  settled: boolean;
  /** Sent on a connection that had already carried an answer (so may have been closed meanwhile). */
  reused: boolean;
  retried: boolean;
}

/** The connections of one origin. */
interface Pool {
  readonly key: string;
  readonly all: Set<Conn>;
  /** Idle connections, most recently used last. */
  readonly idle: Conn[];
  /** Requests waiting for a connection, oldest first. */
  readonly waiting: Job[];
  /** The last TLS session, to resume on the next connection (as https.Agent does). */
  session: Buffer | undefined;
}

/** One connection: its socket, its parser and the request it carries, if any. */
interface Conn {
  readonly socket: net.Socket;
  readonly pool: Pool;
  readonly parser: ResponseParser;
  job: Job | null;
  /** Whether it has carried a complete answer. */
  used: boolean;
  idleAt: number;
  idleTimer: NodeJS.Timeout | undefined;
  /** The socket's error, reported if a request fails with it. */
  error: string | null;
}

function errorText(e: NodeJS.ErrnoException): string {
  return e.code ? `${e.code}: ${e.message}` : e.message;
}

/**
 * Sends prepared requests over per-origin pools of persistent connections.
 * request() never throws; close() ends everything, and requests in flight
 * resolve as failures.
 */
export class Http1Client {
  readonly #timeoutMs: number;
  readonly #maxSockets: number;
  readonly #tls: tls.ConnectionOptions | undefined;
  readonly #pools = new Map<string, Pool>();
  #closed = false;

  constructor(o: Http1ClientOptions) {
    this.#timeoutMs = o.timeoutMs;
    this.#maxSockets = Math.max(1, o.maxSockets);
    this.#tls = o.tlsOptions;
  }

  /** Sends `data` (a complete request: head and body) to `origin` and resolves with the answer's status. */
  request(origin: Origin, data: Buffer): Promise<Http1Result> {
    return new Promise((resolve) => {
      const job: Job = { origin, data, resolve, started: performance.now(), timer: undefined, conn: null, settled: false, reused: false, retried: false };
      if (this.#closed) {
        this.#fail(job, 'shutting down');
        return;
      }
      job.timer = setTimeout(this.#onTimeout, this.#timeoutMs, job);
      this.#dispatch(job, false);
    });
  }

  /** Destroys every connection; requests in flight or waiting resolve as failures. */
  close(): void {
    this.#closed = true;
    for (const pool of this.#pools.values()) {
      for (const job of pool.waiting) this.#fail(job, 'shutting down');
      pool.waiting.length = 0;
      for (const conn of pool.all) {
        if (conn.job !== null) this.#fail(conn.job, 'shutting down');
        conn.socket.destroy();
      }
    }
  }

  /** Puts `job` on an idle connection, a new one, or in the queue; `fresh` skips the idle ones. */
  #dispatch(job: Job, fresh: boolean): void {
    const origin = job.origin;
    let pool = this.#pools.get(origin.key);
    if (pool === undefined) {
      pool = { key: origin.key, all: new Set(), idle: [], waiting: [], session: undefined };
      this.#pools.set(origin.key, pool);
    }
    if (!fresh) {
      const conn = pool.idle.pop();
      if (conn !== undefined) {
        conn.socket.ref();
        this.#send(conn, job);
        return;
      }
    }
    if (pool.all.size < this.#maxSockets) this.#send(this.#connect(pool, origin), job);
    else pool.waiting.push(job);
  }

  #send(conn: Conn, job: Job): void {
    conn.job = job;
    job.conn = conn;
    job.reused = conn.used;
    conn.parser.reset();
    // Written before the connection is up, the bytes wait in the socket until it is (and the TLS handshake done).
    conn.socket.write(job.data);
  }

  #connect(pool: Pool, origin: Origin): Conn {
    const socket = origin.secure
      ? tls.connect({ ...this.#tls, host: origin.host, port: origin.port, servername: origin.servername, session: pool.session })
      : net.connect({ host: origin.host, port: origin.port });
    socket.setNoDelay(true);
    const conn: Conn = { socket, pool, parser: new ResponseParser(), job: null, used: false, idleAt: 0, idleTimer: undefined, error: null };
    pool.all.add(conn);
    socket.on('data', (chunk: Buffer) => this.#onData(conn, chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      conn.error = errorText(e);
      if (origin.secure) pool.session = undefined; // a session that failed is not offered again
    });
    socket.on('close', () => this.#onClose(conn));
    if (origin.secure) socket.on('session', (session: Buffer) => (pool.session = session));
    return conn;
  }

  #onData(conn: Conn, chunk: Buffer): void {
    const job = conn.job;
    if (job === null) {
      // Bytes with no request outstanding: the server is out of step with us (§9.3).
      conn.socket.destroy();
      return;
    }
    const parser = conn.parser;
    const r = parser.execute(chunk);
    if (r === MORE) return;
    conn.job = null;
    job.conn = null;
    if (r === ERROR) {
      this.#fail(job, parser.error);
      conn.socket.destroy();
      return;
    }
    this.#settle(job, { status: parser.status, error: null, ms: Math.round(performance.now() - job.started) });
    if (parser.keepAlive && !this.#closed) this.#release(conn);
    else conn.socket.destroy();
  }

  /** `conn` finished an answer and may be reused: the next waiting request, or the idle list. */
  #release(conn: Conn): void {
    conn.used = true;
    const pool = conn.pool;
    while (pool.waiting.length > 0) {
      const job = pool.waiting.shift()!;
      if (!job.settled) {
        this.#send(conn, job);
        return;
      }
    }
    conn.idleAt = performance.now();
    if (conn.idleTimer === undefined) {
      conn.idleTimer = setTimeout(this.#onIdle, IDLE_SOCKET_MS, conn);
      conn.idleTimer.unref();
    } else {
      conn.idleTimer.refresh();
    }
    // Like the agent's free sockets: an idle connection does not keep the process alive.
    conn.socket.unref();
    pool.idle.push(conn);
  }

  /** The idle timer is re-armed each time the connection goes idle, so if it is idle now, it has been for IDLE_SOCKET_MS. */
  readonly #onIdle = (conn: Conn): void => {
    if (conn.job === null && performance.now() - conn.idleAt >= IDLE_SOCKET_MS - 1) conn.socket.destroy();
  };

  readonly #onTimeout = (job: Job): void => {
    this.#fail(job, `timed out after ${this.#timeoutMs} ms`);
    const conn = job.conn;
    if (conn !== null) {
      conn.job = null;
      job.conn = null;
      conn.socket.destroy();
    } else {
      const pool = this.#pools.get(job.origin.key);
      const at = pool === undefined ? -1 : pool.waiting.indexOf(job);
      if (at !== -1) pool!.waiting.splice(at, 1);
    }
  };

  #onClose(conn: Conn): void {
    const pool = conn.pool;
    pool.all.delete(conn);
    if (conn.idleTimer !== undefined) clearTimeout(conn.idleTimer);
    const job = conn.job;
    conn.job = null;
    if (job === null) {
      const at = pool.idle.indexOf(conn);
      if (at !== -1) pool.idle.splice(at, 1);
    } else {
      job.conn = null;
      const parser = conn.parser;
      if (parser.started && parser.atEof() === DONE) {
        this.#settle(job, { status: parser.status, error: null, ms: Math.round(performance.now() - job.started) });
      } else if (job.reused && !parser.started && !job.retried && !this.#closed) {
        // The server closed a kept connection as we sent on it, and nothing came back: the
        // request was not processed as far as we can tell, so send it once more on a new
        // connection (§9.3.1 allows this for idempotent requests). A POST is not idempotent,
        // but a webhook is safe to repeat: receivers deduplicate by webhook-id, and the
        // outbox retries a failed delivery anyway.
        job.retried = true;
        this.#dispatch(job, true);
      } else {
        this.#fail(job, conn.error ?? (parser.started ? 'answer cut off' : 'connection closed before an answer'));
      }
    }
    // A slot came free: open a connection for the oldest request still waiting.
    while (!this.#closed && pool.waiting.length > 0 && pool.all.size < this.#maxSockets) {
      const next = pool.waiting.shift()!;
      if (!next.settled) this.#send(this.#connect(pool, next.origin), next);
    }
    if (pool.all.size === 0 && pool.waiting.length === 0 && this.#pools.get(pool.key) === pool) this.#pools.delete(pool.key);
  }

  #fail(job: Job, error: string): void {
    this.#settle(job, { status: null, error, ms: Math.round(performance.now() - job.started) });
  }

  #settle(job: Job, r: Http1Result): void {
    if (job.settled) return;
    job.settled = true;
    clearTimeout(job.timer);
    job.resolve(r);
  }
}
