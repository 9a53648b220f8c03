// Scale-out (issue 17, "Performance"): what the PostgreSQL store costs one
// node, and what a second node adds, side by side in one run.
//
//   embedded   one Tern node with the default node:sqlite store, on CPU 0.
//   postgres   the same node with `store.postgres` pointing at a private
//              cluster (test/helpers/postgres.ts); Tern on CPU 0, PostgreSQL
//              on CPU 1 with the load generator.
//   two-nodes  two Tern nodes sharing that database, node 1 on CPU 0, node 2
//              on CPU 1; two smtp-source instances (one per node, each half
//              the messages, 20 sessions each) started together. This machine
//              has two cores, so PostgreSQL and the load generator have no
//              core of their own: `--layout` picks where they go (below).
//
// Every node is configured like the `tern` peer of bench/peers.ts (durable
// spool, `delivery: discard`, inbound checks off), events on (the default),
// 1 KB messages over 20 sessions, a new connection per message. The nodes are
// started once, warmed up, then measured in interleaved rounds (embedded,
// postgres, two-nodes, embedded, …). The postgres row is node 1 of the pair
// measured alone; node 2 idles meanwhile, as the embedded node does during
// the others.
//
// Per run:
//   msg/s             messages / smtp-source's wall time (two nodes: all the
//                     messages / the time until both instances are done);
//   Tern CPU ms/msg   user+system time of the Tern process(es), every thread
//                     (the pg client's worker thread included), from the start
//                     until every message is discarded and its events are in
//                     the store;
//   PG CPU ms/msg     the same for PostgreSQL's processes (the postmaster and
//                     every child, reaped ones included through cutime);
//   events            rows the run added to the events table: every message
//                     must have its `queued` and its `delivered` event.
//
// Pinning. PostgreSQL forks a backend per connection, and a child inherits
// its parent's CPU mask: this driver pins itself to CPU 1 before starting the
// cluster, so the postmaster (started by pg_ctl, a grandchild) is on CPU 1
// from birth, and the driver re-pins the postmaster and every child it has
// (`taskset -p`) before any Tern connects and again before each run (the
// two-node layouts move them). Layouts for the two-node row:
//   shared  PostgreSQL, both smtp-source instances and the driver on CPU 1,
//           with node 2: the same places as in the postgres row, node 2 added
//           to the load generator's core.
//   free    PostgreSQL and both smtp-source instances unpinned (CPUs 0-1),
//           the kernel putting them where there is idle time; only the nodes
//           are pinned.
// `--layout both` (the default) measures both, as two rows.
//
// Before each run (warm-ups included) the driver waits, up to 10 minutes,
// until no other benchmark (bench/accept.ts, run.ts, relay.ts, api.ts) is
// running, then for a quiet machine (bench/lib.ts waitForQuiet, at most 90 s).
//
// PostgreSQL runs with fsync on, as in production (the test helper turns it
// off; see restartWithFsync), so that its commits cost what the embedded
// store's fsynced WAL costs.
//
//   node bench/scale.ts [--quick] [--write] [--runs R] [--messages N] [--warmup N]
//                       [--layout shared|free|both] [--pg-fsync off] [--cpu-prof] [--timeout S]
//
// --quick: one round of 1000 messages; --write: the table into
// docs/scale-bench.md; --cpu-prof: node 1 under `node --cpu-prof`, its
// profile summarized at the end (bench/profile.ts), to see where its time
// goes and how long its event loop waits on PostgreSQL (a profiled node is
// slower: not for the figures).

import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { startPostgres, type PgCluster } from '../test/helpers/postgres.ts';
import { freePort } from '../test/helpers/server.ts';
import {
  cli, cpuMeter, cpuMs, haveTaskset, LOAD_CPU, logCounter, machine, median, pinSelf, processTree, ROOT, SERVER_CPU, sleep, spread,
  startTern, tempDir, waitForQuiet, waitUntil, type Spread, type TernProcess,
} from './lib.ts';
import { ternConfig } from './peers.ts';
import { summarize as summarizeProfile } from './profile.ts';

const args = cli();
const QUICK = args.flag('quick');
const WRITE = args.flag('write');
const RUNS = args.num('runs', QUICK ? 1 : 3);
const MESSAGES = args.num('messages', QUICK ? 1000 : 5000);
const WARMUP = args.num('warmup', QUICK ? 1000 : 3000);
const SESSIONS = 20;
const SIZE = 1024;
const RUN_TIMEOUT_MS = args.num('timeout', 180) * 1000;
/** Node 1 (the postgres row, and half of the two-node rows) under `node --cpu-prof`, summarized as bench/profile.ts does at the end. */
const PROFILE = args.flag('cpu-prof');
const PG_FSYNC = args.str('pg-fsync') !== 'off';
const LAYOUT = args.str('layout') ?? 'both';
if (!['shared', 'free', 'both'].includes(LAYOUT)) throw new Error('--layout: shared, free or both');
const LAYOUTS = (LAYOUT === 'both' ? ['shared', 'free'] : [LAYOUT]) as Layout[];
/** The whole bench gives up (and cleans up) after this long: it must stop by itself. */
const OVERALL_TIMEOUT_MS = args.num('overall-timeout', 40 * 60) * 1000;
/** How long to wait for another engineer's benchmark to finish, and how often to look. */
const OTHERS_WAIT_MS = 10 * 60_000;
const OTHERS_POLL_MS = 10_000;
const OTHER_BENCHES = 'bench/(accept|run|relay|api).ts';
/** Two cores: both. */
const ALL_CPUS = '0-1';

