// `npm run bench [-- --quick]`: the side-by-side benchmark of Tern, Postfix,
// Haraka and smtp-sink. First the disk's own limits, in this process
// (bench/disk.ts): its fdatasync rate with one writer, and the Maildir floor
// (files/s and user / system CPU per 1 KiB Maildir file, with and without
// fdatasync and the directory fsync). Then, each as its own process:
//
//   bench/accept.ts   accepting: throughput, CPU and memory under load over
//                     sizes × sessions × connection reuse, then latency p50/p99
//   bench/memory.ts   memory per idle connection, RSS while one 100 MB message
//                     comes in (skipped with --quick)
//   bench/relay.ts    relaying end to end, Tern vs Postfix
//
// then writes docs/benchmarks.json (every run) and docs/benchmarks.md
// (bench/report.ts: headline ratios, targets, machine, method, tables) and
// prints the headline ratios and the targets. Server CPU per message is
// recorded as user + system and split into the two.
//
//   --quick        1 KB at 20 sessions only (Maildir; new connection, many
//                  per connection), one run each, fewer messages, plus a
//                  short relay run: about two minutes
//   --issue16      only the rows of the configuration users run (issue 16):
//                  Tern's defaults and Tern like for like against Postfix,
//                  all delivering into a Maildir (1 KB × 20 and × 100
//                  sessions, 100 KB × 20), and the relay rows with and
//                  without DKIM signing; no memory, no latency. About five
//                  minutes with the default 3 rounds:
//
//                    npm run bench -- --issue16
//
//                  (the same as `node bench/run.ts --issue16`; it rewrites
//                  docs/benchmarks.md and docs/benchmarks.json with just
//                  these rows)
//   --runs R       rounds per scenario (default 3; quick 1)
//   --scale F      multiply every message count (e.g. 0.1 for a fast check
//                  of every scenario); --messages N: the 1 KB count becomes N
//   --only REGEX   accept scenarios whose id matches (e.g. '^1k-s20-')
//   --no-memory    skip bench/memory.ts
//   --json FILE    write the results to FILE and the report to FILE with
//                  .md for .json, instead of docs/benchmarks.json and
//                  docs/benchmarks.md (a trial run that leaves docs/ alone)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { cli, machine, ROOT, waitForQuiet } from './lib.ts';
import type { AcceptResult } from './accept.ts';
import type { MemoryResult } from './memory.ts';
import type { RelayResult } from './relay.ts';
import { issue16Targets, renderMarkdown, targets } from './report.ts';
import { measureDisk, measureMaildirFloor, type MaildirFloorResult } from './disk.ts';
import type { BenchResults } from './report.ts';

const argv = process.argv.slice(2);
const args = cli(argv);
const QUICK = args.flag('quick');
const ISSUE16 = args.flag('issue16');
const RUNS = args.str('runs');
const SCALE = args.str('messages') !== undefined ? args.num('messages', 5000) / 5000 : args.num('scale', 1);
const ONLY = args.str('only');
const jsonOut = args.str('json');
const jsonFile = jsonOut ? path.resolve(jsonOut) : path.join(ROOT, 'docs/benchmarks.json');
const mdFile = jsonOut ? jsonFile.replace(/\.json$/, '') + '.md' : path.join(ROOT, 'docs/benchmarks.md');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-bench-run-'));

function run(script: string, extra: string[]): unknown {
  const out = path.join(tmp, `${script}.json`);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bench', `${script}.ts`), ...extra, '--json', out], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`bench/${script}.ts exited ${r.status ?? r.signal}`);
  return JSON.parse(fs.readFileSync(out, 'utf8'));
}

/** The Tern that was measured: this checkout's commit and any uncommitted changes under src/. */
function ternVersion(): { commit: string; uncommittedSrc: string[] } {
  const git = (a: string[]) => spawnSync('git', a, { cwd: ROOT, encoding: 'utf8' });
  const head = git(['rev-parse', '--short', 'HEAD']);
  const st = git(['status', '--porcelain', '--', 'src']);
  return {
    commit: head.status === 0 ? head.stdout.trim() : 'unknown',
    uncommittedSrc: st.status === 0 ? st.stdout.split('\n').filter(Boolean).map((l) => l.slice(3)) : [],
  };
}

