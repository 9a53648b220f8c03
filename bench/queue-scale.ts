// Queue scale (issue 12, item 5): what a queue of N deferred messages
// costs Tern. N messages (100,000 by default) are sent through SMTP to a
// destination whose MX answers every RCPT with 451, so each is tried once
// and deferred (retry schedule 1h: none comes due during the run). Then:
//
//   idle CPU       the server's CPU (user + system, /proc/<pid>/stat) over
//                  --idle seconds while the deferred queue waits, before and
//                  after a restart;
//   queue list     wall time of `tern queue list --json` (output to a file,
//                  parsed and counted);
//   restart        graceful stop, then from spawning `tern serve` to the
//                  first 220 greeting on the SMTP port; and to "spool
//                  recovered" (every queue file read, in the background);
//   drain          the peer starts accepting; `tern queue retry --all`; time
//                  until the peer has every message, each counted by its
//                  X-Seq header (a second copy is a duplicate);
//   relay rate     for comparison, the same peer and settings relaying
//                  --fresh new messages end to end.
//
// Tern runs as a user runs it (bench/lib.ts startTern: `tern serve
// --config`, durable spool, info logs to a file) pinned to CPU 0; this
// driver, its SMTP sender and the peer (a small SMTP server written here)
// on CPU 1. DNS comes from a loopback server (test/helpers/dns-server.ts);
// the peer listens on 127.0.0.4. Inbound SPF/DKIM/DMARC checks are off:
// this measures the queue, not intake. Everything stops by itself
// (--timeout, minutes) and the temporary directory is removed.
//
//   node bench/queue-scale.ts [--n N] [--idle S] [--sessions S] [--fresh F] [--timeout MIN] [--json FILE]

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { freePort } from '../test/helpers/server.ts';
import { cli, countFiles, cpuMs, haveTaskset, LOAD_CPU, machine, pin, pinSelf, ROOT, rssKiB, SERVER_CPU, sleep, startTern, tempDir, waitUntil, type TernProcess } from './lib.ts';

const args = cli();
const N = args.num('n', 100_000);
const IDLE_SECONDS = args.num('idle', 30);
const SESSIONS = args.num('sessions', 20);
const FRESH = args.num('fresh', Math.min(10_000, Math.max(1000, Math.round(N / 10))));
const TIMEOUT_MIN = args.num('timeout', 60);
const jsonOut = args.str('json');
const PEER_HOST = '127.0.0.4';
const BODY = `${'The quick brown fox jumps over the lazy dog. '.repeat(20)}\r\n`;

// ---- the peer: an SMTP server that defers every RCPT, or accepts and counts ----

interface Peer {
  port: number;
  mode: 'defer' | 'accept';
  /** RCPTs answered 451. */
  deferred: number;
  /** Deliveries per X-Seq value. */
  seen: Map<string, number>;
  /** Unique X-Seq values starting with `prefix`. */
  unique(prefix: string): number;
  /** Deliveries in all (duplicates included) with that prefix. */
  total(prefix: string): number;
  close(): Promise<void>;
}

