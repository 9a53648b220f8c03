// Accept throughput, side by side: smtp-source sends N messages over 20
// sessions to each peer in turn, and the clock is smtp-source's wall time
// (every message has had its 250 after DATA). Peers, each pinned to CPU 0
// (taskset) with the load generator and this driver on CPU 1:
//
//   tern     as a user runs it: durable spool, local delivery to Maildir for
//            the recipient's domain, every default kept (inbound SPF/DKIM/
//            DMARC checks on, info logs to a file). Its `dns.servers` points at
//            a loopback DNS server with empty zones (test/helpers/dns-server.ts)
//            so that its lookups (SPF, DMARC, iprev for 127.0.0.1) get a quick
//            NXDOMAIN from this machine rather than the Internet.
//   postfix  a private instance (test/helpers/postfix.ts): smtpd into its real
//            queue (fsynced), then qmgr hands each message to discard(8).
//   sink     Postfix's smtp-sink: SMTP with no disk, the upper bound.
//
// Figures: messages/s (N / smtp-source wall time); server CPU ms per message,
// measured from /proc/<pid>/stat over the run *including* the delivery that
// follows acceptance (we wait until Tern's Maildir / Postfix's log has all N
// before reading the CPU counters); medians and min-max over interleaved runs
// (tern, postfix, sink, tern, ...); Tern/peer ratios pair by pair, median.
//
//   node bench/accept.ts [--quick] [--runs R] [--messages N] [--json FILE]

import fs from 'node:fs';
import path from 'node:path';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { postfixAvailable, postfixProcesses, startPostfix } from '../test/helpers/postfix.ts';
import { freePort } from '../test/helpers/server.ts';
import {
  cli, cpuMeter, haveTaskset, machine, median, pinPids, pinSelf, runSource, SERVER_CPU, spread, startSink, startTern, tempDir, waitUntil,
} from './lib.ts';
import type { Spread } from './lib.ts';

const args = cli();
const QUICK = args.flag('quick');
const RUNS = args.num('runs', QUICK ? 1 : 3);
const SESSIONS = args.num('sessions', 20);
const RUN_TIMEOUT_MS = args.num('timeout', 120) * 1000;
const jsonOut = args.str('json');

interface Scenario { name: string; size: number; messages: number; reuse: boolean }

const scale = args.num('messages', 0);
const SCENARIOS: Scenario[] = QUICK
  ? [
      { name: '1 KB, new connection per message', size: 1024, messages: scale || 1000, reuse: false },
      { name: '1 KB, many messages per connection', size: 1024, messages: scale || 1000, reuse: true },
    ]
  : [
      { name: '1 KB, new connection per message', size: 1024, messages: scale || 5000, reuse: false },
      { name: '1 KB, many messages per connection', size: 1024, messages: scale || 5000, reuse: true },
      { name: '100 KB, new connection per message', size: 100 * 1024, messages: scale ? Math.ceil(scale / 5) : 1000, reuse: false },
    ];

type Peer = 'tern' | 'postfix' | 'sink';
const PEERS: Peer[] = ['tern', 'postfix', 'sink'];

interface Run { peer: Peer; seconds: number; rate: number; drainSeconds: number; cpuMsPerMsg: number }

interface Target {
  port: number;
  to: string;
  pids: () => number[];
  /** Messages fully handled (delivered / discarded / sunk) so far. */
  done: () => number;
}

/** Count "status=sent" lines in a growing log, reading only what is new. */
function logCounter(file: string): () => number {
  let offset = 0;
  let count = 0;
  let rest = '';
  return () => {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return count;
    }
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        offset += n;
        const text = rest + buf.subarray(0, n).toString('latin1');
        const lines = text.split('\n');
        rest = lines.pop()!;
        for (const l of lines) if (l.includes(' status=sent ')) count++;
      }
    } finally {
      fs.closeSync(fd);
    }
    return count;
  };
}

