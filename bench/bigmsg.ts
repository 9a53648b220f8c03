// One big message, for any SMTP server whose processes we can name: how
// long it takes and how much the server's resident set grows while it
// takes it in. One session; the content is generated as it is sent, in
// 64 KiB chunks made of 78-octet lines, waiting for 'drain' whenever the
// socket says so, so the client never holds the message either. VmRSS,
// summed over `pids()` (re-read each time, for servers that fork), is
// sampled every 20 ms from just before DATA until the reply to the end of
// data; the figure is peak - before.
//
// The server needs a message size limit above `sizeBytes`. MAIL FROM
// carries SIZE= only when the EHLO reply advertises SIZE (RFC 1870).

import net from 'node:net';
import { rssKiB } from './lib.ts';

export interface BigMessageOptions {
  host: string;
  port: number;
  /** Content octets (header and body, CRLF line ends), before the final ".\r\n". */
  sizeBytes: number;
  pids: () => number[];
  from: string;
  to: string;
  /** Whole session; past it the connection is dropped and the promise rejects. */
  timeoutMs: number;
}

export interface BigMessageResult {
  sizeBytes: number;
  /** From writing DATA to the reply after the end of data. */
  seconds: number;
  rssBeforeKiB: number;
  rssPeakKiB: number;
  rssGrowthKiB: number;
  /** The reply to the end of data, e.g. "250 2.0.0 OK queued as …". */
  reply: string;
  /** From the first content byte written to the last, MB/s (1e6). */
  sendMBps: number;
  /** Seconds from the last content byte written to the final reply. */
  tailSeconds: number;
  samples: number;
}

const SAMPLE_MS = 20;
const LINE = 'y'.repeat(76) + '\r\n';
const CHUNK_LINES = 840; // 840 * 78 = 65520 octets
const CHUNK = Buffer.from(LINE.repeat(CHUNK_LINES), 'latin1');

/** Reads replies off a socket: next() resolves with the next complete reply (all its lines). */
class ReplyReader {
  #buf = '';
  #lines: string[] = [];
  #replies: { code: number; text: string }[] = [];
  #waiting: ((r: { code: number; text: string }) => void) | null = null;
  #failed: Error | null = null;
  #reject: ((e: Error) => void) | null = null;