async function startPeer(host: string): Promise<Peer> {
  const port = await freePort(host);
  const counts = { Q: [0, 0], F: [0, 0] } as Record<string, [number, number]>;
  const peer: Peer = {
    port,
    mode: 'defer',
    deferred: 0,
    seen: new Map(),
    unique: (p) => counts[p]?.[0] ?? 0,
    total: (p) => counts[p]?.[1] ?? 0,
    close: () => new Promise((r) => server.close(() => r())),
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.setNoDelay(true);
    let rest = '';
    let inData = false;
    let rcpts = 0;
    let seq: string | null = null;
    s.setEncoding('latin1');
    s.write('220 peer.later.test ESMTP\r\n');
    s.on('data', (d: string) => {
      const lines = (rest + d).split('\r\n');
      rest = lines.pop()!;
      let out = '';
      for (const line of lines) {
        if (inData) {
          if (line === '.') {
            inData = false;
            if (seq) {
              const n = (peer.seen.get(seq) ?? 0) + 1;
              peer.seen.set(seq, n);
              const c = (counts[seq[0]!] ??= [0, 0]);
              c[1]++;
              if (n === 1) c[0]++;
            }
            out += '250 2.0.0 ok\r\n';
          } else if (seq === null && line.startsWith('X-Seq: ')) {
            seq = line.slice(7).trim();
          }
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO') out += '250-peer.later.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n';
        else if (verb === 'HELO') out += '250 peer.later.test\r\n';
        else if (verb === 'MAIL') {
          rcpts = 0;
          out += '250 2.1.0 ok\r\n';
        } else if (verb === 'RCPT') {
          if (peer.mode === 'defer') {
            peer.deferred++;
            out += '451 4.3.2 try again later\r\n';
          } else {
            rcpts++;
            out += '250 2.1.5 ok\r\n';
          }
        } else if (verb === 'DATA') {
          if (rcpts === 0) out += '554 5.5.1 no valid recipients\r\n';
          else {
            inData = true;
            seq = null;
            out += '354 go ahead\r\n';
          }
        } else if (verb === 'RSET' || verb === 'NOOP') {
          rcpts = 0;
          out += '250 2.0.0 ok\r\n';
        } else if (verb === 'QUIT') {
          s.end('221 2.0.0 bye\r\n');
          return;
        } else out += '502 5.5.2 not here\r\n';
      }
      if (out) s.write(out);
    });
  });
  await new Promise<void>((r) => server.listen(port, host, r));
  const close = peer.close;
  peer.close = async () => {
    for (const s of sockets) s.destroy();
    await close();
  };
  return peer;
}

// ---- the sender: S sessions, many messages per connection, pipelined ----

/** One reply (multi-line replies joined) from a line stream. */
class Replies {
  #lines: string[] = [];
  #rest = '';
  #waiters: ((code: number) => void)[] = [];
  #pendingCodes: number[] = [];
  constructor(s: net.Socket) {
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      const lines = (this.#rest + d).split('\r\n');
      this.#rest = lines.pop()!;
      for (const l of lines) {
        this.#lines.push(l);
        if (l[3] !== '-') {
          const code = Number(l.slice(0, 3));
          this.#lines = [];
          const w = this.#waiters.shift();
          if (w) w(code);
          else this.#pendingCodes.push(code);
        }
      }
    });
  }
  next(): Promise<number> {
    const c = this.#pendingCodes.shift();
    if (c !== undefined) return Promise.resolve(c);
    return new Promise((r) => this.#waiters.push(r));
  }
}

async function send(port: number, prefix: string, count: number, sessions: number): Promise<void> {
  let next = 0;
  const one = async () => {
    const s = net.connect(port, '127.0.0.1');
    s.setNoDelay(true);
    const replies = new Replies(s);
    const expect = async (want: number, what: string) => {
      const code = await replies.next();
      if (code !== want) throw new Error(`${what}: ${code}`);
    };
    await expect(220, 'greeting');
    s.write('EHLO load.test\r\n');
    await expect(250, 'EHLO');
    while (next < count) {
      const seq = `${prefix}${next++}`;
      s.write('MAIL FROM:<load@load.test>\r\nRCPT TO:<user@later.test>\r\nDATA\r\n');
      await expect(250, 'MAIL');
      await expect(250, 'RCPT');
      await expect(354, 'DATA');
      s.write(`From: <load@load.test>\r\nTo: <user@later.test>\r\nSubject: queue-scale ${seq}\r\nMessage-ID: <${seq}@load.test>\r\nX-Seq: ${seq}\r\n\r\n${BODY}.\r\n`);
      await expect(250, 'end of data');
    }
    s.end('QUIT\r\n');
  };
  await Promise.all(Array.from({ length: sessions }, one));
}

// ---- measuring ----