type Layout = 'shared' | 'free';
type RowId = 'embedded' | 'postgres' | `two-nodes-${Layout}`;

interface Node { name: string; tern: TernProcess; port: number; handled: () => number }

interface Run {
  row: RowId;
  round: number;
  ok: boolean;
  error?: string;
  seconds: number;
  rate: number;
  /** Each node's own rate in the two-node rows (its half / its smtp-source's wall time). */
  perNode?: number[];
  ternCpuMsPerMsg: number;
  pgCpuMsPerMsg?: number;
  /** smtp-source's CPU (sampled every 50 ms), per message. */
  loadCpuMsPerMsg: number;
  /** Every CPU's busy time over the run (all processes on the machine), per message, and as a share of both CPUs' time. */
  machineCpuMsPerMsg: number;
  machineBusy: number;
  events?: EventCount;
  busyBefore: number;
}

interface EventCount { queued: number; delivered: number; other: number; complete: number }

/**
 * Waits until no other benchmark is running (another engineer's measurements
 * and ours would disturb each other), polling every 10 s for at most 10
 * minutes; then goes on regardless, and says so.
 */
async function waitForOtherBenches(): Promise<void> {
  const t0 = Date.now();
  let said = false;
  for (;;) {
    const r = spawnSync('pgrep', ['-f', OTHER_BENCHES], { encoding: 'utf8' });
    const mine = new Set(processTree(process.pid));
    const others = r.stdout.split('\n').filter(Boolean).map(Number).filter((p) => !mine.has(p));
    if (others.length === 0) return;
    if (Date.now() - t0 >= OTHERS_WAIT_MS) {
      console.warn(`  other benchmarks still running after ${OTHERS_WAIT_MS / 60_000} min (pids ${others.join(' ')}): going on`);
      return;
    }
    if (!said) console.log(`  waiting for other benchmarks to finish (pids ${others.join(' ')})`);
    said = true;
    await sleep(OTHERS_POLL_MS);
  }
}

/** Sets the CPU list of running processes (taskset -p; every thread with -a). */
function setAffinity(cpus: string, pids: number[]): void {
  if (!haveTaskset) return;
  for (const pid of pids) spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/** The CPU list a process may run on, as taskset prints it. */
function affinityOf(pid: number): string {
  const r = spawnSync('taskset', ['-c', '-p', String(pid)], { encoding: 'utf8' });
  return /:\s*(\S+)\s*$/.exec(r.stdout)?.[1] ?? '?';
}

/** The cluster's postmaster: the `postgres` process started with `-p PORT` whose parent is not a postgres process. */
function postmasterPid(port: number): number {
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (!argv[0]?.endsWith('/postgres')) continue;
      const i = argv.indexOf('-p');
      if (i < 0 || argv[i + 1] !== String(port)) continue;
      return Number(e);
    } catch {
      /* gone */
    }
  }
  throw new Error(`no postmaster on port ${port}`);
}

/**
 * test/helpers/postgres.ts starts its cluster with fsync=off (quick tests).
 * A node's own writes (the spool, the embedded store's WAL) are fsynced, so
 * for like for like the cluster is restarted here with the same command line
 * and fsync back on (a later -c wins), as a production server runs; pg_ctl
 * runs under this driver, so the new postmaster inherits its CPU 1 mask.
 * `--pg-fsync off` keeps the helper's setting.
 */
