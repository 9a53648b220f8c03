// Hostile message content (issue 11, break 2): does content built to be
// expensive cost Tern more than plain text of the same size? One Tern
// (configured like the `tern` peer of bench/peers.ts, pinned to CPU 0; this
// client on CPU 1) gets, one after another, R times each:
//
//   plain    78-octet text lines (the yardstick; accepted, so it is also
//            written and fsynced, which the refused kinds are not)
//   lf       bare LF only         \
//   cr       bare CR only          |  refused after the end of data
//   nul      NUL only              |  (RFC 5321 §4.1.1.4, §2.3.8; RFC 6152 §3)
//   long     64 KiB lines          /  (RFC 5321 §4.5.3.1.6: 1000 octets)
//   empty    empty lines (CRLF only)         \  valid, accepted: the most
//   short    one-octet lines ("a" CRLF)       |  line work per octet
//   dots     lines of one "." (".." stuffed) /   there is
//
// each sent after a short header as DATA (ended by CRLF.CRLF) and as one
// BDAT … LAST chunk, SIZE octets each, with the message size limit above
// SIZE. Per case: wall time from the first content octet written to the
// final reply, the server's CPU time over the same span, and both as a ratio
// to plain text over the same command.
//
// Then a legitimate 1 KB message (a new connection, EHLO … DATA, QUIT)
// PROBES times alone, and PROBES times again while 4 connections (lf, cr,
// nul, long; DATA) send hostile content over and over: connect → 250 time,
// median and max.
//
//   node bench/adversarial.ts [--mb SIZE_MB] [--runs R] [--probes N] [--only KINDS] [--json FILE] [--write]
//
// --mb: content size in MiB (default 20, at most 200); --only: comma list
// of kinds (plain is always run); --write: also write docs/adversarial.md.
// Every exchange has a deadline and the whole run one more (--timeout
// seconds, default 600): it always stops by itself.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { cli, cpuMs, haveTaskset, machine, median, pinSelf, ROOT } from './lib.ts';
import { MiB, startTernPeer } from './peers.ts';
import type { Peer } from './peers.ts';

const args = cli();
const SIZE_MB = Math.min(200, Math.max(1, args.num('mb', 20)));
const SIZE = Math.round(SIZE_MB * MiB);
const RUNS = Math.min(20, Math.max(1, args.num('runs', 3)));
const PROBES = Math.min(100, Math.max(1, args.num('probes', 10)));
/** Connections sending over and over while the probes run; the hostile ones are these kinds. */
const LOADERS = 4;
const HOSTILE = ['lf', 'cr', 'nul', 'long'];
const TIMEOUT_MS = args.num('timeout', 600) * 1000;
const ONLY = args.str('only')?.split(',');
const jsonOut = args.str('json');
/** One exchange (a whole message, or a probe): past it the socket is dropped and the run fails. */
const EXCHANGE_MS = 120_000;
const CHUNK = 64 * 1024;

interface Kind { name: string; unit: string; what: string; valid: boolean }

const KINDS: Kind[] = [
  { name: 'plain', unit: 'y'.repeat(76) + '\r\n', what: '78-octet text lines', valid: true },
  { name: 'lf', unit: '\n', what: 'bare LF', valid: false },
  { name: 'cr', unit: '\r', what: 'bare CR', valid: false },
  { name: 'nul', unit: '\0', what: 'NUL', valid: false },
  { name: 'long', unit: 'a'.repeat(CHUNK - 2) + '\r\n', what: '64 KiB lines', valid: false },
  { name: 'empty', unit: '\r\n', what: 'empty lines', valid: true },
  { name: 'short', unit: 'a\r\n', what: 'one-octet lines', valid: true },
  { name: 'dots', unit: '..\r\n', what: 'one-dot lines, sent as ".."', valid: true },
];

const HEADER = 'From: <load@load.test>\r\nTo: <user@tern.test>\r\nSubject: adversarial content probe\r\n\r\n';

/** A 64 KiB block of the kind's unit, and how the content ends: CRLF first when it does not already. */
function block(kind: Kind): Buffer {
  const s = kind.unit.repeat(Math.ceil(CHUNK / kind.unit.length)).slice(0, CHUNK);
  return Buffer.from(s, 'latin1');
}