/** Seconds from now until the SMTP port answers with a 220 greeting. */
async function untilGreeting(port: number, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      const done = (v: boolean) => {
        s.destroy();
        resolve(v);
      };
      s.setEncoding('latin1');
      s.on('data', (d: string) => done(d.startsWith('220')));
      s.on('error', () => done(false));
      s.setTimeout(5000, () => done(false));
    });
    if (ok) return (performance.now() - t0) / 1000;
    await sleep(10);
  }
  throw new Error('no greeting');
}

/** Percent of one core used by `pid` over `seconds`. */
async function idleCpu(pid: number, seconds: number): Promise<number> {
  const c0 = cpuMs([pid]);
  await sleep(seconds * 1000);
  return ((cpuMs([pid]) - c0) / (seconds * 1000)) * 100;
}

/** Run `tern …` (pinned with the driver), stdout to a file; resolves with the wall time and exit status. */
async function ternCli(configFile: string, argv: string[], stdoutFile: string): Promise<{ seconds: number; status: number | null; stderr: string }> {
  const fd = fs.openSync(stdoutFile, 'w');
  const [cmd, cargs] = pin(LOAD_CPU, process.execPath, [path.join(ROOT, 'src/cli/main.ts'), ...argv, '--config', configFile]);
  const t0 = performance.now();
  const child = spawn(cmd, cargs, { stdio: ['ignore', fd, 'pipe'] });
  fs.closeSync(fd);
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (stderr += d));
  const status = await new Promise<number | null>((r) => child.once('exit', r));
  return { seconds: (performance.now() - t0) / 1000, status, stderr };
}

/** The `ms` of the "spool recovered" log line, once it is there. */
function recoveredMs(logFile: string): number | null {
  const text = fs.readFileSync(logFile, 'utf8');
  const line = text.split('\n').find((l) => l.includes('"spool recovered"'));
  if (!line) return null;
  return (JSON.parse(line) as { ms?: number }).ms ?? null;
}

export interface QueueScaleResult {
  n: number;
  fillSeconds: number;
  idleCpuPercent: number;
  idleCpuAfterRestartPercent: number;
  idleSeconds: number;
  rssMiB: number;
  listSeconds: number;
  listBytes: number;
  stopSeconds: number;
  greetingSeconds: number;
  recoveredSeconds: number;
  recoveryMs: number | null;
  retryAnswerSeconds: number;
  drainSeconds: number;
  drainRate: number;
  drainCpuMsPerMsg: number;
  freshCpuMsPerMsg: number;
  duplicates: number;
  fresh: number;
  freshRate: number;
  pinned: boolean;
  machine: ReturnType<typeof machine>;
}

