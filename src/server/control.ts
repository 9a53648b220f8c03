// The local control channel: a Unix socket in the data directory (mode
// 0600, so only the server's user may use it). The CLI sends one JSON
// request per line, { "cmd": "queue.list", ... }, and gets one JSON line back:
// { "ok": true, "result": … } or { "ok": false, "error": "…" }.
//
// A large array result (the list of a queue of 100,000) is written in
// slices as the socket drains, never as one string of tens of megabytes
// built in one turn of the event loop, so SMTP sessions are served while it
// goes out. A handler may return any iterable (a generator) instead: it is
// sent as a JSON array, and its items are produced only as they are sent. While an answer is not ready (a long handler, or recovery still
// reading the queue), the server sends a space every few seconds: JSON
// allows leading white space, and the client's timeout counts silence, not
// the whole exchange.

import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from '../util/log.ts';

export type ControlHandler = (req: Record<string, unknown>) => Promise<unknown> | unknown;

/** A request line longer than this is not one of ours. */
const MAX_REQUEST = 64 * 1024;
/** Items of an array result serialized per write. */
export const STREAM_SLICE = 500;
/** A space this often while an answer is not ready, so the client knows the server is alive. */
export const KEEPALIVE_MS = 2_000;

export interface ControlOptions {
  /** Requests wait for this before they run (start-up recovery still reading the queue). */
  ready?: () => Promise<unknown>;
}

export class ControlServer {
  readonly path: string;
  readonly #handlers: Record<string, ControlHandler>;
  readonly #log: Logger;
  readonly #server: net.Server;
  readonly #ready: () => Promise<unknown>;
  /** Open connections, and whether each has sent its request (it is being answered). */
  readonly #connections = new Map<net.Socket, { answering: boolean }>();
  #closing: Promise<void> | null = null;

  constructor(path: string, handlers: Record<string, ControlHandler>, log: Logger, options: ControlOptions = {}) {
    this.path = path;
    this.#handlers = handlers;
    this.#log = log;
    this.#ready = options.ready ?? (() => Promise.resolve());
    this.#server = net.createServer((s) => this.#onConnection(s));
  }

  /** Throws when a live server answers on `path`: another Tern owns this data directory. */
  static async refuseIfRunning(path: string): Promise<void> {
    if (fs.existsSync(path) && (await isLive(path))) {
      throw new Error(`another Tern is running with this data directory (${path} answers): stop it first, or give this one another dataDir`);
    }
  }

  async listen(): Promise<void> {
    await ControlServer.refuseIfRunning(this.path);
    // What is left is a socket from a crash: stale.
    fs.rmSync(this.path, { force: true });
    await new Promise<void>((res, rej) => {
      this.#server.once('error', rej);
      this.#server.listen(this.path, () => res());
    });
    fs.chmodSync(this.path, 0o600);
  }

  /**
   * Stop listening; requests being answered get their answer, connections
   * that have not sent one are dropped (else one idle CLI would hold the
   * shutdown open). Once, however many callers.
   */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((res) => {
      this.#server.close(() => res());
      for (const [socket, c] of this.#connections) if (!c.answering) socket.destroy();
    });
    return this.#closing;
  }

  #onConnection(socket: net.Socket): void {
    if (this.#closing) return void socket.destroy();
    const conn = { answering: false };
    this.#connections.set(socket, conn);
    socket.once('close', () => this.#connections.delete(socket));
    let buf = '';
    socket.setEncoding('utf8');
    socket.on('error', () => {});
    socket.on('data', (d: string) => {
      // One request per connection: whatever follows it is never run (it
      // would run with no one to answer, on a socket already ended).
      if (conn.answering) return;
      buf += d;
      if (buf.length > MAX_REQUEST) return void socket.destroy();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      conn.answering = true;
      const line = buf.slice(0, nl);
      buf = '';
      const keepalive = setInterval(() => socket.writable && socket.write(' '), KEEPALIVE_MS);
      void this.#answer(line)
        .then(async (out) => {
          clearInterval(keepalive);
          // The client may have gone while the handler ran.
          if (socket.destroyed) return;
          if (out.ok && isIterable(out.result)) await writeArray(socket, out.result);
          else socket.end(JSON.stringify(out) + '\n');
        })
        .catch(() => socket.destroy())
        .finally(() => clearInterval(keepalive));
    });
  }

  async #answer(line: string): Promise<{ ok: boolean; result?: unknown; error?: string }> {
    try {
      const req = JSON.parse(line) as Record<string, unknown>;
      const handler = typeof req.cmd === 'string' ? this.#handlers[req.cmd] : undefined;
      if (!handler) return { ok: false, error: `unknown command ${String(req.cmd)}` };
      this.#log.info('control', { cmd: req.cmd, id: req.id });
      await this.#ready();
      return { ok: true, result: await handler(req) };
    } catch (e) {
      return { ok: false, error: e instanceof Error ? e.message : String(e) };
    }
  }
}

function isIterable(x: unknown): x is Iterable<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as Iterable<unknown>)[Symbol.iterator] === 'function';
}

/**
 * `{"ok":true,"result":[…]}` and a newline, exactly as JSON.stringify
 * writes an array, STREAM_SLICE items per write: the next slice is taken
 * from the iterator only once the socket has drained (a slow reader) or on
 * the next turn of the event loop.
 */
async function writeArray(socket: net.Socket, items: Iterable<unknown>): Promise<void> {
  const it = items[Symbol.iterator]();
  let head = '{"ok":true,"result":[';
  let sep = '';
  for (let done = false; !done; ) {
    const slice: string[] = [];
    while (slice.length < STREAM_SLICE) {
      const next = it.next();
      if (next.done) {
        done = true;
        break;
      }
      slice.push(JSON.stringify(next.value) ?? 'null');
    }
    if (socket.destroyed) return;
    if (slice.length === 0) break;
    const more = socket.write(head + sep + slice.join(','));
    head = '';
    sep = ',';
    if (!more) await drained(socket);
    else await new Promise((r) => setImmediate(r));
  }
  if (!socket.destroyed) socket.end(`${head}]}\n`);
}

/** Resolves when the socket can take more, or is gone. */
function drained(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

function isLive(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(path, () => {
      s.destroy();
      res(true);
    });
    s.on('error', () => res(false));
  });
}

/**
 * The client side: one request, one answer. `timeoutMs` is the longest
 * silence accepted (the server sends spaces while it works), not a limit
 * on the whole exchange: a list of 100,000 messages takes longer.
 */
export function controlRequest(path: string, req: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('the server did not answer'));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(JSON.stringify(req) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      timer.refresh();
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? new Error(`no Tern server is running for this data directory (${path})`) : e);
    });
    s.on('end', () => {
      clearTimeout(timer);
      try {
        const out = JSON.parse(buf) as { ok: boolean; result?: unknown; error?: string };
        if (out.ok) resolve(out.result);
        else reject(new Error(out.error));
      } catch {
        reject(new Error('bad answer from the server'));
      }
    });
  });
}