  constructor(socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => this.#push(d));
    socket.on('error', (e) => this.#fail(e));
    socket.on('close', () => this.#fail(new Error('connection closed')));
  }

  #push(d: string): void {
    this.#buf += d;
    for (;;) {
      const lf = this.#buf.indexOf('\n');
      if (lf < 0) return;
      const line = this.#buf.slice(0, lf).trimEnd();
      this.#buf = this.#buf.slice(lf + 1);
      this.#lines.push(line);
      if (line[3] === '-') continue;
      const r = { code: Number(line.slice(0, 3)) || 0, text: this.#lines.join('\n') };
      this.#lines = [];
      if (this.#waiting) {
        const w = this.#waiting;
        this.#waiting = null;
        this.#reject = null;
        w(r);
      } else this.#replies.push(r);
    }
  }

  #fail(e: Error): void {
    if (this.#failed) return;
    this.#failed = e;
    const rej = this.#reject;
    this.#waiting = null;
    this.#reject = null;
    rej?.(e);
  }

  next(): Promise<{ code: number; text: string }> {
    const r = this.#replies.shift();
    if (r) return Promise.resolve(r);
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((res, rej) => {
      this.#waiting = res;
      this.#reject = rej;
    });
  }
}

/** The header, then 78-octet lines, up to exactly `size` octets ending in CRLF; then ".\r\n". */
function* content(size: number, from: string, to: string): Generator<Buffer> {
  const header = Buffer.from(
    `From: <${from}>\r\nTo: <${to}>\r\nSubject: big message probe\r\n` +
      `Date: ${new Date().toUTCString().replace('GMT', '+0000')}\r\n` +
      `Message-ID: <big.${process.pid}.${Date.now()}@load.test>\r\nMIME-Version: 1.0\r\n` +
      `Content-Type: text/plain; charset=us-ascii\r\n\r\n`,
    'latin1',
  );
  if (size < header.length + 3) throw new Error(`sizeBytes must be at least ${header.length + 3}`);
  yield header;
  let left = size - header.length;
  while (left >= CHUNK.length) {
    yield CHUNK;
    left -= CHUNK.length;
  }
  // The rest: whole lines, then one shorter line (at least "z\r\n") holding the remainder.
  const whole = Math.floor(left / LINE.length);
  let rest = left - whole * LINE.length;
  let lines = whole;
  if (rest > 0 && rest < 3) {
    lines--; // fold one line into the short one
    rest += LINE.length;
  }
  if (lines > 0) yield CHUNK.subarray(0, lines * LINE.length);
  if (rest > 0) yield Buffer.from('z'.repeat(rest - 2) + '\r\n', 'latin1');
  yield Buffer.from('.\r\n', 'latin1');
}

export async function measureBigMessage(o: BigMessageOptions): Promise<BigMessageResult> {
  const socket = net.connect({ host: o.host, port: o.port, noDelay: true });
  const replies = new ReplyReader(socket);
  let sampler: NodeJS.Timeout | undefined;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    socket.destroy(new Error(`timed out after ${o.timeoutMs} ms`));
  }, o.timeoutMs);
  const expect = async (what: string, ...codes: number[]): Promise<{ code: number; text: string }> => {
    const r = await replies.next();
    if (!codes.includes(r.code)) throw new Error(`${what}: ${r.text}`);
    return r;
  };
  const write = (b: Buffer | string): Promise<void> | undefined =>
    socket.write(b) ? undefined : new Promise<void>((res, rej) => {
      const onDrain = (): void => {
        socket.off('close', onClose);
        res();
      };
      const onClose = (): void => {
        socket.off('drain', onDrain);
        rej(new Error(timedOut ? `timed out after ${o.timeoutMs} ms` : 'connection closed while sending'));
      };
      socket.once('drain', onDrain);
      socket.once('close', onClose);
    });

  try {
    await expect('greeting', 220);
    socket.write('EHLO big.test\r\n');
    const ehlo = await expect('EHLO', 250);
    const sizeAdvertised = ehlo.text.split('\n').slice(1).some((l) => /^SIZE\b/i.test(l.slice(4)));
    socket.write(`MAIL FROM:<${o.from}>${sizeAdvertised ? ` SIZE=${o.sizeBytes}` : ''}\r\n`);
    await expect('MAIL', 250);
    socket.write(`RCPT TO:<${o.to}>\r\n`);
    await expect('RCPT', 250, 251);

    const rssBeforeKiB = rssKiB(o.pids());
    let rssPeakKiB = rssBeforeKiB;
    let samples = 1;
    sampler = setInterval(() => {
      const v = rssKiB(o.pids());
      samples++;
      if (v > rssPeakKiB) rssPeakKiB = v;
    }, SAMPLE_MS);

    const t0 = process.hrtime.bigint();
    socket.write('DATA\r\n');
    await expect('DATA', 354);
    const tSend = process.hrtime.bigint();
    for (const part of content(o.sizeBytes, o.from, o.to)) {
      const w = write(part);
      if (w) await w;
    }
    const tSent = process.hrtime.bigint();
    const final = await replies.next();
    const tEnd = process.hrtime.bigint();
    clearInterval(sampler);
    sampler = undefined;
    const last = rssKiB(o.pids());
    if (last > rssPeakKiB) rssPeakKiB = last;
    socket.write('QUIT\r\n');
    socket.end();
    return {
      sizeBytes: o.sizeBytes,
      seconds: Number(tEnd - t0) / 1e9,
      rssBeforeKiB,
      rssPeakKiB,
      rssGrowthKiB: rssPeakKiB - rssBeforeKiB,
      reply: final.text,
      sendMBps: o.sizeBytes / 1e6 / (Number(tSent - tSend) / 1e9),
      tailSeconds: Number(tEnd - tSent) / 1e9,
      samples: samples + 1,
    };
  } finally {
    clearTimeout(timer);
    if (sampler) clearInterval(sampler);
    if (!socket.destroyed) setTimeout(() => socket.destroy(), 2000).unref();
  }
}
