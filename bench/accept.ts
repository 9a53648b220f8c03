// Accepting mail, side by side (peers in bench/peers.ts: tern, tern-checks,
// tern-maildir, tern-default, postfix, postfix-maildir, haraka, sink), each
// pinned to CPU 0, with the load generator and this driver on CPU 1.
//
// First the configuration users run (issue 16), both servers delivering into
// a Maildir and a message counting only once its file is in new/:
//   md-1k-s20-new    tern-default (checks on), postfix-maildir, tern-maildir
//                    (checks off): Tern's defaults and like for like; and
//                    tern (checks off, discard) for the split of Tern's CPU
//   md-1k-s100-new   tern-maildir, postfix-maildir
//   md-100k-s20-new  tern-maildir, postfix-maildir
// Each of them a new connection per message; each pair (tern-default /
// postfix-maildir, tern-maildir / postfix-maildir) compared round by round
// on acceptance, end to end and CPU per message.
//
// Throughput: for each scenario (message size × concurrent sessions × a new
// connection per message or many per connection, `smtp-source -d`),
// smtp-source sends N messages to each peer in turn, interleaved (tern,
// postfix, haraka, sink, tern, …), R rounds. Per run:
//   messages/s       N / smtp-source's wall time (every message has had its
//                    250 after DATA);
//   CPU ms/message   user+system time of the server's processes
//                    (/proc/<pid>/stat, reaped children included) from the
//                    start until the server has handled all N (discarded,
//                    queued, delivered, sunk), so delivery after the 250 is in;
//   CPU user / sys   the same time split into user (utime + cutime) and
//   ms/message       system (stime + cstime): the system part is the
//                    kernel working for the server (fsync, the journal,
//                    sockets), out of reach of the server's own code;
//   peak RSS / PSS   the highest sum of VmRSS / Pss over the server's
//                    processes, sampled every 200 ms over the same span.
// Medians and min–max over the rounds; Tern/peer ratios pair by pair (round
// by round), then their median.
//
// Latency: our own client (bench/latency.ts) sends 1 KB messages over 20
// sessions to tern, postfix and haraka, a new connection per message and
// then many per connection, R interleaved rounds; p50 / p99 of end of DATA
// → 250, medians over the rounds.
//
// Every peer first gets an unmeasured warm-up (1 KB, 20 sessions): JIT for
// the Node servers (Haraka's CPU per message settles only after a few
// thousand), process pools for Postfix.
//
// Before each measured run the driver waits (at most 15 s) for the machine
// to be quiet: it is shared, and a build or test run landing in one round
// and not the next skews that round's ratio. For Postfix, each run also
// splits its CPU by daemon (smtpd, cleanup, qmgr, virtual, …).
//
//   node bench/accept.ts [--quick] [--issue16] [--runs R] [--scale F | --messages N] [--only REGEX] [--json FILE]
//
// --scale multiplies every message count (--messages N: the 1 KB count
// becomes N, the others in proportion); --only runs the scenarios whose id
// matches (e.g. '^1k-s20-'); --issue16 runs only the three Maildir scenarios
// above (no latency), about three minutes with 3 rounds:
//
//   node bench/accept.ts --issue16 --runs 3
//
// (`npm run bench -- --issue16` runs that and the relay rows and writes
// docs/benchmarks.md.)

import fs from 'node:fs';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { HARAKA_VERSION } from './haraka.ts';
import { measureLatency } from './latency.ts';
import {
  cachedPids, cli, cpuByName, cpuMeterSplit, waitForQuiet, haveTaskset, machine, median, memorySampler, pinSelf, runSource, spread, waitUntil,
} from './lib.ts';
import type { Spread } from './lib.ts';
import { startHarakaPeer, startPostfixMaildirPeer, startPostfixPeer, startSinkPeer, startTernPeer, ternJournal, TERN_LIMITS } from './peers.ts';
import type { Peer, PeerName } from './peers.ts';

const args = cli();
const QUICK = args.flag('quick');
const ISSUE16 = args.flag('issue16');
const RUNS = args.num('runs', QUICK ? 1 : 3);
const SCALE = args.str('messages') !== undefined ? args.num('messages', 5000) / 5000 : args.num('scale', 1);
const WARMUP = args.num('warmup', QUICK ? 2000 : 3000);
const ONLY = args.str('only');
const RUN_TIMEOUT_MS = args.num('timeout', 180) * 1000;
const jsonOut = args.str('json');

