// Relay throughput, Tern vs Postfix, in one run: smtp-source sends N 1 KB
// messages over S sessions to the MTA, which relays them to Postfix's
// smtp-sink on another loopback address; the clock stops when the sink has
// received all N. Tern finds the sink by MX lookup (a DNS server on
// loopback); Postfix is given it as relayhost (it would need the system
// resolver for MX), which spares Postfix the lookups.
//
// Fair on a 2-core machine: each MTA is pinned to CPU 0 (taskset), the load
// generator and the sink to CPU 1; runs alternate Tern, Postfix, Tern, …;
// medians and ranges are reported. Both are durable (Tern fsyncs its queue
// file; Postfix its queue file), both log.
//
// Shared helpers are in bench/lib.ts; `npm run bench` (bench/run.ts) runs
// this after bench/accept.ts and bench/memory.ts.
//
//   node bench/relay.ts [--messages N] [--sessions S] [--runs R] [--json FILE]

import fs from 'node:fs';
import path from 'node:path';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { postfixAvailable, postfixProcesses, startPostfix } from '../test/helpers/postfix.ts';
import { freePort } from '../test/helpers/server.ts';
import { cli, cpuMeter, haveTaskset, LOAD_CPU, machine, median, pin, pinPids, pinSelf, SERVER_CPU, startSink, startTern, tempDir, waitUntil } from './lib.ts';
import type { Sink } from './lib.ts';
import { spawn } from 'node:child_process';

const args = cli();
const MESSAGES = args.num('messages', 2000);
const SESSIONS = args.num('sessions', 20);
const RUNS = args.num('runs', 3);
const SIZE = 1024;
const jsonOut = args.str('json');

interface Run { mta: string; seconds: number; acceptSeconds: number; rate: number; cpuMsPerMsg: number }
interface RelaySummary { mta: string; median: number; min: number; max: number; cpuMsPerMsg: number }
export interface RelayResult {
  messages: number;
  sessions: number;
  size: number;
  runs: Run[];
  tern: RelaySummary;
  postfix: RelaySummary;
  /** Tern/Postfix messages/s, median of run-by-run ratios. */
  ratioMedian: number;
  pinned: boolean;
  machine: ReturnType<typeof machine>;
}

async function load(port: number, sink: Sink, cpuPids: () => number[], mta: string): Promise<Run> {
  sink.reset();
  const cpu = cpuMeter(cpuPids);
  const t0 = process.hrtime.bigint();
  const [cmd, argv] = pin(LOAD_CPU, 'smtp-source', ['-s', String(SESSIONS), '-m', String(MESSAGES), '-l', String(SIZE), '-f', 'load@load.test', '-t', 'user@sink.test', `127.0.0.1:${port}`]);
  const src = spawn(cmd, argv, { stdio: 'ignore' });
  const accepted = new Promise<number>((r) => src.once('exit', () => r(Number(process.hrtime.bigint() - t0) / 1e9)));
  const ok = await waitUntil(() => sink.count() >= MESSAGES, Number(process.env.BENCH_TIMEOUT ?? 300_000));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const acceptSeconds = await accepted;
  if (!ok) throw new Error(`${mta}: after ${seconds}s only ${sink.count()} of ${MESSAGES} reached the sink`);
  return { mta, seconds, acceptSeconds, rate: MESSAGES / seconds, cpuMsPerMsg: cpu() / MESSAGES };
}

async function main(): Promise<void> {
  if (!postfixAvailable()) throw new Error('needs root and Debian postfix (scripts/install-test-deps.sh)');
  const sinkPort = await freePort('127.0.0.3');
  pinSelf();
  const sink = startSink('127.0.0.3', sinkPort, LOAD_CPU);
  const dns = await startDnsServer({ 'sink.test': { MX: [{ preference: 10, exchange: 'mx.sink.test' }] }, 'mx.sink.test': { A: ['127.0.0.3'] } });

  // Tern, configured as a user would run a relay (durable spool, info logs).
  const dir = tempDir('tern-bench-');
  const ternPort = await freePort('127.0.0.1');
  const tern = await startTern({
    hostname: 'bench.tern.test',
    dataDir: path.join(dir, 'data'),
    listeners: [{ role: 'smtp', address: '127.0.0.1', port: ternPort }],
    domains: [{ name: 'tern.test', mailboxes: ['alice'] }],
    trustedNetworks: ['127.0.0.0/8'],
    dns: { servers: [dns.address], timeout: '2s' },
    outbound: { port: sinkPort, tls: 'none' },
    limits: { connectionsPerIp: 1000 },
  }, dir, SERVER_CPU);

  // Postfix as a relay for 127.0.0.0/8, to the sink as relayhost.
  const postfix = await startPostfix({
    address: '127.0.0.1',
    domain: 'pf.test',
    mainCf: {
      relayhost: `[127.0.0.3]:${sinkPort}`,
      default_transport: 'smtp',
      relay_transport: 'smtp',
      mynetworks: '127.0.0.0/8',
      smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
      smtp_tls_security_level: 'none',
      default_process_limit: '100',
    },
  });
  const pfPids = () => postfixProcesses(postfix);
  pinPids(SERVER_CPU, pfPids());

  const runs: Run[] = [];
  try {
    for (let r = 0; r < RUNS; r++) {
      runs.push(await load(ternPort, sink, () => [tern.pid], 'tern'));
      runs.push(await load(postfix.port, sink, pfPids, 'postfix'));
    }
  } finally {
    await tern.stop();
    await postfix.stop();
    sink.stop();
    await dns.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const summary = (mta: string) => {
    const rs = runs.filter((r) => r.mta === mta);
    return { mta, median: median(rs.map((r) => r.rate)), min: Math.min(...rs.map((r) => r.rate)), max: Math.max(...rs.map((r) => r.rate)), cpuMsPerMsg: median(rs.map((r) => r.cpuMsPerMsg)) };
  };
  const ratios = runs.filter((r) => r.mta === 'tern').map((t, i) => t.rate / runs.filter((r) => r.mta === 'postfix')[i]!.rate);
  const result: RelayResult = { messages: MESSAGES, sessions: SESSIONS, size: SIZE, runs, tern: summary('tern'), postfix: summary('postfix'), ratioMedian: median(ratios), pinned: haveTaskset, machine: machine() };
  console.log(`relay ${MESSAGES} x ${SIZE} B, ${SESSIONS} sessions, ${RUNS} runs each (pinned: ${haveTaskset})`);
  for (const s of [result.tern, result.postfix]) console.log(`  ${s.mta.padEnd(8)} ${s.median.toFixed(0)} msg/s (min ${s.min.toFixed(0)}, max ${s.max.toFixed(0)}), ${s.cpuMsPerMsg.toFixed(2)} ms CPU/msg`);
  console.log(`  tern/postfix (median of pairwise ratios): ${result.ratioMedian.toFixed(2)}x`);
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(result, null, 2));
}

await main();