async function restartWithFsync(cluster: PgCluster, port: number): Promise<void> {
  const argv = fs.readFileSync(`/proc/${postmasterPid(port)}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const bin = path.dirname(argv[0]!);
  const data = argv[argv.indexOf('-D') + 1]!;
  const opts = argv.slice(1).filter((_, i, a) => a[i] !== '-D' && a[i - 1] !== '-D');
  await cluster.stop();
  const pgCtl = [path.join(bin, 'pg_ctl'), '-D', data, '-o', [...opts, '-c', 'fsync=on'].join(' '), '-l', path.join(path.dirname(data), 'log'), '-w', '-t', '30', 'start'];
  const root = process.getuid?.() === 0;
  const [cmd, a] = root ? ['runuser', ['-u', 'postgres', '--', ...pgCtl]] : [pgCtl[0]!, pgCtl.slice(1)];
  const r = spawnSync(cmd, a, { cwd: '/', encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`pg_ctl start with fsync=on failed: ${r.stderr || r.stdout}`);
}

/**
 * The main thread's profile of a node run with --cpu-prof (the largest file:
 * the others are the start before `tern serve` re-executes itself and the pg
 * worker), summarized, with how much of the event loop's non-idle time went
 * to waiting on PostgreSQL: the sync client's #send (Atomics.wait) shows as
 * that function's own time.
 */
function printProfile(dir: string): void {
  if (!PROFILE) return;
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(dir, f));
  const main = files.sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0];
  if (!main) return console.warn('no profile written');
  const p = JSON.parse(fs.readFileSync(main, 'utf8')) as { nodes: { id: number; callFrame: { functionName: string; url: string } }[]; samples: number[]; timeDeltas: number[] };
  const frame = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  let idle = 0;
  let waiting = 0;
  let total = 0;
  p.samples.forEach((id, i) => {
    const t = p.timeDeltas[i] ?? 0;
    const f = frame.get(id)!;
    total += t;
    if (f.functionName === '(idle)') idle += t;
    else if (f.functionName === '#send' && f.url.endsWith('sync-client.ts')) waiting += t;
  });
  const busy = total - idle;
  console.log(`\nnode 1 under --cpu-prof (start-up, warm-up and every row it served): event loop busy ${(busy / 1e6).toFixed(1)} s, of which ${(waiting / 1e6).toFixed(1)} s (${((100 * waiting) / busy).toFixed(0)} %) blocked waiting on PostgreSQL (#send in src/store/pg/sync-client.ts)`);
  console.log(summarizeProfile(p as Parameters<typeof summarizeProfile>[0], 25));
}

/** smtp-source instances running now: killed by the clean-up if the bench is stopped mid-run. */
const sources = new Set<ChildProcess>();

/** smtp-source as bench/lib.ts runSource, on a given CPU list (null: unpinned). */
async function source(port: number, messages: number, cpus: string | null): Promise<{ seconds: number; status: number | null; stderr: string; cpuMs: number }> {
  const flags = ['-s', String(SESSIONS), '-m', String(messages), '-l', String(SIZE), '-f', 'load@load.test', '-t', 'user@tern.test', `127.0.0.1:${port}`];
  // Unpinned: a child of this (pinned) driver would inherit CPU 1 only, so it is set to both explicitly.
  const [cmd, argv] = haveTaskset ? ['taskset', ['-c', cpus ?? ALL_CPUS, 'smtp-source', ...flags]] : ['smtp-source', flags];
  const t0 = process.hrtime.bigint();
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  sources.add(child);
  child.once('exit', () => sources.delete(child));
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    if (stderr.length < 4000) stderr += d;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  // Its CPU time, sampled (it is reaped as it exits): what the last 50 ms cost is lost.
  let cpu = 0;
  const sampler = setInterval(() => (cpu = Math.max(cpu, cpuMs([child.pid!]))), 50);
  const status = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(timer);
  clearInterval(sampler);
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, status, stderr, cpuMs: cpu };
}

/** Busy and total jiffies over all CPUs (/proc/stat's first line; idle and iowait are not busy). */
function machineJiffies(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, x) => a + x, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

/** Events rows, counted the same way in either store: by type, and messages having both `queued` and `delivered`. */
const COUNT_SQL = `SELECT
  (SELECT count(*) FROM events WHERE id > $1 AND type = 'queued') AS queued,
  (SELECT count(*) FROM events WHERE id > $1 AND type = 'delivered') AS delivered,
  (SELECT count(*) FROM events WHERE id > $1 AND type NOT IN ('queued', 'delivered')) AS other,
  (SELECT count(*) FROM (SELECT queue_id FROM events WHERE id > $1 GROUP BY queue_id
     HAVING sum(CASE WHEN type = 'queued' THEN 1 ELSE 0 END) > 0 AND sum(CASE WHEN type = 'delivered' THEN 1 ELSE 0 END) > 0) AS m) AS complete`;

interface EventStore { settings?: () => Promise<string>; maxId: () => Promise<string>; count: (after: string) => Promise<EventCount>; close: () => Promise<void> }

function toCount(r: Record<string, unknown>): EventCount {
  return { queued: Number(r.queued), delivered: Number(r.delivered), other: Number(r.other), complete: Number(r.complete) };
}

async function pgEvents(url: string): Promise<EventStore> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return {
    maxId: async () => ((await c.query<{ m: string | null }>('SELECT max(id) AS m FROM events')).rows[0]!.m ?? ''),
    count: async (after) => toCount((await c.query(COUNT_SQL, [after])).rows[0] as Record<string, unknown>),
    settings: async () => {
      const names = ['server_version', 'fsync', 'synchronous_commit', 'wal_level', 'shared_buffers', 'max_connections'];
      const rows = (await c.query<{ name: string; setting: string; unit: string | null }>('SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)', [names])).rows;
      return names.map((n) => rows.find((r) => r.name === n)).filter((r) => r).map((r) => `${r!.name}=${r!.setting}${r!.unit ? ` (${r!.unit})` : ''}`).join(', ');
    },
    close: () => c.end(),
  };
}