const KB = 1024;
const MB = 1024 * KB;

export interface Scenario {
  id: string;
  name: string;
  size: number;
  /** Concurrent sessions asked for, and run (fewer when there are few messages: at most one per two messages). */
  sessions: number;
  requestedSessions: number;
  reuse: boolean;
  messages: number;
  peers: PeerName[];
  /** Pairs compared round by round (first/second), besides the ratios to `tern`. */
  pairs?: [PeerName, PeerName][] | undefined;
}

const PEERS: PeerName[] = ['tern', 'postfix', 'haraka', 'sink'];
/** Peers compared with Tern (Tern/peer) and Tern variants (variant/Tern). */
export const OTHERS = ['postfix', 'haraka', 'sink'] as const;
export const VARIANTS = ['tern-checks', 'tern-maildir'] as const;

/**
 * Issue 16's scenarios: Tern's defaults (checks on, Maildir) and Tern like
 * for like (checks off, Maildir) against Postfix delivering into a Maildir
 * through virtual(8). Ids start with "md-".
 */
function maildirScenarios(): Scenario[] {
  const sets = [
    // `tern` (checks off, discard delivery) rides along in the headline scenario: the same rounds then split
    // Tern's CPU per message into acceptance, Maildir delivery and the inbound checks (bench/report.ts).
    { id: 'md-1k-s20-new', label: '1 KB', bytes: KB, sessions: 20, messages: 5000, peers: ['tern-default', 'postfix-maildir', 'tern-maildir', 'tern'] as PeerName[] },
    { id: 'md-1k-s100-new', label: '1 KB', bytes: KB, sessions: 100, messages: 5000, peers: ['tern-maildir', 'postfix-maildir'] as PeerName[] },
    { id: 'md-100k-s20-new', label: '100 KB', bytes: 100 * KB, sessions: 20, messages: 1000, peers: ['tern-maildir', 'postfix-maildir'] as PeerName[] },
  ];
  // The smoke test keeps the headline pair only.
  return (QUICK ? sets.slice(0, 1) : sets).map((x) => {
    const messages = Math.max(2, Math.round((QUICK ? Math.min(2000, x.messages) : x.messages) * SCALE));
    return {
      id: x.id,
      name: `Maildir, ${x.label}, ${x.sessions} sessions, new connection per message`,
      size: x.bytes,
      requestedSessions: x.sessions,
      sessions: Math.max(1, Math.min(x.sessions, Math.floor(messages / 2))),
      reuse: false,
      messages,
      peers: x.peers,
      pairs: x.peers.filter((p) => p !== 'postfix-maildir').map((p): [PeerName, PeerName] => [p, 'postfix-maildir']),
    };
  });
}

/**
 * The scenarios, with message counts chosen so that one run of the slowest
 * peer takes a few seconds. 10 MB: 1 and 20 sessions only (with 40
 * messages, 100 sessions would be fewer than one message each at a time).
 * Many messages per connection: 1 KB at 1, 20 and 100 sessions and 100 KB
 * at 20 (larger messages spend next to nothing on the connection).
 */
function scenarios(): Scenario[] {
  const sizes = [
    { label: '1 KB', id: '1k', bytes: KB, messages: { 1: 1000, 20: 5000, 100: 5000 } },
    { label: '100 KB', id: '100k', bytes: 100 * KB, messages: { 1: 300, 20: 1000, 100: 1000 } },
    { label: '1 MB', id: '1m', bytes: MB, messages: { 1: 100, 20: 200, 100: 200 } },
    { label: '10 MB', id: '10m', bytes: 10 * MB, messages: { 1: 20, 20: 40 } },
  ];
  const out: Scenario[] = [];
  const add = (sz: (typeof sizes)[number], sessions: 1 | 20 | 100, reuse: boolean) => {
    const base = QUICK ? 2000 : (sz.messages as Record<number, number>)[sessions]!;
    const messages = Math.max(2, Math.round(base * SCALE));
    const extra: PeerName[] = [];
    if (sz.bytes === KB && sessions === 20) extra.push('tern-checks');
    if (sz.bytes === KB && sessions === 20 && !reuse) extra.push('tern-maildir');
    out.push({
      id: `${sz.id}-s${sessions}-${reuse ? 'reuse' : 'new'}`,
      name: `${sz.label}, ${sessions} session${sessions > 1 ? 's' : ''}, ${reuse ? 'many messages per connection' : 'new connection per message'}`,
      size: sz.bytes,
      requestedSessions: sessions,
      sessions: Math.max(1, Math.min(sessions, Math.floor(messages / 2))),
      reuse,
      messages,
      peers: [PEERS[0]!, ...extra, ...PEERS.slice(1)],
    });
  };
  out.push(...maildirScenarios());
  if (ISSUE16) {
    // only the Maildir scenarios
  } else if (QUICK) {
    add(sizes[0]!, 20, false);
    add(sizes[0]!, 20, true);
  } else {
    for (const sz of sizes) for (const s of sz.bytes >= 10 * MB ? ([1, 20] as const) : ([1, 20, 100] as const)) add(sz, s, false);
    for (const s of [1, 20, 100] as const) add(sizes[0]!, s, true);
    add(sizes[1]!, 20, true);
  }
  return ONLY ? out.filter((s) => new RegExp(ONLY).test(s.id)) : out;
}

