// Relay throughput, Tern vs Postfix, in one run: smtp-source sends N 1 KB
// messages over S sessions to the MTA, which relays them to Postfix's
// smtp-sink on another loopback address; the clock stops when the sink has
// received all N (end to end), and the time until smtp-source has had every
// 250 is kept too (acceptance). Tern finds the sink by MX lookup (a DNS
// server on loopback); Postfix is given it as relayhost (it would need the
// system resolver for MX), which spares Postfix the lookups.
//
// Three relays, each its own process started once:
//   tern       Tern relaying for 127.0.0.0/8 (trustedNetworks), no signing
//   postfix    Postfix relaying for 127.0.0.0/8 (mynetworks)
//   tern-dkim  the same Tern with a DKIM key for the sender's domain
//              (load.test, one of its domains; the key made by `tern dkim
//              keygen` as a user does, rsa-sha256 2048-bit by default): mail
//              from a trusted network is submission, fixed up and signed
//              before the spool commit (issue 16's submission-style relay).
//              Postfix has no signer, so it is compared with the same
//              Postfix row.
//
// Fair on a 2-core machine: each MTA is pinned to CPU 0 (taskset), the load
// generator and the sink to CPU 1; runs alternate tern, postfix, tern-dkim,
// tern, …; medians, ranges and round-by-round ratios are reported. Both are
// durable (Tern fsyncs its queue file; Postfix its queue file), both log.
//
// Per run: messages/s end to end and accepted, and the MTA's CPU time per
// message (/proc/<pid>/stat, reaped children included, from the start until
// the sink has every message), also split into user (utime + cutime) and
// system (stime + cstime) time: the kernel's share (fsync, sockets) is
// beyond the MTA's own code.
//
// Shared helpers are in bench/lib.ts; `npm run bench` (bench/run.ts) runs
// this after bench/accept.ts and bench/memory.ts.
//
// Each relay first gets an unmeasured warm-up (--warmup, 1,000 messages).
//
//   node bench/relay.ts [--messages N] [--sessions S] [--runs R] [--warmup N] [--no-dkim] [--dkim-algo rsa|ed25519] [--json FILE] [--profile]
//
// --profile: the plain relay Tern runs under `node --cpu-prof`; its profile
// (warm-up and every run it served) is summarized at the end, as
// bench/profile.ts does (a profiled server is slower: not for the figures).

import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { stringify } from 'yaml';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { postfixAvailable, postfixProcesses, startPostfix } from '../test/helpers/postfix.ts';
import { freePort } from '../test/helpers/server.ts';
import { cli, cpuMeterSplit, haveTaskset, LOAD_CPU, machine, pin, pinPids, pinSelf, ROOT, SERVER_CPU, spread, startSink, startTern, tempDir, waitForQuiet, waitUntil } from './lib.ts';
import type { Sink, Spread } from './lib.ts';
import { summarize as summarizeProfile } from './profile.ts';
import { SERVER_V8_FLAGS } from '../src/cli/main.ts';

const args = cli();
const MESSAGES = args.num('messages', 2000);
const SESSIONS = args.num('sessions', 20);
const RUNS = args.num('runs', 3);
const WARMUP = args.num('warmup', 1000);
const DKIM = !args.flag('no-dkim');
const DKIM_ALGO = args.str('dkim-algo') ?? 'rsa';
const SIZE = 1024;
const SENDER_DOMAIN = 'load.test';
const jsonOut = args.str('json');
const PROFILE = args.flag('profile');

type Mta = 'tern' | 'postfix' | 'tern-dkim';
interface Run {
  mta: Mta;
  round: number;
  seconds: number;
  acceptSeconds: number;
  rate: number;
  acceptRate: number;
  cpuMsPerMsg: number;
  /** cpuMsPerMsg split into user and system time (absent in results from before the split). */
  cpuUserMsPerMsg?: number;
  cpuSysMsPerMsg?: number;
}
interface RelaySummary {
  mta: Mta;
  median: number;
  min: number;
  max: number;
  cpuMsPerMsg: number;
  accept?: Spread;
  cpu?: Spread;
  /** cpu's user and system parts over the same runs (absent in results from before the split). */
  cpuUser?: Spread;
  cpuSys?: Spread;
}
export interface RelayResult {
  messages: number;
  sessions: number;
  size: number;
  warmupMessages?: number;
  runs: Run[];
  tern: RelaySummary;
  postfix: RelaySummary;
  /** Tern with DKIM signing (absent with --no-dkim). */
  ternDkim?: RelaySummary | undefined;
  dkimAlgorithm?: string | undefined;
  /** Tern/Postfix messages/s end to end, median of run-by-run ratios. */
  ratioMedian: number;
  /** The same ratios: end to end and acceptance, median and range. */
  ratio?: { e2e: Spread; accept: Spread } | undefined;
  /** tern-dkim/Postfix, the same way. */
  ratioDkim?: { e2e: Spread; accept: Spread } | undefined;
  pinned: boolean;
  machine: ReturnType<typeof machine>;
}