async function measure(peer: Peer, t: Target, s: Scenario): Promise<Run> {
  const done0 = t.done();
  const cpu = cpuMeter(t.pids);
  const r = await runSource({
    host: '127.0.0.1', port: t.port, messages: s.messages, sessions: SESSIONS, size: s.size, reuse: s.reuse,
    from: 'load@load.test', to: t.to, timeoutMs: RUN_TIMEOUT_MS,
  });
  if (r.status !== 0) throw new Error(`${peer}: smtp-source exited ${r.status} after ${r.seconds.toFixed(1)}s\n${r.stderr}`);
  const t0 = Date.now();
  const ok = await waitUntil(() => t.done() - done0 >= s.messages, RUN_TIMEOUT_MS, 20);
  const drainSeconds = r.seconds + (Date.now() - t0) / 1000;
  if (!ok) throw new Error(`${peer}: only ${t.done() - done0} of ${s.messages} handled${r.stderr ? `\nsmtp-source: ${r.stderr}` : ''}`);
  if (r.stderr.trim()) console.warn(`  ${peer}: smtp-source said: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
  return { peer, seconds: r.seconds, rate: s.messages / r.seconds, drainSeconds, cpuMsPerMsg: cpu() / s.messages };
}

export interface PeerSummary { rate: Spread; cpuMsPerMsg: Spread; drainSeconds: Spread }
export interface ScenarioResult extends Scenario {
  sessions: number;
  runs: Run[];
  summary: Record<Peer, PeerSummary>;
  /** Tern/peer, median of run-by-run ratios (rate: >1 = Tern faster; CPU: <1 = Tern cheaper). */
  ratios: Record<'postfix' | 'sink', { rate: number; cpuMsPerMsg: number }>;
}
export interface AcceptResult { kind: 'accept'; quick: boolean; runsEach: number; sessions: number; machine: ReturnType<typeof machine>; scenarios: ScenarioResult[] }

async function main(): Promise<void> {
  if (!postfixAvailable()) throw new Error('needs root and Debian postfix (scripts/install-test-deps.sh)');
  pinSelf();
  const dir = tempDir('tern-bench-accept-');
  const dns = await startDnsServer({});
  const ternPort = await freePort('127.0.0.1');
  const dataDir = path.join(dir, 'data');
  const tern = await startTern({
    hostname: 'bench.tern.test',
    dataDir,
    listeners: [{ role: 'smtp', address: '127.0.0.1', port: ternPort }],
    domains: [{ name: 'tern.test', mailboxes: ['user'] }],
    dns: { servers: [dns.address] },
  }, dir, SERVER_CPU);
  const maildir = path.join(dataDir, 'mailboxes', 'tern.test', 'user', 'new');
  const ternDone = () => {
    try {
      return fs.readdirSync(maildir).length;
    } catch {
      return 0;
    }
  };

  const postfix = await startPostfix({
    address: '127.0.0.1',
    domain: 'pf.test',
    mainCf: { virtual_transport: 'discard', default_process_limit: '100' },
  });
  const pfPids = () => postfixProcesses(postfix);
  pinPids(SERVER_CPU, pfPids());
  const pfDone = logCounter(path.join(postfix.dir, 'maillog'));

  const sinkPort = await freePort('127.0.0.1');
  const sink = startSink('127.0.0.1', sinkPort, SERVER_CPU);
  await waitUntil(() => sink.child.pid !== undefined, 1000);
  await new Promise((r) => setTimeout(r, 200));

  const targets: Record<Peer, Target> = {
    tern: { port: ternPort, to: 'user@tern.test', pids: () => [tern.pid], done: ternDone },
    postfix: { port: postfix.port, to: 'user@pf.test', pids: pfPids, done: pfDone },
    // smtp-sink is one process; taskset is its parent, which exec()s it (same pid).
    sink: { port: sinkPort, to: 'user@sink.test', pids: () => [sink.child.pid!], done: sink.count },
  };

  const scenarios: ScenarioResult[] = [];
  try {
    // Warm-up, not measured: JIT for Tern, process pools for Postfix.
    for (const peer of PEERS) await measure(peer, targets[peer], { name: 'warm-up', size: 1024, messages: 200, reuse: false });
    for (const s of SCENARIOS) {
      console.log(`accept: ${s.name}: ${s.messages} x ${s.size} B, ${SESSIONS} sessions, ${RUNS} run(s) each`);
      const runs: Run[] = [];
      for (let i = 0; i < RUNS; i++) {
        for (const peer of PEERS) {
          const run = await measure(peer, targets[peer], s);
          console.log(`  ${peer.padEnd(8)} ${run.rate.toFixed(0).padStart(6)} msg/s  ${run.cpuMsPerMsg.toFixed(3)} ms CPU/msg  (all handled after ${run.drainSeconds.toFixed(2)} s)`);
          runs.push(run);
        }
      }
      const of = (p: Peer) => runs.filter((r) => r.peer === p);
      const summary = Object.fromEntries(PEERS.map((p) => [p, {
        rate: spread(of(p).map((r) => r.rate)),
        cpuMsPerMsg: spread(of(p).map((r) => r.cpuMsPerMsg)),
        drainSeconds: spread(of(p).map((r) => r.drainSeconds)),
      }])) as Record<Peer, PeerSummary>;
      const ratio = (p: 'postfix' | 'sink') => ({
        rate: median(of('tern').map((t, i) => t.rate / of(p)[i]!.rate)),
        cpuMsPerMsg: median(of('tern').map((t, i) => t.cpuMsPerMsg / of(p)[i]!.cpuMsPerMsg)),
      });
      const result: ScenarioResult = { ...s, sessions: SESSIONS, runs, summary, ratios: { postfix: ratio('postfix'), sink: ratio('sink') } };
      console.log(`  tern/postfix: ${result.ratios.postfix.rate.toFixed(2)}x msg/s, ${result.ratios.postfix.cpuMsPerMsg.toFixed(2)}x CPU/msg; tern/sink: ${result.ratios.sink.rate.toFixed(2)}x msg/s, ${result.ratios.sink.cpuMsPerMsg.toFixed(2)}x CPU/msg`);
      scenarios.push(result);
    }
  } finally {
    await tern.stop();
    await postfix.stop();
    sink.stop();
    await dns.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const out: AcceptResult = { kind: 'accept', quick: QUICK, runsEach: RUNS, sessions: SESSIONS, machine: machine(), scenarios };
  if (!haveTaskset) console.log('  (not pinned: taskset missing or fewer than 2 CPUs)');
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(out, null, 2));
}

await main();