export interface Run {
  peer: PeerName;
  round: number;
  ok: boolean;
  error?: string;
  seconds: number;
  rate: number;
  drainSeconds: number;
  /** Messages / drainSeconds: end to end, until the server has handled every one. */
  e2eRate: number;
  cpuMsPerMsg: number;
  /** cpuMsPerMsg split into user (utime + cutime) and system (stime + cstime) time; absent in results from before the split. */
  cpuUserMsPerMsg?: number;
  cpuSysMsPerMsg?: number;
  /** Busy share of all CPUs just before the run (bench/lib.ts waitForQuiet), and how long it waited for quiet. */
  busyBefore?: number;
  quietWaitSeconds?: number;
  /** Postfix: CPU ms per message by process name (bench/lib.ts cpuByName; sampled, so a little under the total). */
  cpuMsPerMsgByProcess?: Record<string, number>;
  peakRssKiB: number;
  peakPssKiB: number;
}

async function measure(p: Peer, s: { size: number; sessions: number; reuse: boolean; messages: number }, round: number): Promise<Run> {
  p.clean();
  const quiet = round >= 0 ? await waitForQuiet() : undefined;
  const done0 = p.done();
  const pids = cachedPids(p.pids);
  const mem = memorySampler(pids);
  // Only Postfix is many processes: where its time goes, by daemon.
  const byName = p.name.startsWith('postfix') ? cpuByName(pids) : undefined;
  const cpu = cpuMeterSplit(p.pids);
  const r = await runSource({
    host: '127.0.0.1', port: p.port, messages: s.messages, sessions: s.sessions, size: s.size, reuse: s.reuse,
    from: 'load@load.test', to: p.to, timeoutMs: RUN_TIMEOUT_MS,
  });
  const t0 = Date.now();
  const ok = r.status === 0 && (await waitUntil(() => p.done() - done0 >= s.messages, RUN_TIMEOUT_MS, 20));
  const drainSeconds = r.seconds + (Date.now() - t0) / 1000;
  const cpuTime = cpu();
  const peak = mem.stop();
  const parts = byName?.stop();
  const said = r.stderr.trim().split('\n').slice(0, 3).join(' | ');
  if (!ok) {
    const error = r.status !== 0
      ? `smtp-source exited ${r.status} after ${r.seconds.toFixed(1)} s: ${said}`
      : `only ${p.done() - done0} of ${s.messages} handled${said ? `; smtp-source: ${said}` : ''}`;
    return { peer: p.name, round, ok: false, error, seconds: r.seconds, rate: NaN, drainSeconds: NaN, e2eRate: NaN, cpuMsPerMsg: NaN, cpuUserMsPerMsg: NaN, cpuSysMsPerMsg: NaN, peakRssKiB: NaN, peakPssKiB: NaN };
  }
  if (said) console.warn(`  ${p.name}: smtp-source said: ${said}`);
  return {
    peer: p.name, round, ok: true, seconds: r.seconds, rate: s.messages / r.seconds, drainSeconds, e2eRate: s.messages / drainSeconds,
    cpuMsPerMsg: cpuTime.total / s.messages, cpuUserMsPerMsg: cpuTime.user / s.messages, cpuSysMsPerMsg: cpuTime.system / s.messages,
    peakRssKiB: peak.rssKiB, peakPssKiB: peak.pssKiB,
    ...(quiet ? { busyBefore: quiet.busy, quietWaitSeconds: quiet.waited } : {}),
    ...(parts ? { cpuMsPerMsgByProcess: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, v / s.messages])) } : {}),
  };
}