async function load(port: number, sink: Sink, cpuPids: () => number[], mta: Mta, round: number, messages = MESSAGES): Promise<Run> {
  // Other work on the shared machine otherwise lands in some rounds only.
  if (round >= 0) await waitForQuiet();
  sink.reset();
  const cpu = cpuMeterSplit(cpuPids);
  const t0 = process.hrtime.bigint();
  const [cmd, argv] = pin(LOAD_CPU, 'smtp-source', ['-s', String(SESSIONS), '-m', String(messages), '-l', String(SIZE), '-f', `load@${SENDER_DOMAIN}`, '-t', 'user@sink.test', `127.0.0.1:${port}`]);
  const src = spawn(cmd, argv, { stdio: 'ignore' });
  const accepted = new Promise<number>((r) => src.once('exit', () => r(Number(process.hrtime.bigint() - t0) / 1e9)));
  const ok = await waitUntil(() => sink.count() >= messages, Number(process.env.BENCH_TIMEOUT ?? 300_000));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const acceptSeconds = await accepted;
  const cpuTime = cpu();
  if (!ok) throw new Error(`${mta}: after ${seconds}s only ${sink.count()} of ${messages} reached the sink`);
  return {
    mta, round, seconds, acceptSeconds, rate: messages / seconds, acceptRate: messages / acceptSeconds,
    cpuMsPerMsg: cpuTime.total / messages, cpuUserMsPerMsg: cpuTime.user / messages, cpuSysMsPerMsg: cpuTime.system / messages,
  };
}