async function main(): Promise<void> {
  pinSelf();
  const peer = await startPeer(PEER_HOST);
  const dns = await startDnsServer({ 'later.test': { MX: [{ preference: 10, exchange: 'mx.later.test' }] }, 'mx.later.test': { A: [PEER_HOST] } });
  const dir = tempDir('tern-qscale-');
  const smtpPort = await freePort('127.0.0.1');
  const config = {
    hostname: 'bench.tern.test',
    dataDir: path.join(dir, 'data'),
    listeners: [{ role: 'smtp', address: '127.0.0.1', port: smtpPort }],
    domains: [{ name: 'tern.test', mailboxes: ['alice'] }],
    trustedNetworks: ['127.0.0.0/8'],
    dns: { servers: [dns.address], timeout: '2s' },
    outbound: { port: peer.port, tls: 'none' },
    inbound: { enabled: false },
    limits: { connectionsPerIp: 1000 },
    // Tried once, then not again within the run: the queue waits.
    queue: { retrySchedule: ['1h'], maxLifetime: '5d' },
  };
  const configFile = path.join(dir, 'tern.yaml');
  const stateDir = path.join(dir, 'data', 'spool', 'state');
  const queueDir = path.join(dir, 'data', 'spool', 'queue');
  let tern: TernProcess | null = null;
  const cleanup = async () => {
    await tern?.stop().catch(() => {});
    await peer.close().catch(() => {});
    await dns.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const giveUp = setTimeout(() => {
    console.error(`queue-scale: gave up after ${TIMEOUT_MIN} minutes`);
    void cleanup().finally(() => process.exit(1));
  }, TIMEOUT_MIN * 60_000);
  giveUp.unref();

  try {
    tern = await startTern(config, dir, SERVER_CPU);
    const log = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
    log(`queue-scale: N=${N}, ${SESSIONS} sessions, pinned: ${haveTaskset}; tern pid ${tern.pid}, data in ${dir}`);

    // 1. Fill: N messages in, each tried once and deferred (451 at RCPT).
    let t0 = performance.now();
    const sending = send(smtpPort, 'Q', N, SESSIONS);
    const progress = setInterval(() => log(`  fill: ${peer.deferred} deferred at the peer, ${countFiles(stateDir)} state files`), 10_000);
    await sending;
    const acceptSeconds = (performance.now() - t0) / 1000;
    const filled = await waitUntil(() => countFiles(stateDir) >= N && peer.deferred >= N, TIMEOUT_MIN * 60_000, 200);
    clearInterval(progress);
    if (!filled) throw new Error(`only ${countFiles(stateDir)} of ${N} deferred`);
    const fillSeconds = (performance.now() - t0) / 1000;
    log(`filled: ${N} accepted in ${acceptSeconds.toFixed(1)} s, all deferred after ${fillSeconds.toFixed(1)} s`);
    await sleep(3000); // the last state writes and journal clean-up settle

    // 2. Idle CPU with N deferred.
    const idleCpuPercent = await idleCpu(tern.pid, IDLE_SECONDS);
    const rssMiB = rssKiB([tern.pid]) / 1024;
    log(`idle: ${idleCpuPercent.toFixed(2)} % of a core over ${IDLE_SECONDS} s (RSS ${rssMiB.toFixed(0)} MiB)`);

    // 3. tern queue list --json.
    const listFile = path.join(dir, 'list.json');
    const list = await ternCli(configFile, ['queue', 'list', '--json'], listFile);
    if (list.status !== 0) throw new Error(`queue list failed (${list.status}): ${list.stderr}`);
    const listBytes = fs.statSync(listFile).size;
    const listed = (JSON.parse(fs.readFileSync(listFile, 'utf8')) as unknown[]).length;
    if (listed !== N) throw new Error(`queue list: ${listed} of ${N}`);
    fs.rmSync(listFile);
    log(`queue list --json: ${list.seconds.toFixed(2)} s, ${listed} messages, ${(listBytes / 1e6).toFixed(1)} MB`);

    // 4. Restart: graceful stop, then spawn to greeting, and to every queue file read.
    t0 = performance.now();
    await tern.stop();
    const stopSeconds = (performance.now() - t0) / 1000;
    tern = null;
    const spawned = performance.now();
    const greeting = untilGreeting(smtpPort, 120_000);
    tern = await startTern(config, dir, SERVER_CPU);
    const greetingSeconds = await greeting;
    await waitUntil(() => recoveredMs(tern!.logFile) !== null, 600_000, 50);
    const recoveredSeconds = (performance.now() - spawned) / 1000;
    const recoveryMs = recoveredMs(tern.logFile);
    log(`restart: stop ${stopSeconds.toFixed(2)} s; spawn → greeting ${greetingSeconds.toFixed(2)} s; spawn → all ${N} queue files read ${recoveredSeconds.toFixed(2)} s (loading ${recoveryMs} ms)`);
    await sleep(2000);
    const idleCpuAfterRestartPercent = await idleCpu(tern.pid, IDLE_SECONDS);
    log(`idle after restart: ${idleCpuAfterRestartPercent.toFixed(2)} % of a core over ${IDLE_SECONDS} s`);

    // 5. The peer accepts; retry everything; count deliveries.
    peer.mode = 'accept';
    let cpu0 = cpuMs([tern.pid]);
    t0 = performance.now();
    const retry = await ternCli(configFile, ['queue', 'retry', '--all'], path.join(dir, 'retry.out'));
    if (retry.status !== 0) throw new Error(`retry --all failed: ${retry.stderr}`);
    const retryAnswerSeconds = retry.seconds;
    const drainProgress = setInterval(() => log(`  drain: ${peer.unique('Q')} of ${N} at the peer`), 10_000);
    const drained = await waitUntil(() => peer.unique('Q') >= N, TIMEOUT_MIN * 60_000, 100);
    clearInterval(drainProgress);
    if (!drained) throw new Error(`only ${peer.unique('Q')} of ${N} delivered`);
    const drainSeconds = (performance.now() - t0) / 1000;
    await waitUntil(() => countFiles(queueDir) === 0 && countFiles(stateDir) === 0, 120_000, 100);
    await sleep(2000); // a late second copy would show now
    const drainCpuMsPerMsg = (cpuMs([tern.pid]) - cpu0) / N;
    const duplicates = peer.total('Q') - peer.unique('Q');
    log(`drain: ${N} delivered in ${drainSeconds.toFixed(1)} s (${(N / drainSeconds).toFixed(0)} msg/s, ${drainCpuMsPerMsg.toFixed(2)} ms server CPU per message; retry --all answered in ${retryAnswerSeconds.toFixed(2)} s), duplicates: ${duplicates}`);

    // 6. For comparison: fresh mail relayed end to end to the same peer.
    cpu0 = cpuMs([tern.pid]);
    t0 = performance.now();
    await send(smtpPort, 'F', FRESH, SESSIONS);
    if (!(await waitUntil(() => peer.unique('F') >= FRESH, TIMEOUT_MIN * 60_000, 50))) throw new Error('fresh relay incomplete');
    const freshSeconds = (performance.now() - t0) / 1000;
    const freshCpuMsPerMsg = (cpuMs([tern.pid]) - cpu0) / FRESH;
    log(`relay of ${FRESH} fresh messages: ${(FRESH / freshSeconds).toFixed(0)} msg/s, ${freshCpuMsPerMsg.toFixed(2)} ms server CPU per message (receiving included)`);

    const result: QueueScaleResult = {
      n: N, fillSeconds, idleCpuPercent, idleCpuAfterRestartPercent, idleSeconds: IDLE_SECONDS, rssMiB,
      listSeconds: list.seconds, listBytes, stopSeconds, greetingSeconds, recoveredSeconds, recoveryMs,
      retryAnswerSeconds, drainSeconds, drainRate: N / drainSeconds, drainCpuMsPerMsg, freshCpuMsPerMsg, duplicates: duplicates + (peer.total('F') - peer.unique('F')),
      fresh: FRESH, freshRate: FRESH / freshSeconds, pinned: haveTaskset, machine: machine(),
    };
    console.log(`\nqueue-scale, ${N} deferred (pinned: ${haveTaskset}; load average at the end ${result.machine.loadavg.map((l) => l.toFixed(1)).join(' ')})`);
    console.log(`  idle CPU            ${idleCpuPercent.toFixed(2)} % of a core (after restart ${idleCpuAfterRestartPercent.toFixed(2)} %)   target < 2 %`);
    console.log(`  queue list --json   ${list.seconds.toFixed(2)} s                                   target < 5 s`);
    console.log(`  restart → greeting  ${greetingSeconds.toFixed(2)} s (all queue files read: ${recoveredSeconds.toFixed(2)} s)   target < 5 s`);
    console.log(`  drain after retry   ${drainSeconds.toFixed(1)} s, ${result.drainRate.toFixed(0)} msg/s; fresh relay ${result.freshRate.toFixed(0)} msg/s; duplicates ${result.duplicates}`);
    if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(result, null, 2) + '\n');
  } finally {
    clearTimeout(giveUp);
    await cleanup();
  }
}

await main();