export interface PeerSummary {
  runs: number;
  failed: number;
  rate: Spread;
  e2eRate?: Spread;
  cpuMsPerMsg: Spread;
  /** cpuMsPerMsg's user and system parts over the same runs (absent in results from before the split). */
  cpuUserMsPerMsg?: Spread;
  cpuSysMsPerMsg?: Spread;
  drainSeconds: Spread;
  peakRssKiB: Spread;
  peakPssKiB: Spread;
}
export interface Ratio { rate: number; cpuMsPerMsg: number; pairs: number }
/** a/b round by round: acceptance, end to end and CPU per message, median and range over the rounds. */
export interface PairRatio { a: PeerName; b: PeerName; rate: Spread; e2eRate: Spread; cpuMsPerMsg: Spread; pairs: number }
export interface ScenarioResult extends Scenario {
  runs: Run[];
  summary: Partial<Record<PeerName, PeerSummary>>;
  /** Tern/peer, median of round-by-round ratios (rate: >1 = Tern faster; CPU: <1 = Tern cheaper). */
  ratios: Partial<Record<(typeof OTHERS)[number], Ratio>>;
  /** Variant/Tern (what the checks or the Maildir write cost), the same way. */
  variants: Partial<Record<(typeof VARIANTS)[number], Ratio>>;
  /** The scenario's `pairs`, compared. */
  compared?: PairRatio[];
}

function summarize(s: Scenario, runs: Run[]): ScenarioResult {
  const okRuns = (p: PeerName) => runs.filter((r) => r.peer === p && r.ok);
  const summary: Partial<Record<PeerName, PeerSummary>> = {};
  for (const p of s.peers) {
    const rs = okRuns(p);
    const all = runs.filter((r) => r.peer === p);
    if (!rs.length) {
      summary[p] = { runs: all.length, failed: all.length, rate: nan(), e2eRate: nan(), cpuMsPerMsg: nan(), cpuUserMsPerMsg: nan(), cpuSysMsPerMsg: nan(), drainSeconds: nan(), peakRssKiB: nan(), peakPssKiB: nan() };
      continue;
    }
    summary[p] = {
      runs: all.length,
      failed: all.length - rs.length,
      rate: spread(rs.map((r) => r.rate)),
      e2eRate: spread(rs.map((r) => r.e2eRate)),
      cpuMsPerMsg: spread(rs.map((r) => r.cpuMsPerMsg)),
      cpuUserMsPerMsg: spread(rs.map((r) => r.cpuUserMsPerMsg ?? NaN)),
      cpuSysMsPerMsg: spread(rs.map((r) => r.cpuSysMsPerMsg ?? NaN)),
      drainSeconds: spread(rs.map((r) => r.drainSeconds)),
      peakRssKiB: spread(rs.map((r) => r.peakRssKiB)),
      peakPssKiB: spread(rs.map((r) => r.peakPssKiB)),
    };
  }
  /** a/b round by round over the rounds where both succeeded, median. */
  const ratio = (a: PeerName, b: PeerName): Ratio | undefined => {
    const pairs = okRuns(a).flatMap((x) => {
      const y = okRuns(b).find((r) => r.round === x.round);
      return y ? [{ rate: x.rate / y.rate, cpu: x.cpuMsPerMsg / y.cpuMsPerMsg }] : [];
    });
    if (!pairs.length) return undefined;
    return { rate: median(pairs.map((q) => q.rate)), cpuMsPerMsg: median(pairs.map((q) => q.cpu)), pairs: pairs.length };
  };
  const ratios: ScenarioResult['ratios'] = {};
  for (const p of OTHERS) if (s.peers.includes(p)) {
    const r = ratio('tern', p);
    if (r) ratios[p] = r;
  }
  const variants: ScenarioResult['variants'] = {};
  for (const p of VARIANTS) if (s.peers.includes(p)) {
    const r = ratio(p, 'tern');
    if (r) variants[p] = r;
  }
  const compared: PairRatio[] = [];
  for (const [a, b] of s.pairs ?? []) {
    const rounds = okRuns(a).flatMap((x) => {
      const y = okRuns(b).find((r) => r.round === x.round);
      return y ? [{ rate: x.rate / y.rate, e2e: x.e2eRate / y.e2eRate, cpu: x.cpuMsPerMsg / y.cpuMsPerMsg }] : [];
    });
    if (rounds.length) {
      compared.push({
        a, b, pairs: rounds.length,
        rate: spread(rounds.map((q) => q.rate)), e2eRate: spread(rounds.map((q) => q.e2e)), cpuMsPerMsg: spread(rounds.map((q) => q.cpu)),
      });
    }
  }
  return { ...s, runs, summary, ratios, variants, compared };
}

