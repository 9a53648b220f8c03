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
//   node bench/relay.ts [--messages N] [--sessions S] [--runs R] [--json FILE]

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { stringify } from 'yaml';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { postfixAvailable, postfixProcesses, startPostfix } from '../test/helpers/postfix.ts';
import { freePort } from '../test/helpers/server.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const MESSAGES = opt('messages', 2000);
const SESSIONS = opt('sessions', 20);
const RUNS = opt('runs', 3);
const SIZE = 1024;
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
const haveTaskset = spawnSync('taskset', ['-V']).status === 0;

function pin(cpu: number, cmd: string, argv: string[]): [string, string[]] {
  return haveTaskset ? ['taskset', ['-c', String(cpu), cmd, ...argv]] : [cmd, argv];
}

/** smtp-sink with counters; resolves `count()` from its running "mesg=N" output. */
function startSink(host: string, port: number): { child: ChildProcess; count: () => number; reset: () => void } {
  const [cmd, argv] = pin(1, 'smtp-sink', ['-u', 'nobody', '-c', `${host}:${port}`, '1024']);
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
  let last = 0;
  let base = 0;
  let tail = '';
  child.stdout!.setEncoding('latin1');
  child.stdout!.on('data', (d: string) => {
    tail = (tail + d).slice(-200);
    const m = /mesg=(\d+)[^m]*$/.exec(tail);
    if (m) last = Number(m[1]);
  });
  return { child, count: () => last - base, reset: () => (base = last) };
}

async function waitUntil(fn: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

function cpuMs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      // utime, stime, cutime, cstime (fields 14-17 of stat; 12-15 after the comm split)
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      /* gone */
    }
  }
  return (ticks * 1000) / 100;
}

interface Run { mta: string; seconds: number; acceptSeconds: number; rate: number; cpuMsPerMsg: number }

async function load(port: number, sink: ReturnType<typeof startSink>, cpuPids: () => number[], mta: string): Promise<Run> {
  sink.reset();
  const cpu0 = cpuMs(cpuPids());
  const t0 = process.hrtime.bigint();
  const [cmd, argv] = pin(1, 'smtp-source', ['-s', String(SESSIONS), '-m', String(MESSAGES), '-l', String(SIZE), '-f', 'load@load.test', '-t', 'user@sink.test', `127.0.0.1:${port}`]);
  const src = spawn(cmd, argv, { stdio: 'ignore' });
  const accepted = new Promise<number>((r) => src.once('exit', () => r(Number(process.hrtime.bigint() - t0) / 1e9)));
  const ok = await waitUntil(() => sink.count() >= MESSAGES, Number(process.env.BENCH_TIMEOUT ?? 300_000));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const acceptSeconds = await accepted;
  if (!ok) throw new Error(`${mta}: after ${seconds}s only ${sink.count()} of ${MESSAGES} reached the sink`);
  const cpu = cpuMs(cpuPids()) - cpu0;
  return { mta, seconds, acceptSeconds, rate: MESSAGES / seconds, cpuMsPerMsg: cpu / MESSAGES };
}

async function main(): Promise<void> {
  if (!postfixAvailable()) throw new Error('needs root and Debian postfix (scripts/install-test-deps.sh)');
  const sinkPort = await freePort('127.0.0.3');
  const sink = startSink('127.0.0.3', sinkPort);
  const dns = await startDnsServer({ 'sink.test': { MX: [{ preference: 10, exchange: 'mx.sink.test' }] }, 'mx.sink.test': { A: ['127.0.0.3'] } });

  // Tern, configured as a user would run a relay (durable spool, info logs).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-bench-'));
  const ternPort = await freePort('127.0.0.1');
  const file = path.join(dir, 'tern.yaml');
  fs.writeFileSync(file, stringify({
    hostname: 'bench.tern.test',
    dataDir: path.join(dir, 'data'),
    listeners: [{ role: 'smtp', address: '127.0.0.1', port: ternPort }],
    domains: [{ name: 'tern.test', mailboxes: ['alice'] }],
    trustedNetworks: ['127.0.0.0/8'],
    dns: { servers: [dns.address], timeout: '2s' },
    outbound: { port: sinkPort, tls: 'none' },
    limits: { connectionsPerIp: 1000 },
  }));
  const [tcmd, targv] = pin(0, process.execPath, [path.join(ROOT, 'src/cli/main.ts'), 'serve', '--config', file]);
  const tern = spawn(tcmd, targv, { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    tern.stdout!.on('data', (d: Buffer) => {
      if (buf !== null) buf += d.toString();
      if (buf.includes('"tern started"')) resolve();
    });
    tern.once('exit', (c) => reject(new Error(`tern exited ${c}`)));
  });

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
  if (haveTaskset) for (const pid of pfPids()) spawnSync('taskset', ['-p', '1', String(pid)], { stdio: 'ignore' });

  const runs: Run[] = [];
  try {
    for (let r = 0; r < RUNS; r++) {
      runs.push(await load(ternPort, sink, () => [tern.pid!], 'tern'));
      runs.push(await load(postfix.port, sink, pfPids, 'postfix'));
    }
  } finally {
    tern.kill('SIGTERM');
    await postfix.stop();
    sink.child.kill();
    await dns.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const summary = (mta: string) => {
    const rs = runs.filter((r) => r.mta === mta);
    return { mta, median: median(rs.map((r) => r.rate)), min: Math.min(...rs.map((r) => r.rate)), max: Math.max(...rs.map((r) => r.rate)), cpuMsPerMsg: median(rs.map((r) => r.cpuMsPerMsg)) };
  };
  const ratios = runs.filter((r) => r.mta === 'tern').map((t, i) => t.rate / runs.filter((r) => r.mta === 'postfix')[i]!.rate);
  const result = { messages: MESSAGES, sessions: SESSIONS, size: SIZE, runs, tern: summary('tern'), postfix: summary('postfix'), ratioMedian: median(ratios), pinned: haveTaskset };
  console.log(`relay ${MESSAGES} x ${SIZE} B, ${SESSIONS} sessions, ${RUNS} runs each (pinned: ${haveTaskset})`);
  for (const s of [result.tern, result.postfix]) console.log(`  ${s.mta.padEnd(8)} ${s.median.toFixed(0)} msg/s (min ${s.min.toFixed(0)}, max ${s.max.toFixed(0)}), ${s.cpuMsPerMsg.toFixed(2)} ms CPU/msg`);
  console.log(`  tern/postfix (median of pairwise ratios): ${result.ratioMedian.toFixed(2)}x`);
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(result, null, 2));
}

await main();