/** Replies off a socket: next() resolves with the next complete reply's last line. */
class Replies {
  #buf = '';
  #ready: string[] = [];
  #waiting: { ok: (l: string) => void; fail: (e: Error) => void } | null = null;
  #error: Error | null = null;

  constructor(socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.#buf += d;
      for (let lf = this.#buf.indexOf('\n'); lf >= 0; lf = this.#buf.indexOf('\n')) {
        const line = this.#buf.slice(0, lf).trimEnd();
        this.#buf = this.#buf.slice(lf + 1);
        if (line[3] === '-') continue; // a multi-line reply goes on
        const w = this.#waiting;
        this.#waiting = null;
        if (w) w.ok(line);
        else this.#ready.push(line);
      }
    });
    const fail = (e: Error): void => {
      this.#error ??= e;
      const w = this.#waiting;
      this.#waiting = null;
      w?.fail(this.#error);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  next(): Promise<string> {
    const r = this.#ready.shift();
    if (r !== undefined) return Promise.resolve(r);
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((ok, fail) => (this.#waiting = { ok, fail }));
  }
}

/** A client connection with the envelope set up (EHLO, MAIL, RCPT), ready for DATA or BDAT. */
async function openTransaction(port: number, signal: AbortSignal): Promise<{ socket: net.Socket; replies: Replies; expect: (code: string) => Promise<string> }> {
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  const onAbort = (): void => void socket.destroy(new Error('aborted'));
  signal.addEventListener('abort', onAbort, { once: true });
  socket.once('close', () => signal.removeEventListener('abort', onAbort));
  const replies = new Replies(socket);
  const expect = async (code: string): Promise<string> => {
    const line = await replies.next();
    if (!line.startsWith(code)) throw new Error(`expected ${code}, got: ${line}`);
    return line;
  };
  await expect('220');
  socket.write('EHLO load.test\r\n');
  await expect('250');
  socket.write('MAIL FROM:<load@load.test>\r\n');
  await expect('250');
  socket.write('RCPT TO:<user@tern.test>\r\n');
  await expect('250');
  return { socket, replies, expect };
}

/** Write `size` octets of the kind's content (after HEADER), then `tail`, honouring back-pressure. */
async function sendContent(socket: net.Socket, kind: Kind, size: number, tail: string): Promise<void> {
  const b = block(kind);
  const write = (buf: Buffer): Promise<void> | null =>
    socket.write(buf) ? null : new Promise<void>((ok, fail) => {
      const done = (): void => {
        socket.off('drain', done);
        socket.off('close', closed);
        ok();
      };
      const closed = (): void => {
        socket.off('drain', done);
        fail(new Error('connection closed while sending'));
      };
      socket.on('drain', done);
      socket.on('close', closed);
    });
  let w = write(Buffer.from(HEADER, 'latin1'));
  if (w) await w;
  let left = size - HEADER.length;
  while (left > 0) {
    const part = left >= b.length ? b : b.subarray(0, left);
    left -= part.length;
    w = write(part);
    if (w) await w;
  }
  if (tail) {
    w = write(Buffer.from(tail, 'latin1'));
    if (w) await w;
  }
}

/** DATA's end: CRLF.CRLF, without doubling a CRLF the content already ends with. */
function dataEnd(kind: Kind, size: number): string {
  const b = block(kind);
  const lastTwo = b.subarray(0, ((size - HEADER.length - 1) % b.length) + 1).subarray(-2).toString('latin1');
  return lastTwo === '\r\n' ? '.\r\n' : '\r\n.\r\n';
}

interface Timing { seconds: number; cpuMs: number; reply: string }

/** One message of `kind` over DATA or BDAT; the time from the first content octet to the final reply. */
async function oneMessage(p: Peer, kind: Kind, verb: 'DATA' | 'BDAT', signal: AbortSignal): Promise<Timing> {
  const { socket, expect, replies } = await openTransaction(p.port, signal);
  const deadline = setTimeout(() => socket.destroy(new Error(`no reply within ${EXCHANGE_MS} ms`)), EXCHANGE_MS);
  try {
    let cpu0: number;
    let t0: bigint;
    if (verb === 'DATA') {
      socket.write('DATA\r\n');
      await expect('354');
      cpu0 = cpuMs(p.pids());
      t0 = process.hrtime.bigint();
      await sendContent(socket, kind, SIZE, dataEnd(kind, SIZE));
    } else {
      cpu0 = cpuMs(p.pids());
      t0 = process.hrtime.bigint();
      socket.write(`BDAT ${SIZE} LAST\r\n`);
      await sendContent(socket, kind, SIZE, '');
    }
    const reply = await replies.next();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = cpuMs(p.pids()) - cpu0;
    if (kind.valid !== reply.startsWith('250')) throw new Error(`${kind.name} over ${verb}: unexpected reply ${reply}`);
    socket.end('QUIT\r\n');
    return { seconds, cpuMs: cpu, reply };
  } finally {
    clearTimeout(deadline);
    setTimeout(() => socket.destroy(), 1000).unref();
  }
}

/** A legitimate 1 KB message on a new connection: connect → 250 after DATA, in ms. */
async function probe(p: Peer, signal: AbortSignal): Promise<number> {
  const t0 = process.hrtime.bigint();
  const { socket, expect } = await openTransaction(p.port, signal);
  const deadline = setTimeout(() => socket.destroy(new Error(`probe: no reply within ${EXCHANGE_MS} ms`)), EXCHANGE_MS);
  try {
    socket.write('DATA\r\n');
    await expect('354');
    const line = 'z'.repeat(62) + '\r\n';
    socket.write(HEADER + line.repeat(Math.floor((1024 - HEADER.length) / line.length)) + '.\r\n');
    await expect('250');
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    socket.end('QUIT\r\n');
    return ms;
  } finally {
    clearTimeout(deadline);
    setTimeout(() => socket.destroy(), 1000).unref();
  }
}

/** A connection that sends `kind` over DATA, message after message, until `signal` aborts. */
async function sender(port: number, kind: Kind, signal: AbortSignal, sent: { messages: number; goingAt: number }): Promise<void> {
  while (!signal.aborted) {
    try {
      const { socket, expect } = await openTransaction(port, signal);
      try {
        while (!signal.aborted) {
          socket.write('DATA\r\n');
          await expect('354');
          await sendContent(socket, kind, SIZE, dataEnd(kind, SIZE));
          await expect(kind.valid ? '250' : '5');
          if (++sent.messages === sent.goingAt) parentPort?.postMessage('going');
          socket.write('MAIL FROM:<load@load.test>\r\n');
          await expect('250');
          socket.write('RCPT TO:<user@tern.test>\r\n');
          await expect('250');
        }
      } finally {
        socket.destroy();
      }
    } catch (e) {
      if (!signal.aborted) throw e;
    }
  }
}

interface SendersJob { port: number; kinds: string[] }

/**
 * Worker thread: one sender per kind until told to stop, then the number of
 * messages answered. Apart from the probes' thread, so that writing the
 * flood does not delay reading the probe's replies (both on the client CPU).
 */
async function runSenders(job: SendersJob): Promise<void> {
  const stop = new AbortController();
  parentPort!.once('message', () => stop.abort());
  const kinds = job.kinds.map((n) => KINDS.find((k) => k.name === n)!);
  // 'going' once as many messages have been answered as there are senders: the load is on.
  const sent = { messages: 0, goingAt: kinds.length };
  await Promise.all(kinds.map((k) => sender(job.port, k, stop.signal, sent)));
  parentPort!.postMessage(sent.messages);
}

/** PROBES legitimate messages while `kinds` are sent over and over on other connections; their ms and how many of those were answered. */
async function probesUnderLoad(p: Peer, kinds: string[], signal: AbortSignal): Promise<{ ms: number[]; messages: number }> {
  const job: SendersJob = { port: p.port, kinds };
  const worker = new Worker(new URL(import.meta.url), { workerData: job, argv: process.argv.slice(2) });
  let going: () => void = () => {};
  const onGoing = new Promise<void>((ok) => (going = ok));
  const result = new Promise<number>((ok, fail) => {
    worker.on('message', (m: number | 'going') => (m === 'going' ? going() : ok(m)));
    worker.once('error', fail);
    worker.once('exit', (code) => fail(new Error(`senders exited ${code}`)));
  });
  const ms: number[] = [];
  try {
    const timeout = new Promise<never>((_, fail) => setTimeout(() => fail(new Error('the senders did not get going')), EXCHANGE_MS).unref());
    await Promise.race([onGoing, result, timeout]);
    for (let i = 0; i < PROBES; i++) ms.push(await probe(p, signal));
  } finally {
    worker.postMessage('stop');
  }
  const messages = await result;
  await worker.terminate();
  return { ms, messages };
}

interface CaseResult { kind: string; what: string; verb: 'DATA' | 'BDAT'; seconds: number[]; cpuMs: number[]; reply: string; ratio: number; cpuRatio: number }

export interface AdversarialResult {
  kind: 'adversarial';
  command: string;
  sizeBytes: number;
  runs: number;
  cases: CaseResult[];
  probes: { aloneMs: number[]; underPlainMs: number[]; plainMessages: number; underAttackMs: number[]; attackMessages: number };
  machine: ReturnType<typeof machine>;
  tern: string;
  seconds: number;
}

async function main(): Promise<AdversarialResult> {
  const t0 = Date.now();
  const host = machine(); // before pinning: the CPU count is this process's affinity
  pinSelf();
  const stopAll = new AbortController();
  const dns = await startDnsServer({});
  let p: Peer | undefined;
  try {
    p = await startTernPeer('tern', dns.address, { messageSize: Math.max(128 * MiB, SIZE + MiB) });
    const kinds = KINDS.filter((k) => k.name === 'plain' || !ONLY || ONLY.includes(k.name));
    console.log(`adversarial: ${SIZE_MB} MiB per message, ${RUNS} run(s) each, Tern pid ${p.pids().join(",")}${haveTaskset ? ' on CPU 0' : ' (not pinned)'}`);
    // Warm-up (unmeasured): JIT for the paths every kind takes.
    for (const k of kinds) for (const verb of ['DATA', 'BDAT'] as const) await oneMessage(p, k, verb, stopAll.signal);
    const cases: CaseResult[] = [];
    for (const verb of ['DATA', 'BDAT'] as const) {
      const byKind = new Map<string, Timing[]>();
      // Interleaved rounds, so that a burst of other work on the machine hits every kind alike.
      for (let r = 0; r < RUNS; r++) {
        for (const k of kinds) {
          const t = await oneMessage(p, k, verb, stopAll.signal);
          byKind.set(k.name, [...(byKind.get(k.name) ?? []), t]);
        }
      }
      const plain = byKind.get('plain')!;
      const plainS = median(plain.map((t) => t.seconds));
      const plainCpu = median(plain.map((t) => t.cpuMs));
      for (const k of kinds) {
        const ts = byKind.get(k.name)!;
        const seconds = ts.map((t) => t.seconds);
        const cpu = ts.map((t) => t.cpuMs);
        const c: CaseResult = {
          kind: k.name, what: k.what, verb, seconds, cpuMs: cpu, reply: ts[0]!.reply,
          ratio: median(seconds) / plainS, cpuRatio: median(cpu) / Math.max(plainCpu, 1),
        };
        cases.push(c);
        console.log(`  ${verb} ${k.name.padEnd(6)} ${median(seconds).toFixed(3)} s (x${c.ratio.toFixed(2)}), server CPU ${median(cpu).toFixed(0)} ms (x${c.cpuRatio.toFixed(2)}); ${c.reply.slice(0, 60)}`);
      }
    }

    const aloneMs: number[] = [];
    for (let i = 0; i < PROBES; i++) aloneMs.push(await probe(p, stopAll.signal));
    const show = (what: string, ms: number[]) => `  1 KB message ${what}: median ${median(ms).toFixed(1)} ms, max ${Math.max(...ms).toFixed(1)} ms`;
    console.log(show('alone', aloneMs));
    const plainLoad = await probesUnderLoad(p, Array(LOADERS).fill('plain'), stopAll.signal);
    console.log(`${show(`under ${LOADERS} connections sending plain text`, plainLoad.ms)} (${plainLoad.messages} of their messages answered meanwhile)`);
    const attack = await probesUnderLoad(p, HOSTILE, stopAll.signal);
    console.log(`${show(`under ${LOADERS} hostile connections (${HOSTILE.join(', ')})`, attack.ms)} (${attack.messages} of their messages refused meanwhile)`);
    return {
      kind: 'adversarial',
      command: `node bench/adversarial.ts ${process.argv.slice(2).join(' ')}`.trim(),
      sizeBytes: SIZE,
      runs: RUNS,
      cases,
      probes: { aloneMs, underPlainMs: plainLoad.ms, plainMessages: plainLoad.messages, underAttackMs: attack.ms, attackMessages: attack.messages },
      machine: { ...host, loadavg: machine().loadavg },
      tern: gitHead(),
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    stopAll.abort();
    await p?.stop();
    await dns.close();
  }
}

function gitHead(): string {
  try {
    const head = fs.readFileSync(path.join(ROOT, '.git/HEAD'), 'utf8').trim();
    const ref = head.startsWith('ref: ') ? fs.readFileSync(path.join(ROOT, '.git', head.slice(5)), 'utf8').trim() : head;
    return ref.slice(0, 7);
  } catch {
    return 'unknown';
  }
}

export function renderAdversarial(d: AdversarialResult): string {
  const f = (x: number, n = 2) => x.toFixed(n);
  const rows = d.cases.map((c) =>
    `| ${c.verb} | ${c.kind} (${c.what}) | ${f(median(c.seconds), 3)} | ${f(c.ratio)}× | ${f(median(c.cpuMs), 0)} | ${f(c.cpuRatio)}× | ${c.reply.slice(0, 48).replace(/\|/g, '\\|')} |`);
  const m = d.machine;
  return [
    '# Hostile message content',
    '',
    `Generated by \`${d.command}\` (bench/adversarial.ts) on ${m.date}, Tern at ${d.tern}, ${f(d.seconds, 0)} s in all. ` +
      `${(d.sizeBytes / MiB).toFixed(0)} MiB of content per message, median of ${d.runs} interleaved run(s); time from the first content octet to the final reply, and the server's CPU time (user+system, /proc) over it, each also as a ratio to plain text over the same command. ` +
      'The plain, empty, short and dots messages are accepted (written and fsynced); the others are refused after the end of data.',
    '',
    `Machine: ${m.nproc} CPUs (${m.cpu}), ${m.kernel}, Node ${m.node}; ${m.pinned ? 'Tern pinned to CPU 0, the client to CPU 1' : 'not pinned'}; load average at the end ${m.loadavg.map((x) => x.toFixed(2)).join(', ')}.`,
    '',
    '| command | content | seconds | vs plain | server CPU ms | vs plain | reply |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    `A legitimate 1 KB message (new connection to 250), ${d.probes.aloneMs.length} probes each: alone, median ${f(median(d.probes.aloneMs), 1)} ms (max ${f(Math.max(...d.probes.aloneMs), 1)}); ` +
      `while ${LOADERS} other connections send plain text over DATA, median ${f(median(d.probes.underPlainMs), 1)} ms (max ${f(Math.max(...d.probes.underPlainMs), 1)}; ${d.probes.plainMessages} of their messages accepted meanwhile); ` +
      `while ${LOADERS} connections send bare LF, bare CR, NUL and 64 KiB lines over DATA, median ${f(median(d.probes.underAttackMs), 1)} ms (max ${f(Math.max(...d.probes.underAttackMs), 1)}; ${d.probes.attackMessages} of their messages refused meanwhile). ` +
      'The senders run in a worker thread of the client, apart from the probes.',
    '',
  ].join('\n');
}

/** The whole run, with its watchdog: it always ends by itself. */
async function runMain(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`adversarial: the whole run took over ${TIMEOUT_MS / 1000} s; giving up`);
    process.exit(1);
  }, TIMEOUT_MS);
  watchdog.unref();
  const result = await main();
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(result, null, 2) + '\n');
  if (args.flag('write')) {
    fs.writeFileSync(path.join(ROOT, 'docs/adversarial.md'), renderAdversarial(result));
    console.log('wrote docs/adversarial.md');
  }
}

// The same file is the senders' worker thread (probesUnderLoad).
if (isMainThread) await runMain();
else await runSenders(workerData as SendersJob);
