// Memory per idle connection, for any SMTP server whose processes we can
// name: the server's resident set (VmRSS summed over `pids()`) before and
// after opening N connections, each of which has read the greeting, sent
// EHLO and read the whole EHLO reply (so the server holds a set-up session),
// and then says nothing. Reported as (after - before) / opened, in bytes.
//
// Meant for single-process servers (Tern, Haraka). A server with a process
// per connection (Postfix's smtpd) would need the new processes' RSS, and
// their shared pages make that a different figure.
//
// Connections are opened `concurrency` at a time so that the listen backlog
// is not overrun. A server may refuse some (a connection limit, a per-IP
// limit: 421 instead of 220, or a close); they are counted, not retried.
// `sources` spreads the client side over 127.0.0.2, 127.0.0.3, … (loopback
// only) for servers with a per-IP limit.

import net from 'node:net';
import { rssKiB, sleep } from './lib.ts';

export interface IdleOptions {
  host: string;
  port: number;
  /** How many to open (5000 is the usual figure). */
  connections: number;
  pids: () => number[];
  /** Wait after the last one is set up, before reading RSS again; default 1000 ms. */
  settleMs?: number;
  /** Opened at once; default 200. */
  concurrency?: number;
  /** Client source addresses 127.0.0.2 … 127.0.0.(1+sources), round robin; default: none chosen (the kernel's). */
  sources?: number;
  /** Per connection, from connect to the end of the EHLO reply; default 10 s. */
  setupTimeoutMs?: number;
}

export interface IdleResult {
  /** Requested. */
  connections: number;
  /** Set up (greeting 220, EHLO 250) and still open when RSS was read. */
  opened: number;
  rssBeforeKiB: number;
  rssAfterKiB: number;
  /** (after - before) / opened, in bytes. */
  bytesPerConnection: number;
  /** Why the others did not open ("421 …", "ECONNRESET", …) with counts. */
  refused: Record<string, number>;
  /** Connections the server closed during the settle wait. */
  lostWhileIdle: number;
  /** Seconds to open them all. */
  openSeconds: number;
  /** RSS (no settle) each time another tenth of the connections was set up. */
  curve: { opened: number; rssKiB: number }[];
  /**
   * Least-squares slope of the curve past its first fifth (the settled final
   * reading included), in bytes per connection: leaves out fixed costs paid
   * once early on (the young generation growing to its size, code compiled
   * on first use) that (after - before) / opened spreads over every
   * connection. NaN with fewer than two points.
   */
  marginalBytesPerConnection: number;
}

type Outcome = { ok: true; socket: net.Socket } | { ok: false; why: string };

/** Connect, read the greeting, EHLO, read the full reply; then leave the socket idle. */
function openIdle(host: string, port: number, localAddress: string | undefined, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, noDelay: true, ...(localAddress ? { localAddress } : {}) });
    let step: 'greeting' | 'ehlo' = 'greeting';
    let buf = '';
    let settled = false;
    const settle = (o: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      if (!o.ok) socket.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => settle({ ok: false, why: `timeout in ${step}` }), timeoutMs);
    const onData = (chunk: string): void => {
      buf += chunk;
      for (;;) {
        const lf = buf.indexOf('\n');
        if (lf < 0) return;
        const line = buf.slice(0, lf).trimEnd();
        buf = buf.slice(lf + 1);
        if (line[3] === '-') continue;
        const code = line.slice(0, 3);
        if (step === 'greeting') {
          if (code !== '220') return settle({ ok: false, why: `greeting ${line.slice(0, 60)}` });
          step = 'ehlo';
          socket.write('EHLO idle.test\r\n');
        } else {
          if (code !== '250') return settle({ ok: false, why: `EHLO ${line.slice(0, 60)}` });
          return settle({ ok: true, socket });
        }
      }
    };
    socket.setEncoding('latin1');
    socket.on('data', onData);
    socket.on('error', (e: NodeJS.ErrnoException) => settle({ ok: false, why: e.code ?? e.message }));
    socket.on('close', () => settle({ ok: false, why: `closed in ${step}` }));
  });
}

export async function measureIdle(o: IdleOptions): Promise<IdleResult> {
  const settleMs = o.settleMs ?? 1000;
  const concurrency = o.concurrency ?? 200;
  const setupTimeoutMs = o.setupTimeoutMs ?? 10_000;
  const sources = Array.from({ length: o.sources ?? 0 }, (_, i) => `127.0.0.${2 + i}`);
  if (sources.length > 253) throw new Error('at most 253 source addresses');

  // Before: let whatever ran last (a GC, closing sockets) settle first.
  await sleep(1000);
  const rssBeforeKiB = rssKiB(o.pids());

  const open = new Set<net.Socket>();
  const refused: Record<string, number> = {};
  let lostWhileIdle = 0;
  let measuring = false;
  let started = 0;
  let setUp = 0;
  const step = Math.max(1, Math.ceil(o.connections / 10));
  let nextMark = step;
  const curve: { opened: number; rssKiB: number }[] = [];
  const t0 = process.hrtime.bigint();
  const worker = async (): Promise<void> => {
    while (started < o.connections) {
      const i = started++;
      const src = sources.length ? sources[i % sources.length] : undefined;
      const r = await openIdle(o.host, o.port, src, setupTimeoutMs);
      if (r.ok) {
        const s = r.socket;
        open.add(s);
        if (++setUp >= nextMark) {
          curve.push({ opened: open.size, rssKiB: rssKiB(o.pids()) });
          nextMark += step;
        }
        s.on('data', () => {}); // an idle server says nothing; a 421 on timeout is dropped
        s.on('close', () => {
          if (open.delete(s) && !measuring) lostWhileIdle++;
        });
      } else refused[r.why] = (refused[r.why] ?? 0) + 1;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, o.connections) }, worker));
    const openSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    await sleep(settleMs);
    const rssAfterKiB = rssKiB(o.pids());
    measuring = true;
    const opened = open.size;
    const points = [...curve.filter((p) => p.opened >= opened / 5), { opened, rssKiB: rssAfterKiB }];
    return {
      connections: o.connections,
      opened,
      rssBeforeKiB,
      rssAfterKiB,
      bytesPerConnection: opened ? ((rssAfterKiB - rssBeforeKiB) * 1024) / opened : NaN,
      refused,
      lostWhileIdle,
      openSeconds,
      curve,
      marginalBytesPerConnection: slope(points.map((p) => p.opened), points.map((p) => p.rssKiB * 1024)),
    };
  } finally {
    measuring = true;
    const closed = [...open].map((s) => new Promise<void>((r) => {
      s.once('close', () => r());
      s.destroy();
    }));
    await Promise.all(closed);
  }
}

/** Least-squares slope of y over x; NaN with fewer than two distinct x. */
function slope(x: number[], y: number[]): number {
  const n = x.length;
  if (n < 2) return NaN;
  const mx = x.reduce((a, b) => a + b, 0) / n;
  const my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i]! - mx) * (y[i]! - my);
    sxx += (x[i]! - mx) ** 2;
  }
  return sxx ? sxy / sxx : NaN;
}