const t0 = Date.now();
const before = machine();
// The disk's own rate of durable commits, before anything else runs.
const disk = measureDisk(QUICK ? 1 : 3);
console.log(`disk: ${disk.syncsPerSecond.toFixed(0)} fdatasync/s after 1 KiB appends (median ${disk.medianMs.toFixed(2)} ms)`);
// The kernel CPU one durable Maildir file costs on this disk, whatever the
// server: the floor under every Maildir row. On a quiet machine, as the
// accept runs are (other work inflates system time through shared locks and caches).
// Measured pinned to CPU 0 like the servers (their thread pool shares that
// core), in a child under taskset; in this process if there is no taskset.
await waitForQuiet();
const floorSize = QUICK ? { files: 1000, maxSeconds: 1 } : { files: 5000, maxSeconds: 3 };
const maildirFloor = await (async (): Promise<MaildirFloorResult> => {
  const child = spawnSync('taskset', ['-c', '0', process.execPath, path.join(ROOT, 'bench', 'disk.ts'), '--seconds', '0.1', '--files', String(floorSize.files), '--max-seconds', String(floorSize.maxSeconds)], { encoding: 'utf8', timeout: 120_000 });
  if (child.status === 0) return { ...(JSON.parse(child.stdout) as { maildirFloor: MaildirFloorResult }).maildirFloor, pinned: true };
  return { ...(await measureMaildirFloor(floorSize)), pinned: false };
})();
{
  const v = (x: typeof maildirFloor.durable) => `${x.filesPerSecond.toFixed(0)} files/s, ${x.userUsPerFile.toFixed(0)} µs user + ${x.systemUsPerFile.toFixed(0)} µs system per file`;
  console.log(`maildir floor (1 KiB files, ${maildirFloor.inFlight} in flight): durable ${v(maildirFloor.durable)}; without fdatasync and directory fsync ${v(maildirFloor.nonDurable)}`);
}
const tern = ternVersion();
let data: BenchResults;
try {
  const acceptArgs = [
    ...(QUICK ? ['--quick'] : []),
    ...(ISSUE16 ? ['--issue16'] : []),
    ...(RUNS ? ['--runs', RUNS] : []),
    ...(SCALE !== 1 ? ['--scale', String(SCALE)] : []),
    ...(ONLY ? ['--only', ONLY] : []),
  ];
  // The checkout is read again before each stage: a Tern started later runs what is on disk then.
  const stages: Record<string, ReturnType<typeof ternVersion>> = { accept: tern };
  const accept = run('accept', acceptArgs) as AcceptResult;
  if (!(QUICK || ISSUE16 || args.flag('no-memory'))) stages.memory = ternVersion();
  const memory = stages.memory ? (run('memory', []) as MemoryResult) : undefined;
  stages.relay = ternVersion();
  const relayArgs = QUICK
    ? ['--runs', '1', '--messages', '500']
    : ['--runs', RUNS ?? '3', '--messages', String(Math.max(100, Math.round(2000 * SCALE)))];
  const relay = run('relay', relayArgs) as RelayResult;
  data = {
    command: `npm run bench${argv.length ? ' -- ' + argv.join(' ') : ''}`,
    quick: QUICK,
    machine: before,
    tern,
    ternByStage: stages,
    loadavgAfter: machine().loadavg,
    disk,
    maildirFloor,
    elapsedSeconds: (Date.now() - t0) / 1000,
    accept,
    memory,
    relay,
  };
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}

fs.writeFileSync(jsonFile, JSON.stringify(data, null, 2) + '\n');
fs.writeFileSync(mdFile, renderMarkdown(data, path.relative(ROOT, jsonFile).startsWith('docs/') ? 'docs/benchmarks.json' : path.basename(jsonFile)));

const f2 = (x: number | null) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : 'n/a');
console.log('\nissue 16 (Maildir; relay):');
for (const t of issue16Targets(data)) console.log(`  ${t.met === undefined ? 'n/a    ' : t.met ? 'met    ' : 'NOT met'}  ${t.target} — ${t.where}: ${t.measured}`);
console.log(`\nheadline (${QUICK ? 'quick' : ISSUE16 ? 'issue 16' : 'full'}): Tern/peer messages/s, median of run-by-run ratios (CPU per message ratio in brackets)`);
for (const s of data.accept.scenarios) {
  if (!s.peers.includes('tern')) continue;
  const r = (p: 'postfix' | 'haraka' | 'sink') => (s.ratios[p] ? `${f2(s.ratios[p].rate)}x (${f2(s.ratios[p].cpuMsPerMsg)}x)` : 'n/a');
  const v = Object.entries(s.variants).map(([k, x]) => `; ${k}/tern ${f2(x.rate)}x`).join('');
  console.log(`  ${s.id.padEnd(14)} Postfix ${r('postfix')}, Haraka ${r('haraka')}, smtp-sink ${r('sink')}; Tern ${f2(s.summary.tern?.cpuMsPerMsg.median ?? null)} ms CPU/msg${v}`);
}
console.log(`  relay          Postfix ${f2(data.relay.ratioMedian)}x`);
for (const l of data.accept.latency) {
  console.log(`  latency ${l.reuse ? 'reuse' : 'new  '} ${l.peer.padEnd(8)} p50 ${f2(l.p50.median)} ms, p99 ${f2(l.p99.median)} ms`);
}
if (!ISSUE16) {
  console.log('targets (issue 6):');
  const tgt = targets(data);
  for (const t of tgt) if (t.met !== undefined) console.log(`  ${t.met ? 'met    ' : 'NOT met'}  ${t.target} — ${t.where}: ${t.measured}`);
  const unmeasured = tgt.filter((t) => t.met === undefined).length;
  if (unmeasured) console.log(`  (${unmeasured} more not measured in this run)`);
}
console.log(`wrote ${path.relative(process.cwd(), mdFile)} and ${path.relative(process.cwd(), jsonFile)} (${(data.elapsedSeconds).toFixed(0)} s)`);