function nan(): Spread {
  return { median: NaN, min: NaN, max: NaN };
}

export interface LatencyRow {
  peer: PeerName;
  reuse: boolean;
  messages: number;
  sessions: number;
  rounds: { p50: number; p99: number; max: number; rate: number; errors: number; errorSamples: string[] }[];
  p50: Spread;
  p99: Spread;
  rate: Spread;
  errors: number;
}

const LATENCY_PEERS: PeerName[] = ['tern', 'postfix', 'haraka'];

async function latency(peers: Map<PeerName, Peer>): Promise<LatencyRow[]> {
  const messages = Math.max(40, Math.round((QUICK ? 500 : 2000) * SCALE));
  const sessions = 20;
  const rows: LatencyRow[] = [];
  for (const reuse of [false, true]) {
    console.log(`latency: ${messages} x 1 KB, ${sessions} sessions, ${reuse ? 'many messages per connection' : 'new connection per message'}, ${RUNS} run(s) each (our client, end of DATA -> 250)`);
    const byPeer = new Map<PeerName, LatencyRow['rounds']>();
    for (let round = 0; round < RUNS; round++) {
      for (const name of LATENCY_PEERS) {
        const p = peers.get(name)!;
        p.clean();
        const done0 = p.done();
        const r = await measureLatency({ host: '127.0.0.1', port: p.port, sessions, messages, size: 1024, reuse, from: 'load@load.test', to: p.to, timeoutMs: RUN_TIMEOUT_MS });
        // Let delivery after the 250 finish, so that it does not run under the next peer's measurement.
        if (!(await waitUntil(() => p.done() - done0 >= messages - r.errors, RUN_TIMEOUT_MS, 20))) console.warn(`  ${name}: only ${p.done() - done0} of ${messages - r.errors} handled`);
        console.log(`  ${name.padEnd(12)} p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  ${r.rate.toFixed(0)} msg/s${r.errors ? `  ${r.errors} errors (${r.errorSamples.join('; ')})` : ''}`);
        const list = byPeer.get(name) ?? [];
        list.push({ p50: r.p50, p99: r.p99, max: r.max, rate: r.rate, errors: r.errors, errorSamples: r.errorSamples });
        byPeer.set(name, list);
      }
    }
    for (const [peer, rounds] of byPeer) {
      rows.push({
        peer, reuse, messages, sessions, rounds,
        p50: spread(rounds.map((x) => x.p50)), p99: spread(rounds.map((x) => x.p99)), rate: spread(rounds.map((x) => x.rate)),
        errors: rounds.reduce((a, x) => a + x.errors, 0),
      });
    }
  }
  return rows;
}

export interface AcceptResult {
  kind: 'accept';
  quick: boolean;
  /** Only issue 16's Maildir scenarios were run (--issue16). */
  issue16?: boolean;
  runsEach: number;
  scale: number;
  warmupMessages: number;
  haraka: string;
  ternLimits: typeof TERN_LIMITS;
  /** Each peer's configuration as run (Peer.config). */
  peerConfigs: Partial<Record<PeerName, Record<string, unknown>>>;
  machine: ReturnType<typeof machine>;
  scenarios: ScenarioResult[];
  latency: LatencyRow[];
  /** Group commit over the whole run, per Tern variant: journal batches (one fdatasync each) and records. */
  ternJournal?: Partial<Record<string, { batches: number; records: number }>> | undefined;
  seconds: number;
}

const fmtRatio = (r: Ratio | undefined) => (r ? `${r.rate.toFixed(2)}x msg/s, ${r.cpuMsPerMsg.toFixed(2)}x CPU/msg` : 'n/a');

