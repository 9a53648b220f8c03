// Per-message latency under load, for any SMTP server: our own load client
// on raw sockets (no PIPELINING: EHLO, MAIL, RCPT, DATA one at a time, each
// waiting for its reply), `sessions` at once, `messages` in all, a new
// connection per message unless `reuse`. A message's latency is the time
// from writing its end of data ("\r\n.\r\n", in the same write as the
// content) to reading the reply to it, so it is the server's work on the
// message after the last byte: parsing what is left, the checks, the spool
// commit (fsync) before the 250.
//
// The client is meant to stay out of the way at a few thousand messages per
// second on one core: the message is built once, every command is one
// write, replies are read as latin1 text and only their last line is looked
// at (multi-line "250-" replies are skipped line by line).

import net from 'node:net';

export interface LatencyOptions {
  host: string;
  port: number;
  sessions: number;
  messages: number;
  /** Message content in bytes (header and body, CRLF line ends), before the final ".\r\n". */
  size: number;
  /** Many messages per connection (otherwise one message, then QUIT). */
  reuse: boolean;
  from: string;
  to: string;
  /** Whole run; past it every socket is dropped and what is unfinished counts as errors. */
  timeoutMs: number;
}

export interface LatencyResult {
  /** Messages that got a 2xx after DATA, per second of the whole run. */
  rate: number;
  /** Milliseconds, over the messages that got a 2xx. */
  p50: number;
  p99: number;
  max: number;
  /** Wall time of the run. */
  seconds: number;
  /** Messages that did not get a 2xx (refused, dropped connection, timeout). */
  errors: number;
  /** The run hit timeoutMs. */
  timedOut: boolean;
  /** First few error descriptions, for a log line. */
  errorSamples: string[];
}

/**
 * Message content of exactly `size` bytes (the header at least), every line
 * ending in CRLF and at most 998 characters; nothing starts with a dot, so
 * no dot-stuffing is needed. The returned buffer ends with the end-of-data
 * marker: content + ".\r\n" (the content's own last CRLF is the first half
 * of "\r\n.\r\n").
 */
export function buildMessage(size: number, from: string, to: string): Buffer {
  const header =
    `From: <${from}>\r\nTo: <${to}>\r\nSubject: latency probe\r\n` +
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}\r\n` +
    `Message-ID: <latency.${process.pid}.${Date.now()}@load.test>\r\nMIME-Version: 1.0\r\n` +
    `Content-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const lines: string[] = [header];
  let left = size - header.length;
  const LINE = 76; // + CRLF = 78 octets
  while (left > 0) {
    // Each line is n characters + CRLF (n = 0: an empty line); never leave a 1-octet
    // tail, which no line fits. (Below header + 2 octets the size is overshot.)
    let n = Math.min(LINE, left - 2);
    if (left - (n + 2) === 1) n--;
    if (n < 0) n = 0;
    const line = 'x'.repeat(n) + '\r\n';
    lines.push(line);
    left -= line.length;
  }
  return Buffer.from(lines.join('') + '.\r\n', 'latin1');
}