/** The embedded store read beside the running node (WAL: readers do not block its writer). */
function sqliteEvents(file: string): EventStore {
  const db = new DatabaseSync(file, { readOnly: true });
  const sql = COUNT_SQL.replaceAll('$1', '?');
  return {
    maxId: async () => String((db.prepare('SELECT max(id) AS m FROM events').get() as { m: string | null }).m ?? ''),
    count: async (after) => toCount(db.prepare(sql).get(after, after, after, after) as Record<string, unknown>),
    close: async () => db.close(),
  };
}

async function startNode(name: string, cpu: number, dns: string, store: Record<string, unknown> | undefined): Promise<Node> {
  const dir = tempDir(`tern-scale-${name}-`);
  const port = await freePort('127.0.0.1');
  const config = { ...ternConfig('tern', { port, dataDir: path.join(dir, 'data'), dns }), ...(store ? { store } : {}) };
  // startTern's child takes this process's environment; `tern serve` keeps NODE_OPTIONS when it re-executes itself.
  const profiled = PROFILE && name === 'node1';
  if (profiled) process.env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${dir}`;
  let tern: TernProcess;
  try {
    tern = await startTern(config, dir, cpu);
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  } finally {
    if (profiled) delete process.env.NODE_OPTIONS;
  }
  return { name, tern, port, handled: logCounter(tern.logFile, '"relay":"discard"') };
}

interface Row { id: RowId; nodes: Node[]; events: EventStore; pgPids: (() => number[]) | null; layout?: Layout }

/**
 * One run of a row: N messages split evenly over its nodes, one smtp-source
 * each, started together; done when every message is discarded and its two
 * events are in the store.
 */
async function measure(row: Row, messages: number, round: number, place: (layout: Layout | undefined) => void): Promise<Run> {
  await waitForOtherBenches();
  place(row.layout);
  // Longer than bench/accept.ts's 15 s: a test run of another engineer takes both CPUs for minutes.
  const quiet = await waitForQuiet({ maxMs: 90_000 });
  const after = await row.events.maxId();
  const handled0 = row.nodes.map((n) => n.handled());
  const ternCpu = cpuMeter(() => row.nodes.map((n) => n.tern.pid));
  const pgCpu = row.pgPids ? cpuMeter(row.pgPids) : undefined;
  const share = row.nodes.map((_, i) => Math.floor(messages / row.nodes.length) + (i < messages % row.nodes.length ? 1 : 0));
  const loadCpus = row.layout === 'free' ? null : String(LOAD_CPU);
  const j0 = machineJiffies();
  const t0 = process.hrtime.bigint();
  const results = await Promise.all(row.nodes.map((n, i) => source(n.port, share[i]!, loadCpus)));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const fail = (error: string): Run => ({ row: row.id, round, ok: false, error, seconds, rate: NaN, ternCpuMsPerMsg: NaN, loadCpuMsPerMsg: NaN, machineCpuMsPerMsg: NaN, machineBusy: NaN, busyBefore: quiet.busy });
  const bad = results.find((r) => r.status !== 0);
  if (bad) return fail(`smtp-source exited ${bad.status}: ${bad.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
  const allHandled = () => row.nodes.every((n, i) => n.handled() - handled0[i]! >= share[i]!);
  if (!(await waitUntil(allHandled, RUN_TIMEOUT_MS, 20))) {
    return fail(`only ${row.nodes.map((n, i) => n.handled() - handled0[i]!).join(' + ')} of ${messages} discarded`);
  }
  // Events are written in batches (100 ms apart): the run ends when the last batch is in.
  let events = await row.events.count(after);
  const end = Date.now() + 30_000;
  while (events.complete < messages && Date.now() < end) {
    await sleep(100);
    events = await row.events.count(after);
  }
  const ternMs = ternCpu();
  const pgMs = pgCpu?.();
  const j1 = machineJiffies();
  const run: Run = {
    row: row.id, round, ok: events.complete >= messages, seconds, rate: messages / seconds,
    ternCpuMsPerMsg: ternMs / messages, events, busyBefore: quiet.busy,
    loadCpuMsPerMsg: results.reduce((a, r) => a + r.cpuMs, 0) / messages,
    machineCpuMsPerMsg: ((j1.busy - j0.busy) * 10) / messages,
    machineBusy: (j1.busy - j0.busy) / (j1.total - j0.total),
    ...(pgMs !== undefined ? { pgCpuMsPerMsg: pgMs / messages } : {}),
    ...(row.nodes.length > 1 ? { perNode: results.map((r, i) => share[i]! / r.seconds) } : {}),
  };
  if (!run.ok) run.error = `only ${events.complete} of ${messages} messages have both events in the store (${JSON.stringify(events)})`;
  return run;
}

interface RowSummary { id: RowId; runs: number; failed: number; rate: Spread; ternCpu: Spread; pgCpu?: Spread; loadCpu: Spread; machineCpu: Spread; machineBusy: Spread; perNode?: Spread[]; events: EventCount }

function summarize(id: RowId, runs: Run[]): RowSummary {
  const all = runs.filter((r) => r.row === id);
  const ok = all.filter((r) => r.ok);
  const sum = (f: (e: EventCount) => number) => all.reduce((a, r) => a + (r.events ? f(r.events) : 0), 0);
  const nan: Spread = { median: NaN, min: NaN, max: NaN };
  const s = (xs: number[]) => (xs.length ? spread(xs) : nan);
  const pg = ok.filter((r) => r.pgCpuMsPerMsg !== undefined);
  const perNode = ok[0]?.perNode?.map((_, i) => s(ok.map((r) => r.perNode![i]!)));
  return {
    id, runs: all.length, failed: all.length - ok.length,
    rate: s(ok.map((r) => r.rate)), ternCpu: s(ok.map((r) => r.ternCpuMsPerMsg)),
    loadCpu: s(ok.map((r) => r.loadCpuMsPerMsg)), machineCpu: s(ok.map((r) => r.machineCpuMsPerMsg)), machineBusy: s(ok.map((r) => 100 * r.machineBusy)),
    ...(pg.length ? { pgCpu: s(pg.map((r) => r.pgCpuMsPerMsg!)) } : {}),
    ...(perNode ? { perNode } : {}),
    events: { queued: sum((e) => e.queued), delivered: sum((e) => e.delivered), other: sum((e) => e.other), complete: sum((e) => e.complete) },
  };
}

/** a/b round by round (rounds where both succeeded), median and range. */
function ratio(runs: Run[], a: RowId, b: RowId): Spread | undefined {
  const xs = runs.filter((r) => r.row === a && r.ok).flatMap((x) => {
    const y = runs.find((r) => r.row === b && r.ok && r.round === x.round);
    return y ? [x.rate / y.rate] : [];
  });
  return xs.length ? spread(xs) : undefined;
}

const f0 = (s: Spread) => `${s.median.toFixed(0)} (${s.min.toFixed(0)}–${s.max.toFixed(0)})`;
const f3 = (s: Spread | undefined) => (s ? `${s.median.toFixed(3)} (${s.min.toFixed(3)}–${s.max.toFixed(3)})` : '–');
const f2 = (s: Spread | undefined, unit = '') => (s ? `${s.median.toFixed(2)}${unit} (${s.min.toFixed(2)}–${s.max.toFixed(2)})` : 'n/a');

const ROW_TEXT: Record<RowId, string> = {
  embedded: 'embedded (node:sqlite), 1 node on CPU 0',
  postgres: 'postgres, 1 node on CPU 0, PostgreSQL on CPU 1',
  'two-nodes-shared': 'postgres, 2 nodes (CPU 0, CPU 1), PostgreSQL and load on CPU 1',
  'two-nodes-free': 'postgres, 2 nodes (CPU 0, CPU 1), PostgreSQL and load unpinned',
};

interface Report {
  command: string;
  machine: ReturnType<typeof machine>;
  seconds: number;
  summaries: RowSummary[];
  runs: Run[];
  ratios: { pgVsEmbedded?: Spread; two: { layout: Layout; vsPostgres?: Spread; vsEmbedded?: Spread }[] };
  pinning: string[];
  pgSettings: string;
  revision: string;
  busyBefore: number[];
}

function table(r: Report): string[] {
  const out = [
    '| row | msg/s | Tern CPU ms/msg | PostgreSQL CPU ms/msg | smtp-source CPU ms/msg | both CPUs busy, % | events in the store (all rounds) | per node msg/s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |',
  ];
  for (const s of r.summaries) {
    const ev = `${s.events.queued} queued, ${s.events.delivered} delivered${s.events.other ? `, ${s.events.other} other` : ''}; ${s.events.complete} of ${s.runs * MESSAGES} messages with both`;
    out.push(`| ${ROW_TEXT[s.id]} | ${f0(s.rate)}${s.failed ? ` (${s.failed} of ${s.runs} runs failed)` : ''} | ${f3(s.ternCpu)} | ${f3(s.pgCpu)} | ${f3(s.loadCpu)} | ${f0(s.machineBusy)} | ${ev} | ${s.perNode ? s.perNode.map(f0).join(' + ') : ''} |`);
  }
  return out;
}

/** Met or not by the median; a range across the threshold says the rounds disagree. */
function verdict(x: Spread | undefined, atLeast: number): string {
  if (!x) return 'n/a';
  const v = x.median >= atLeast ? '**met**' : '**not met**';
  return x.min < atLeast && x.max >= atLeast ? `${v} (borderline: the rounds fall on both sides)` : v;
}

function targets(r: Report): string[] {
  const out = ['| target | measured (round by round, median and range) | |', '| --- | --- | --- |'];
  const pg = r.ratios.pgVsEmbedded;
  out.push(`| postgres at most 15 % below embedded (postgres/embedded ≥ 0.85) | ${f2(pg, '×')} | ${verdict(pg, 0.85)} |`);
  for (const t of r.ratios.two) {
    out.push(`| two nodes (${t.layout}) ≥ 1.6× one node: against the postgres row (the fair comparison) | ${f2(t.vsPostgres, '×')} | ${verdict(t.vsPostgres, 1.6)} |`);
    out.push(`| two nodes (${t.layout}) ≥ 1.6× one node: against the embedded row | ${f2(t.vsEmbedded, '×')} | ${verdict(t.vsEmbedded, 1.6)} |`);
  }
  return out;
}

/** The commit measured, and whether src/ had uncommitted changes (other engineers share this checkout). */
function revision(): string {
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  if (head.status !== 0) return 'unknown (not a git checkout)';
  const dirty = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'], { encoding: 'utf8' }).stdout.trim();
  return `${head.stdout.trim()}${dirty ? ' with uncommitted changes in src/' : ''}`;
}

/**
 * The CPU a two-node row would need at 1.6× the postgres row, from the costs
 * measured in that row (Tern, PostgreSQL and smtp-source per message): on
 * this 2-core machine the load generator and PostgreSQL run beside the
 * nodes, so above 2 CPUs the target cannot be met whatever the pinning.
 */
function cpuBudget(r: Report): string[] {
  const pg = r.summaries.find((s) => s.id === 'postgres');
  const emb = r.summaries.find((s) => s.id === 'embedded');
  const out: string[] = [];
  // A node that is not waiting is computing: the share of its core it used says how long it waited (its event loop blocked on the store, or idle).
  const used = (s: RowSummary) => (s.rate.median * s.ternCpu.median) / 10;
  if (pg && emb && !Number.isNaN(pg.rate.median) && !Number.isNaN(emb.rate.median)) {
    out.push(`One node: the embedded node used ${used(emb).toFixed(0)} % of its core (msg/s × Tern CPU ms/msg), the postgres node ${used(pg).toFixed(0)} %, at ${(pg.ternCpu.median / emb.ternCpu.median).toFixed(2)}× the embedded node's CPU per message: what the postgres node lacks is time spent waiting, not CPU.`);
  }
  for (const s of r.summaries.filter((x) => x.id.startsWith('two-nodes'))) {
    if (!pg || !emb || Number.isNaN(s.rate.median)) continue;
    const perMsg = s.ternCpu.median + (s.pgCpu?.median ?? 0) + s.loadCpu.median;
    const need = (rate: number) => (1.6 * rate * perMsg) / 1000;
    out.push(`${s.id}: Tern ${s.ternCpu.median.toFixed(3)} + PostgreSQL ${(s.pgCpu?.median ?? 0).toFixed(3)} + smtp-source ${s.loadCpu.median.toFixed(3)} = ${perMsg.toFixed(3)} ms of CPU per message; 1.6× the postgres row (${(1.6 * pg.rate.median).toFixed(0)} msg/s) would need ${need(pg.rate.median).toFixed(2)} CPUs, 1.6× the embedded row (${(1.6 * emb.rate.median).toFixed(0)} msg/s) ${need(emb.rate.median).toFixed(2)} CPUs, of the machine's ${r.machine.nproc}${need(Math.min(pg.rate.median, emb.rate.median)) > r.machine.nproc ? ' (more than it has: unreachable at these costs, whatever the pinning)' : ''}; both CPUs were ${s.machineBusy.median.toFixed(0)} % busy (median) during the row's runs.`);
  }
  return out;
}

function markdown(r: Report): string {
  const busy = r.busyBefore.length ? `busy just before the runs: median ${(100 * median(r.busyBefore)).toFixed(0)} %, at most ${(100 * Math.max(...r.busyBefore)).toFixed(0)} %; ${r.busyBefore.filter((b) => b >= 0.15).length} of ${r.busyBefore.length} runs started on a machine still busy after 90 s` : '';
  const m = r.machine;
  return [
    '# Scale-out benchmark (issue 17)',
    '',
    `Generated by \`${r.command}\` (bench/scale.ts) on ${m.date}, Tern at ${r.revision}; ${r.seconds.toFixed(0)} s in all. Rerun: \`npm run bench:scale -- --write\`.`,
    '',
    `Machine: ${m.nproc} × ${m.cpu}, ${m.memoryGiB.toFixed(1)} GiB, ${m.kernel}, Node ${m.node}, Postfix ${m.postfix} (smtp-source), load average ${m.loadavg.map((x) => x.toFixed(1)).join(' / ')} at the end${m.pinned ? '' : '; **not pinned** (taskset missing or fewer than 2 CPUs)'}. PostgreSQL: a private cluster (test/helpers/postgres.ts) on loopback, ${r.pgSettings}${r.pgSettings.includes('fsync=on') ? ' (the helper starts it with fsync off for quick tests; this bench restarts it with fsync on, as production runs, since the embedded store and the spool fsync too)' : ''}.`,
    '',
    `Each node is configured like bench/peers.ts's \`tern\` peer (durable spool, \`delivery: discard\`, inbound checks off), events on. Load: ${MESSAGES} × 1 KB per run, ${SESSIONS} sessions per node, a new connection per message (Postfix's smtp-source); the two-node rows send half the messages to each node, one smtp-source each, started together. ${r.runs.length / r.summaries.length} interleaved round(s), after an unmeasured warm-up of ${WARMUP} messages per node. The postgres row is node 1 of the two-node pair measured alone.`,
    '',
    `**msg/s**: messages / wall time until smtp-source has the last 250 (two nodes: until both are done; per node: its half / its own smtp-source's time). **CPU ms/msg**: user+system time from the start of a run until every message is discarded and its events are in the store, per message: Tern's process (every thread, the pg client's worker included; two nodes: both), PostgreSQL's processes, and smtp-source (sampled every 50 ms). **Both CPUs busy**: the whole machine's busy share over the same span. **Events**: rows each run added to \`events\`, summed over the rounds; every message must have a \`queued\` and a \`delivered\` event. Medians (min–max over the rounds); ratios round by round, then the median (min–max). Before each run the driver waits for other benchmarks to finish and for a quiet machine (${busy}).`,
    '',
    ...table(r),
    '',
    '## Targets',
    '',
    ...targets(r),
    '',
    'The postgres row is the fair base for the two-node ratio: both use the same store, so the ratio is what the second node adds; against the embedded row the ratio also carries the difference between the stores.',
    '',
    '## What limits the rows',
    '',
    ...cpuBudget(r).map((l) => `- ${l}`),
    '',
    'Where a node\'s own time goes, and how long its event loop waits on PostgreSQL (the store is synchronous: docs/scale-out.md): `node bench/scale.ts --quick --cpu-prof` prints node 1\'s profile (not for the figures: a profiled node is slower).',
    '',
    '## Pinning',
    '',
    ...r.pinning.map((l) => `- ${l}`),
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const t0 = Date.now();
  // Before pinning: pinned to one CPU, this process would see one (os.availableParallelism follows the mask).
  const machineAtStart = machine();
  // This driver on CPU 1 first: PostgreSQL, started below by pg_ctl under it, inherits the mask.
  pinSelf();
  const dns = await startDnsServer({});
  const cleanups: (() => Promise<void>)[] = [];
  let cleaning: Promise<void> | null = null;
  const cleanup = () => {
    cleaning ??= (async () => {
      for (const child of sources) child.kill('SIGKILL');
      for (const c of cleanups.reverse()) await c().catch((e: unknown) => console.warn(`cleanup: ${(e as Error).message}`));
      await dns.close().catch(() => {});
    })();
    return cleaning;
  };
  const bail = (why: string) => {
    console.error(`scale: ${why}; stopping everything`);
    void cleanup().finally(() => process.exit(1));
  };
  process.once('SIGINT', () => bail('SIGINT'));
  process.once('SIGTERM', () => bail('SIGTERM'));
  const overall = setTimeout(() => bail(`not done after ${OVERALL_TIMEOUT_MS / 60_000} min`), OVERALL_TIMEOUT_MS);
  overall.unref();
  try {
    const cluster: PgCluster = await startPostgres();
    cleanups.push(() => cluster.destroy());
    if (PG_FSYNC) await restartWithFsync(cluster, cluster.port);
    const postmaster = postmasterPid(cluster.port);
    const pgPids = () => processTree(postmaster);
    const placePg = (cpus: string) => setAffinity(cpus, pgPids());
    placePg(String(LOAD_CPU));
    const url = await cluster.createDatabase('tern_scale');

    const embedded = await startNode('embedded', SERVER_CPU, dns.address, undefined);
    cleanups.push(() => embedded.tern.stop().finally(() => fs.rmSync(embedded.tern.dir, { recursive: true, force: true })));
    // Node 1 first, so that the schema is made once before node 2 starts (they may start together; this just keeps the log quiet).
    const node1 = await startNode('node1', SERVER_CPU, dns.address, { postgres: url });
    cleanups.push(() => node1.tern.stop().then(() => printProfile(node1.tern.dir)).finally(() => fs.rmSync(node1.tern.dir, { recursive: true, force: true })));
    const node2 = await startNode('node2', LOAD_CPU, dns.address, { postgres: url });
    cleanups.push(() => node2.tern.stop().finally(() => fs.rmSync(node2.tern.dir, { recursive: true, force: true })));
    // Backends forked for the nodes' connections inherited CPU 1; pinned again anyway (children forked before the first pin).
    placePg(String(LOAD_CPU));

    const pgStore = await pgEvents(url);
    cleanups.push(() => pgStore.close());
    const pgSettings = await pgStore.settings!();
    console.log(`scale: PostgreSQL ${pgSettings}`);
    const liteStore = sqliteEvents(path.join(embedded.tern.dir, 'data', 'tern.db'));
    cleanups.push(() => liteStore.close());

    const rows: Row[] = [
      { id: 'embedded', nodes: [embedded], events: liteStore, pgPids: null },
      { id: 'postgres', nodes: [node1], events: pgStore, pgPids },
      ...LAYOUTS.map((layout): Row => ({ id: `two-nodes-${layout}`, nodes: [node1, node2], events: pgStore, pgPids, layout })),
    ];
    // The postgres and shared rows: PostgreSQL on the load generator's CPU; free: anywhere.
    const place = (layout: Layout | undefined) => placePg(layout === 'free' ? ALL_CPUS : String(LOAD_CPU));

    console.log(`scale: warm-up, ${WARMUP} x 1 KB over ${SESSIONS} sessions per node (not measured)`);
    const warmups: Row[] = [rows[0]!, rows[1]!, { ...rows[1]!, nodes: [node2] }];
    for (const row of warmups) {
      const w = await measure(row, WARMUP, -1, place);
      if (!w.ok) throw new Error(`${row.nodes[0]!.name}: warm-up failed: ${w.error}`);
      console.log(`  ${row.nodes[0]!.name.padEnd(9)} ${w.rate.toFixed(0)} msg/s`);
    }

    const runs: Run[] = [];
    console.log(`scale: ${MESSAGES} x 1 KB, ${SESSIONS} sessions per node, new connection per message, ${RUNS} round(s)`);
    for (let round = 0; round < RUNS; round++) {
      for (const row of rows) {
        const r = await measure(row, MESSAGES, round, place);
        runs.push(r);
        if (!r.ok) {
          console.log(`  ${row.id.padEnd(17)} FAILED: ${r.error}`);
          continue;
        }
        const ev = r.events ? `; events +${r.events.queued} queued +${r.events.delivered} delivered, ${r.events.complete} complete` : '';
        const per = r.perNode ? ` (${r.perNode.map((x) => x.toFixed(0)).join(' + ')} per node)` : '';
        console.log(`  ${row.id.padEnd(17)} ${r.rate.toFixed(0).padStart(5)} msg/s${per}  Tern ${r.ternCpuMsPerMsg.toFixed(3)} ms CPU/msg${r.pgCpuMsPerMsg !== undefined ? `  PostgreSQL ${r.pgCpuMsPerMsg.toFixed(3)}` : ''}  smtp-source ${r.loadCpuMsPerMsg.toFixed(3)}  CPUs ${(100 * r.machineBusy).toFixed(0)} % busy${ev}${r.busyBefore > 0.15 ? `; ${(100 * r.busyBefore).toFixed(0)} % busy before` : ''}`);
      }
    }

    // Where each process was allowed to run, as the kernel has it now (the last row's placement).
    const pinning = [
      `Tern: embedded node and node 1 on CPU ${affinityOf(embedded.tern.pid)}, node 2 on CPU ${affinityOf(node2.tern.pid)} (\`taskset -c\` at start, bench/lib.ts startTern).`,
      `PostgreSQL (${pgPids().length} processes at the end: the postmaster, its helpers, and a backend per connection: each node's store client and its LISTEN connection, and this driver's counting client): this driver pins itself to CPU ${LOAD_CPU} before starting the cluster, so pg_ctl's postmaster inherits CPU ${LOAD_CPU} and every backend it forks inherits it in turn; the driver also re-pins the postmaster and all its children (\`taskset -a -p -c\`) before any node connects and before each run. embedded, postgres and two-nodes-shared: CPU ${LOAD_CPU}; two-nodes-free: CPUs ${ALL_CPUS}.`,
      `Load: smtp-source on CPU ${LOAD_CPU} (one per node in the two-node rows), except two-nodes-free: unpinned (CPUs ${ALL_CPUS}). This driver on CPU ${LOAD_CPU}.`,
      'Two cores, two nodes: PostgreSQL and the load generator have no core of their own. `shared` keeps them where the one-node rows have them, on CPU 1, so node 2 gets what they leave of its core; `free` lets the kernel put them wherever there is idle time, on either node\'s core. Neither gives both nodes a whole core, so neither is the 2× of two machines.',
    ];
    const report: Report = {
      command: `node bench/scale.ts ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { ...machine(), nproc: machineAtStart.nproc, pinned: machineAtStart.pinned },
      seconds: (Date.now() - t0) / 1000,
      summaries: rows.map((r) => summarize(r.id, runs)),
      runs,
      ratios: {
        pgVsEmbedded: ratio(runs, 'postgres', 'embedded'),
        two: LAYOUTS.map((layout) => ({ layout, vsPostgres: ratio(runs, `two-nodes-${layout}`, 'postgres'), vsEmbedded: ratio(runs, `two-nodes-${layout}`, 'embedded') })),
      },
      pinning,
      pgSettings,
      revision: revision(),
      busyBefore: runs.map((r) => r.busyBefore),
    };
    console.log('');
    for (const l of [...table(report), '', ...targets(report), '', ...cpuBudget(report)]) console.log(l);
    if (WRITE) {
      fs.writeFileSync(path.join(ROOT, 'docs/scale-bench.md'), markdown(report));
      console.log('\nwrote docs/scale-bench.md');
    }
  } finally {
    clearTimeout(overall);
    await cleanup();
  }
}

await main();