async function main(): Promise<void> {
  const t0 = Date.now();
  pinSelf();
  const dns = await startDnsServer({});
  const list = scenarios();
  const needed = new Set<PeerName>([...list.flatMap((s) => s.peers), ...(ISSUE16 ? [] : LATENCY_PEERS)]);
  const peers = new Map<PeerName, Peer>();
  const results: ScenarioResult[] = [];
  let lat: LatencyRow[] = [];
  try {
    for (const name of ['tern', 'tern-checks', 'tern-maildir', 'tern-default', 'postfix', 'postfix-maildir', 'haraka', 'sink'] as const) {
      if (!needed.has(name)) continue;
      const p = name === 'postfix' ? await startPostfixPeer()
        : name === 'postfix-maildir' ? await startPostfixMaildirPeer()
        : name === 'haraka' ? await startHarakaPeer()
        : name === 'sink' ? await startSinkPeer()
        : await startTernPeer(name, dns.address);
      peers.set(name, p);
    }
    console.log(`accept: warm-up, ${WARMUP} x 1 KB over 20 sessions per peer (not measured)`);
    for (const p of peers.values()) {
      const w = await measure(p, { size: 1024, sessions: 20, reuse: false, messages: WARMUP }, -1);
      if (!w.ok) throw new Error(`${p.name}: warm-up failed: ${w.error}`);
    }
    for (const s of list) {
      console.log(`accept ${s.id}: ${s.messages} x ${s.size} B, ${s.sessions} session(s)${s.reuse ? ', many per connection' : ''}, ${RUNS} run(s) each`);
      const runs: Run[] = [];
      for (let round = 0; round < RUNS; round++) {
        for (const name of s.peers) {
          const run = await measure(peers.get(name)!, s, round);
          runs.push(run);
          if (run.ok) {
            console.log(`  ${name.padEnd(15)} ${run.rate.toFixed(0).padStart(6)} msg/s  ${run.cpuMsPerMsg.toFixed(3)} ms CPU/msg (user ${run.cpuUserMsPerMsg!.toFixed(3)}, sys ${run.cpuSysMsPerMsg!.toFixed(3)})  peak RSS ${(run.peakRssKiB / 1024).toFixed(0)} MiB  (all handled after ${run.drainSeconds.toFixed(2)} s: ${run.e2eRate.toFixed(0)} msg/s end to end)${run.quietWaitSeconds! > 1 ? `; waited ${run.quietWaitSeconds!.toFixed(0)} s for a quiet machine, ${(100 * run.busyBefore!).toFixed(0)} % busy` : ''}`);
            const parts = Object.entries(run.cpuMsPerMsgByProcess ?? {}).sort((x, y) => y[1] - x[1]).slice(0, 6);
            if (parts.length) console.log(`  ${''.padEnd(15)} CPU ms/msg by process: ${parts.map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')}`);
          } else console.log(`  ${name.padEnd(15)} FAILED: ${run.error}`);
        }
      }
      const r = summarize(s, runs);
      if (s.peers.includes('tern')) console.log(`  tern/postfix ${fmtRatio(r.ratios.postfix)}; tern/haraka ${fmtRatio(r.ratios.haraka)}; tern/sink ${fmtRatio(r.ratios.sink)}`);
      for (const c of r.compared ?? []) {
        console.log(`  ${c.a}/${c.b}: ${c.rate.median.toFixed(2)}x accepted, ${c.e2eRate.median.toFixed(2)}x end to end, ${c.cpuMsPerMsg.median.toFixed(2)}x CPU/msg`);
      }
      results.push(r);
    }
    if (!ISSUE16) lat = await latency(peers);
  } finally {
    for (const p of peers.values()) await p.stop().catch((e: unknown) => console.warn(`${p.name}: stop: ${(e as Error).message}`));
    await dns.close();
  }
  const out: AcceptResult = {
    kind: 'accept', quick: QUICK, issue16: ISSUE16, runsEach: RUNS, scale: SCALE, warmupMessages: WARMUP, haraka: HARAKA_VERSION, ternLimits: TERN_LIMITS,
    peerConfigs: Object.fromEntries([...peers].map(([n, p]) => [n, p.config])),
    machine: machine(), scenarios: results, latency: lat, seconds: (Date.now() - t0) / 1000,
    ternJournal,
  };
  if (!haveTaskset) console.log('  (not pinned: taskset missing or fewer than 2 CPUs)');
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(out, null, 2));
}

await main();