type Step = 'greeting' | 'ehlo' | 'mail' | 'rcpt' | 'data' | 'content' | 'quit';

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export async function measureLatency(o: LatencyOptions): Promise<LatencyResult> {
  const content = buildMessage(o.size, o.from, o.to);
  const EHLO = 'EHLO load.test\r\n';
  const MAIL = `MAIL FROM:<${o.from}>\r\n`;
  const RCPT = `RCPT TO:<${o.to}>\r\n`;
  const DATA = 'DATA\r\n';
  const QUIT = 'QUIT\r\n';

  const latencies = new Float64Array(o.messages);
  let ok = 0;
  let errors = 0;
  let claimed = 0;
  let timedOut = false;
  const errorSamples: string[] = [];
  const sockets = new Set<net.Socket>();
  const note = (what: string): void => {
    if (errorSamples.length < 5) errorSamples.push(what);
  };

  const t0 = process.hrtime.bigint();

  /** One session: connections one after another until no message is left to claim. */
  const session = (): Promise<void> =>
    new Promise<void>((done) => {
      const next = (): void => {
        if (timedOut || claimed >= o.messages) return done();
        claimed++;
        connect();
      };

      const connect = (): void => {
        const socket = net.connect({ host: o.host, port: o.port, noDelay: true });
        sockets.add(socket);
        let step: Step = 'greeting';
        /** A message is claimed and not yet counted (ok or error). */
        let pending = true;
        let sentAt = 0n;
        let buf = '';
        let finished = false;

        const fail = (why: string): void => {
          if (pending) {
            pending = false;
            errors++;
            note(why);
          }
          finish();
        };
        const finish = (): void => {
          if (finished) return;
          finished = true;
          sockets.delete(socket);
          socket.destroy();
          // Not recursing from inside the socket's own event handler.
          setImmediate(next);
        };
        /** Claim the next message on this connection, or say goodbye. */
        const another = (): void => {
          if (o.reuse && !timedOut && claimed < o.messages) {
            claimed++;
            pending = true;
            step = 'mail';
            socket.write(MAIL);
          } else {
            step = 'quit';
            socket.write(QUIT);
          }
        };

        const onReply = (code: number, text: string): void => {
          switch (step) {
            case 'greeting':
              if (code !== 220) return fail(`greeting: ${text}`);
              step = 'ehlo';
              socket.write(EHLO);
              return;
            case 'ehlo':
              if (code !== 250) return fail(`EHLO: ${text}`);
              step = 'mail';
              socket.write(MAIL);
              return;
            case 'mail':
              if (code !== 250) return fail(`MAIL: ${text}`);
              step = 'rcpt';
              socket.write(RCPT);
              return;
            case 'rcpt':
              if (code !== 250 && code !== 251) return fail(`RCPT: ${text}`);
              step = 'data';
              socket.write(DATA);
              return;
            case 'data':
              if (code !== 354) return fail(`DATA: ${text}`);
              step = 'content';
              sentAt = process.hrtime.bigint();
              socket.write(content);
              return;
            case 'content': {
              const ms = Number(process.hrtime.bigint() - sentAt) / 1e6;
              if (code >= 200 && code < 300) {
                latencies[ok++] = ms;
                pending = false;
              } else return fail(`end of data: ${text}`);
              another();
              return;
            }
            case 'quit':
              finish();
              return;
          }
        };

        socket.setEncoding('latin1');
        socket.on('data', (chunk: string) => {
          buf = buf.length ? buf + chunk : chunk;
          // A reply ends with a line whose 4th character is not '-' (RFC 5321 §4.2.1).
          let start = 0;
          for (;;) {
            const lf = buf.indexOf('\n', start);
            if (lf < 0) break;
            const lineStart = start;
            start = lf + 1;
            if (buf.charCodeAt(lineStart + 3) === 0x2d /* - */ && lf - lineStart > 3) continue;
            const code = Number(buf.slice(lineStart, lineStart + 3));
            const text = buf.slice(lineStart, lf).trimEnd();
            // Everything up to here is consumed before acting on the reply.
            buf = buf.slice(start);
            start = 0;
            onReply(Number.isFinite(code) ? code : 0, text);
            if (finished) return;
          }
        });
        socket.on('error', (e) => fail(`${step}: ${e.message}`));
        socket.on('close', () => {
          // A close after our QUIT (with or without the 221) is the normal end.
          if (step === 'quit') finish();
          else fail(`${step}: connection closed`);
        });
      };

      next();
    });

  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((r) => {
    timer = setTimeout(() => {
      timedOut = true;
      for (const s of sockets) s.destroy();
      r();
    }, o.timeoutMs);
  });
  await Promise.race([Promise.all(Array.from({ length: o.sessions }, session)), timeout]);
  clearTimeout(timer);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (timedOut) {
    // Sessions see their sockets close and count the claimed messages; the
    // never-claimed rest are errors too.
    await new Promise((r) => setImmediate(r));
    errors = o.messages - ok;
    note(`timed out after ${o.timeoutMs} ms`);
  }

  const sorted = latencies.slice(0, ok).sort();
  return {
    rate: ok / seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: ok ? sorted[ok - 1]! : NaN,
    seconds,
    errors,
    timedOut,
    errorSamples,
  };
}