/** Tern as a user would run a relay (durable spool, info logs); with `dkim`, a signing key for the sender's domain made by `tern dkim keygen`. */
async function startRelayTern(o: { dns: string; sinkPort: number; dkim: boolean; profileDir?: string | undefined }) {
  const dir = tempDir(o.dkim ? 'tern-bench-dkim-' : 'tern-bench-');
  const ternPort = await freePort('127.0.0.1');
  const config = {
    hostname: 'bench.tern.test',
    dataDir: path.join(dir, 'data'),
    listeners: [{ role: 'smtp', address: '127.0.0.1', port: ternPort }],
    domains: [{ name: 'tern.test', mailboxes: ['alice'] }, ...(o.dkim ? [{ name: SENDER_DOMAIN, mailboxes: ['load'] }] : [])],
    trustedNetworks: ['127.0.0.0/8'],
    dns: { servers: [o.dns], timeout: '2s' },
    outbound: { port: o.sinkPort, tls: 'none' },
    limits: { connectionsPerIp: 1000 },
  };
  if (o.dkim) {
    const file = path.join(dir, 'tern.yaml');
    fs.writeFileSync(file, stringify(config));
    const k = spawnSync(process.execPath, [path.join(ROOT, 'src/cli/main.ts'), 'dkim', 'keygen', SENDER_DOMAIN, '--selector', 'bench', '--algo', DKIM_ALGO, '--config', file], { encoding: 'utf8' });
    if (k.status !== 0) throw new Error(`tern dkim keygen failed (${k.status}): ${k.stderr}`);
  }
  // The server inherits NODE_OPTIONS; with the V8 flag there, `tern serve` does not re-exec itself, so the profiled process is the server.
  const nodeOptions = process.env.NODE_OPTIONS;
  if (o.profileDir) process.env.NODE_OPTIONS = `${nodeOptions ?? ''} --cpu-prof --cpu-prof-dir=${o.profileDir} ${SERVER_V8_FLAGS.join(' ')}`.trim();
  try {
    const tern = await startTern(config, dir, SERVER_CPU);
    return { port: ternPort, tern, dir };
  } finally {
    if (nodeOptions === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = nodeOptions;
  }
}

async function main(): Promise<void> {
  if (!postfixAvailable()) throw new Error('needs root and Debian postfix (scripts/install-test-deps.sh)');
  const sinkPort = await freePort('127.0.0.3');
  pinSelf();
  const sink = startSink('127.0.0.3', sinkPort, LOAD_CPU);
  const dns = await startDnsServer({ 'sink.test': { MX: [{ preference: 10, exchange: 'mx.sink.test' }] }, 'mx.sink.test': { A: ['127.0.0.3'] } });

  const profileDir = PROFILE ? tempDir('tern-bench-relay-prof-') : undefined;
  const plain = await startRelayTern({ dns: dns.address, sinkPort, dkim: false, profileDir });
  const signing = DKIM ? await startRelayTern({ dns: dns.address, sinkPort, dkim: true }) : undefined;

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
    // Unmeasured, as in bench/accept.ts: JIT for Tern, process pools and connection caches for Postfix.
    if (WARMUP > 0) {
      await load(plain.port, sink, () => [plain.tern.pid], 'tern', -1, WARMUP);
      await load(postfix.port, sink, pfPids, 'postfix', -1, WARMUP);
      if (signing) await load(signing.port, sink, () => [signing.tern.pid], 'tern-dkim', -1, WARMUP);
    }
    for (let r = 0; r < RUNS; r++) {
      runs.push(await load(plain.port, sink, () => [plain.tern.pid], 'tern', r));
      runs.push(await load(postfix.port, sink, pfPids, 'postfix', r));
      if (signing) runs.push(await load(signing.port, sink, () => [signing.tern.pid], 'tern-dkim', r));
    }
    if (signing) {
      const problems = fs.readFileSync(signing.tern.logFile, 'utf8').split('\n').filter((l) => l.includes('dkim signing problem'));
      if (problems.length) throw new Error(`tern-dkim: ${problems.length} signing problems, e.g. ${problems[0]}`);
    }
  } finally {
    for (const t of [plain, signing]) {
      if (!t) continue;
      await t.tern.stop();
      fs.rmSync(t.dir, { recursive: true, force: true });
    }
    await postfix.stop();
    sink.stop();
    await dns.close();
  }
  const summary = (mta: Mta): RelaySummary => {
    const rs = runs.filter((r) => r.mta === mta);
    const e2e = spread(rs.map((r) => r.rate));
    const cpu = spread(rs.map((r) => r.cpuMsPerMsg));
    return {
      mta, median: e2e.median, min: e2e.min, max: e2e.max, cpuMsPerMsg: cpu.median, cpu,
      cpuUser: spread(rs.map((r) => r.cpuUserMsPerMsg ?? NaN)), cpuSys: spread(rs.map((r) => r.cpuSysMsPerMsg ?? NaN)),
      accept: spread(rs.map((r) => r.acceptRate)),
    };
  };
  /** a/Postfix round by round, end to end and acceptance. */
  const vsPostfix = (a: Mta) => {
    const pairs = runs.filter((r) => r.mta === a).flatMap((x) => {
      const y = runs.find((r) => r.mta === 'postfix' && r.round === x.round);
      return y ? [{ e2e: x.rate / y.rate, accept: x.acceptRate / y.acceptRate }] : [];
    });
    return { e2e: spread(pairs.map((p) => p.e2e)), accept: spread(pairs.map((p) => p.accept)) };
  };
  const ratio = vsPostfix('tern');
  const result: RelayResult = {
    messages: MESSAGES, sessions: SESSIONS, size: SIZE, warmupMessages: WARMUP, runs, tern: summary('tern'), postfix: summary('postfix'),
    ternDkim: signing ? summary('tern-dkim') : undefined, dkimAlgorithm: signing ? `${DKIM_ALGO === 'rsa' ? 'rsa-sha256, 2048-bit' : 'ed25519-sha256'}` : undefined,
    ratioMedian: ratio.e2e.median, ratio, ratioDkim: signing ? vsPostfix('tern-dkim') : undefined,
    pinned: haveTaskset, machine: machine(),
  };
  console.log(`relay ${MESSAGES} x ${SIZE} B, ${SESSIONS} sessions, ${RUNS} runs each (pinned: ${haveTaskset})`);
  for (const s of [result.tern, result.postfix, result.ternDkim]) {
    if (s) console.log(`  ${s.mta.padEnd(9)} ${s.median.toFixed(0)} msg/s end to end (min ${s.min.toFixed(0)}, max ${s.max.toFixed(0)}), ${s.accept!.median.toFixed(0)} msg/s accepted, ${s.cpuMsPerMsg.toFixed(2)} ms CPU/msg (user ${s.cpuUser!.median.toFixed(2)}, sys ${s.cpuSys!.median.toFixed(2)})`);
  }
  console.log(`  tern/postfix (median of pairwise ratios): ${ratio.e2e.median.toFixed(2)}x end to end, ${ratio.accept.median.toFixed(2)}x accepted`);
  if (result.ratioDkim) console.log(`  tern-dkim/postfix: ${result.ratioDkim.e2e.median.toFixed(2)}x end to end, ${result.ratioDkim.accept.median.toFixed(2)}x accepted`);
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(result, null, 2));
  if (profileDir) {
    const file = fs.readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(profileDir, f)).sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0];
    if (!file) console.log(`no CPU profile in ${profileDir}`);
    else {
      console.log(`\ntern (relay) under --cpu-prof: ${file} (open it in Chrome DevTools)`);
      console.log(summarizeProfile(JSON.parse(fs.readFileSync(file, 'utf8')) as Parameters<typeof summarizeProfile>[0], 25));
    }
  }
}

await main();
