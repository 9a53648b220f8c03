// docs/benchmarks.md from the results of bench/run.ts (the object it writes
// to docs/benchmarks.json): first issue 16's rows (Tern's defaults and Tern
// like for like, both delivering into a Maildir, against Postfix delivering
// into a Maildir through virtual(8); relaying, with and without DKIM
// signing) with its targets; then the headline ratios, the targets of issue
// 6, the disk's limits, the machine, how it was run, and every table. Met /
// not met is computed here from the data.
//
// Server CPU per message is shown as user + system and, where the results
// have it, split into user and system (kernel) time ("user / sys"; "n/a" in
// results from before the split). The disk section has the disk's fdatasync
// rate and the Maildir floor (bench/disk.ts): the kernel CPU one durable
// 1 KiB Maildir file costs on this disk, and with it the least CPU per
// message Tern's 1 KB Maildir rows could reach (its CPU per message with
// discard delivery, when the same results have it, plus that floor).
//
//   node bench/report.ts [docs/benchmarks.json [OUT.md]]   rewrites docs/benchmarks.md (or OUT.md) from that file

import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import type { AcceptResult, PairRatio, Ratio, ScenarioResult } from './accept.ts';
import { median } from './lib.ts';
import type { Machine, Spread } from './lib.ts';
import type { MemoryResult } from './memory.ts';
import type { PeerName } from './peers.ts';
import type { DiskResult, MaildirFloorResult, MaildirVariant } from './disk.ts';
import type { RelayResult } from './relay.ts';

export interface TernVersion { commit: string; uncommittedSrc: string[] }

const versionText = (v: TernVersion | undefined) =>
  `${v?.commit ?? 'unknown'}${v?.uncommittedSrc.length ? `, with uncommitted changes in ${v.uncommittedSrc.map((f) => `\`${f}\``).join(', ')}` : ''}`;

/** "this checkout at …", per stage when the checkout changed while the benchmark ran. */
function ternVersionText(d: BenchResults): string {
  const stages = Object.entries(d.ternByStage ?? {});
  const texts = new Set(stages.map(([, v]) => versionText(v)));
  if (texts.size <= 1) return `this checkout at ${versionText(d.tern)}`;
  return `this checkout, which changed while the benchmark ran: ${stages.map(([k, v]) => `${k} at ${versionText(v)}`).join('; ')}`;
}

export interface BenchResults {
  command: string;
  quick: boolean;
  /** Taken at the start. */
  machine: Machine;
  loadavgAfter?: number[] | undefined;
  /** The checkout measured. */
  tern?: TernVersion | undefined;
  /** The checkout when each stage (accept, memory, relay) started its servers. */
  ternByStage?: Record<string, TernVersion> | undefined;
  elapsedSeconds: number;
  accept: AcceptResult;
  memory?: MemoryResult | undefined;
  relay: RelayResult;
  /** bench/disk.ts at the start: the disk's fdatasync rate with one writer. */
  disk?: DiskResult | undefined;
  /** bench/disk.ts at the start: files/s and CPU per 1 KiB Maildir file, durable and not. */
  maildirFloor?: MaildirFloorResult | undefined;
}

// JSON turns NaN into null: every number read back goes through num().
const num = (x: number | null | undefined): number => (typeof x === 'number' ? x : NaN);
const fx = (d: number) => (x: number | null | undefined) => (Number.isFinite(num(x)) ? num(x).toFixed(d) : 'n/a');
const f0 = fx(0);
const f1 = fx(1);
const f2 = fx(2);
const f3 = fx(3);
const mib = (kib: number | null | undefined) => f0(num(kib) / 1024);
const mib1 = (kib: number | null | undefined) => f1(num(kib) / 1024);
const size = (b: number) => (b >= 1 << 20 ? `${b / (1 << 20)} MB` : `${b / 1024} KB`);
const xr = (r: Ratio | undefined, what: 'rate' | 'cpuMsPerMsg' = 'rate') => (r ? `${f2(r[what])}×` : 'n/a');
/** Medians of CPU user and system ms per message, "0.312 / 0.204"; n/a in results from before the split. */
const userSys = (u: Spread | undefined, sys: Spread | undefined) =>
  Number.isFinite(num(u?.median)) || Number.isFinite(num(sys?.median)) ? `${f3(u?.median)} / ${f3(sys?.median)}` : 'n/a';

// ---------------------------------------------------------------- noise

/** Rounds whose messages/s differ by more than this (max/min) make a ratio suspect. */
const NOISY = 1.5;
const wide = (x: Spread | undefined) => !!x && num(x.max) / num(x.min) > NOISY;
/** Tern's or the peer's rounds spread wider than NOISY: the ratio is marked †. */
const noisy = (s: ScenarioResult, p: PeerName) => wide(s.summary.tern?.rate) || wide(s.summary[p]?.rate);
const relayNoisy = (r: RelayResult) => wide(r.tern) || wide(r.postfix);
const dagger = (b: boolean) => (b ? ' †' : '');
const DAGGER_NOTE = `† Tern's or the peer's rounds differ by more than ${NOISY}× in messages/s (max/min): other work on the machine or the peer's own variance disturbed them, and the ratio is less certain; the scenario's table has the min–max.`;

/**
 * A warning when the machine was busy before the benchmark started. Only
 * the load average taken at the start says something about other work:
 * the one at the end counts the benchmark's own processes, and Postfix's
 * up to 200 smtpd waiting on fsync (state D) alone push it past 10.
 */
function busyWarning(d: BenchResults): string {
  const n = d.machine.nproc;
  const start = num(d.machine.loadavg?.[0]);
  if (!Number.isFinite(start) || start <= n / 2) return '';
  return `\n**The machine was busy before this run started**: 1-minute load average ${start.toFixed(1)} on ${n} CPUs. ` +
    'Runs were interleaved and ratios taken round by round to soften this, but figures marked † are disturbed; rerun on a quiet machine before quoting them.\n';
}

// ---------------------------------------------------------------- targets

export interface TargetRow { target: string; where: string; measured: string; met: boolean | undefined }

const MB = 1e6;

/** "1k-s100-reuse" → "1 KB, 100 sessions, many messages per connection" (for scenarios that were not run). */
function describeId(id: string): string {
  const m = /^(\d+)([km])-s(\d+)-(new|reuse)$/.exec(id);
  if (!m) return id;
  return `${m[1]} ${m[2] === 'k' ? 'KB' : 'MB'}, ${m[3]} session${m[3] === '1' ? '' : 's'}, ${m[4] === 'reuse' ? 'many messages per connection' : 'new connection per message'}`;
}

export function targets(d: BenchResults): TargetRow[] {
  const rows: TargetRow[] = [];
  const sc = (id: string) => d.accept.scenarios.find((s) => s.id === id);
  const vsPostfix = (target: string, min: number, ids: string[]) => {
    for (const id of ids) {
      const s = sc(id);
      const r = s?.ratios.postfix;
      rows.push({
        target, where: s ? s.name : describeId(id),
        measured: r ? `${f2(r.rate)}× (Tern ${f0(s!.summary.tern?.rate.median)}, Postfix ${f0(s!.summary.postfix?.rate.median)} msg/s)${dagger(noisy(s!, 'postfix'))}` : 'not measured',
        met: r && Number.isFinite(num(r.rate)) ? r.rate >= min : undefined,
      });
    }
  };
  vsPostfix('durable acceptance ≥ 3× Postfix at 1 KB', 3, ['1k-s20-new', '1k-s100-new']);
  vsPostfix('≥ 2× Postfix at 100 KB and 1 MB', 2, ['100k-s20-new', '100k-s100-new', '1m-s20-new', '1m-s100-new']);
  vsPostfix('≥ 4× Postfix with many messages per connection', 4, ['1k-s20-reuse', '1k-s100-reuse', '100k-s20-reuse']);
  for (const id of ['1k-s20-new', '1k-s100-new', '1k-s20-reuse', '1k-s100-reuse']) {
    const s = sc(id);
    const v = num(s?.summary.tern?.cpuMsPerMsg.median);
    rows.push({ target: 'server CPU ≤ 0.3 ms per 1 KB message', where: s ? s.name : describeId(id), measured: s ? `${f3(v)} ms` : 'not measured', met: Number.isFinite(v) ? v <= 0.3 : undefined });
  }
  const idle = d.memory?.idle.find((r) => r.peer === 'tern');
  const perConn = num(idle?.bytesPerConnection);
  rows.push({
    target: '≤ 4 KB (4,096 bytes) per idle connection', where: idle ? `${idle.opened.toLocaleString('en')} idle connections` : '5,000 idle connections',
    measured: idle ? `${f1(perConn / 1024)} KiB ((RSS after − before) / connections; slope past the first fifth ${f1(num(idle.marginalBytesPerConnection) / 1024)} KiB)` : 'not measured', met: Number.isFinite(perConn) ? perConn <= 4096 : undefined,
  });
  const big = d.memory?.big.find((r) => r.peer === 'tern');
  const growth = num(big?.rssGrowthKiB) * 1024;
  rows.push({
    target: 'RSS flat (± 20 MB, 20·10⁶ bytes) while receiving a 100 MB message', where: big ? `one ${f0(big.sizeBytes / MB)} MB message` : 'one 100 MB message',
    measured: big && !big.error ? `+${f1(growth / MB)} MB (peak − before)` : big?.error ? `failed: ${big.error}` : 'not measured',
    met: big && !big.error && Number.isFinite(growth) ? Math.abs(growth) <= 20 * MB : undefined,
  });
  const relay = num(d.relay.ratioMedian);
  rows.push({ target: 'relay ≥ 2× Postfix', where: `${d.relay.messages} × 1 KB, ${d.relay.sessions} sessions`, measured: `${f2(relay)}×${dagger(relayNoisy(d.relay))}`, met: Number.isFinite(relay) ? relay >= 2 : undefined });
  return rows;
}

const metText = (m: boolean | undefined) => (m === undefined ? 'not measured' : m ? '**met**' : 'not met');

// ---------------------------------------------------------------- issue 16

/** Median (min–max) of a spread, or one value when the spread is a single run. */
const mmr = (x: Spread | undefined, f: (v: number) => string, suffix = '') =>
  !x || !Number.isFinite(num(x.median)) ? 'n/a'
    : num(x.min) === num(x.max) ? `${f(x.median)}${suffix}` : `${f(x.median)}${suffix} (${f(x.min)}–${f(x.max)})`;

/** The round-by-round comparison of `a` with postfix-maildir in a Maildir scenario. */
function vsPostfixMaildir(d: BenchResults, id: string, a: PeerName): { s: ScenarioResult; c: PairRatio } | undefined {
  const s = d.accept.scenarios.find((x) => x.id === id);
  const c = s?.compared?.find((x) => x.a === a && x.b === 'postfix-maildir');
  return s && c ? { s, c } : undefined;
}

const ISSUE16_ACCEPT: { label: string; id: string; tern: PeerName; min: number }[] = [
  { label: "Tern's defaults (checks on, Maildir)", id: 'md-1k-s20-new', tern: 'tern-default', min: 3 },
  { label: 'like for like (checks off, Maildir)', id: 'md-1k-s20-new', tern: 'tern-maildir', min: 4 },
  { label: 'like for like (checks off, Maildir)', id: 'md-1k-s100-new', tern: 'tern-maildir', min: 4 },
  { label: 'like for like (checks off, Maildir)', id: 'md-100k-s20-new', tern: 'tern-maildir', min: 3 },
];
/** Issue 16: Tern's defaults at most this much server CPU per 1 KB message. */
const DEFAULTS_CPU_MS = 0.5;
const RELAY_MIN = 5;
const RELAY_DKIM_MIN = 4;

const where = (s: ScenarioResult | undefined, id: string) => (s ? s.name.replace(/^Maildir, /, '') : describeId(id.replace(/^md-/, '')));

export function issue16Targets(d: BenchResults): TargetRow[] {
  const rows: TargetRow[] = [];
  for (const t of ISSUE16_ACCEPT) {
    const x = vsPostfixMaildir(d, t.id, t.tern);
    const s = d.accept.scenarios.find((y) => y.id === t.id);
    for (const [what, key] of [['acceptance', 'rate'], ['end to end', 'e2eRate']] as const) {
      const r = x?.c[key];
      const tern = x?.s.summary[t.tern]?.[key];
      const pf = x?.s.summary['postfix-maildir']?.[key];
      rows.push({
        target: `${t.label}: ≥ ${t.min}× Postfix (Maildir), ${what}`,
        where: where(s, t.id),
        measured: r ? `${mmr(r, f2, '×')} (Tern ${f0(tern?.median)}, Postfix ${f0(pf?.median)} msg/s)` : 'not measured',
        met: r && Number.isFinite(num(r.median)) ? num(r.median) >= t.min : undefined,
      });
    }
    if (t.tern === 'tern-default') {
      const cpu = x?.s.summary['tern-default']?.cpuMsPerMsg;
      rows.push({
        target: `Tern's defaults: ≤ ${DEFAULTS_CPU_MS} ms server CPU per message`,
        where: where(s, t.id),
        measured: cpu ? `${mmr(cpu, f3, ' ms')}` : 'not measured',
        met: cpu && Number.isFinite(num(cpu.median)) ? num(cpu.median) <= DEFAULTS_CPU_MS : undefined,
      });
    }
  }
  const r = d.relay;
  const relayWhere = `relay, ${r?.messages ?? 2000} × 1 KB, ${r?.sessions ?? 20} sessions`;
  const e2e = r?.ratio?.e2e ?? (r ? { median: r.ratioMedian, min: r.ratioMedian, max: r.ratioMedian } : undefined);
  rows.push({
    target: `relay: ≥ ${RELAY_MIN}× Postfix end to end`, where: relayWhere,
    measured: e2e ? `${mmr(e2e, f2, '×')} (Tern ${f0(r.tern.median)}, Postfix ${f0(r.postfix.median)} msg/s)` : 'not measured',
    met: e2e && Number.isFinite(num(e2e.median)) ? num(e2e.median) >= RELAY_MIN : undefined,
  });
  const dk = r?.ratioDkim?.e2e;
  rows.push({
    target: `relay with DKIM signing: ≥ ${RELAY_DKIM_MIN}× Postfix end to end`, where: `${relayWhere}; Tern signs (${r?.dkimAlgorithm ?? 'rsa-sha256'}), Postfix does not`,
    measured: dk && r.ternDkim ? `${mmr(dk, f2, '×')} (Tern ${f0(r.ternDkim.median)}, Postfix ${f0(r.postfix.median)} msg/s)` : 'not measured',
    met: dk && Number.isFinite(num(dk.median)) ? num(dk.median) >= RELAY_DKIM_MIN : undefined,
  });
  return rows;
}

/** The rows users run, first: one line per comparison with acceptance, end to end and CPU, medians (min–max). */
function issue16Table(d: BenchResults): string[] {
  const out = [
    '| row | load | Tern accepted msg/s | Postfix accepted msg/s | Tern/Postfix accepted | Tern end to end msg/s | Postfix end to end msg/s | Tern/Postfix end to end | Tern CPU ms/msg | Postfix CPU ms/msg | Tern CPU user / sys ms/msg | Postfix CPU user / sys ms/msg |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const t of ISSUE16_ACCEPT) {
    const x = vsPostfixMaildir(d, t.id, t.tern);
    const s = d.accept.scenarios.find((y) => y.id === t.id);
    const load = s ? `${s.messages} × ${size(s.size)}, ${s.sessions} sessions, new connection per message` : where(s, t.id);
    if (!x) {
      out.push(`| ${t.label} | ${load} | not measured | | | | | | | | | |`);
      continue;
    }
    const tn = x.s.summary[t.tern];
    const pf = x.s.summary['postfix-maildir'];
    out.push(`| ${t.label} | ${load} | ${mmr(tn?.rate, f0)} | ${mmr(pf?.rate, f0)} | **${mmr(x.c.rate, f2, '×')}** | ${mmr(tn?.e2eRate, f0)} | ${mmr(pf?.e2eRate, f0)} | **${mmr(x.c.e2eRate, f2, '×')}** | ${mmr(tn?.cpuMsPerMsg, f3)} | ${mmr(pf?.cpuMsPerMsg, f3)} | ${userSys(tn?.cpuUserMsPerMsg, tn?.cpuSysMsPerMsg)} | ${userSys(pf?.cpuUserMsPerMsg, pf?.cpuSysMsPerMsg)} |`);
  }
  const r = d.relay;
  if (r) {
    const relayRow = (label: string, t: typeof r.tern, ratio: { e2e: Spread; accept: Spread } | undefined) =>
      `| ${label} | ${r.messages} × 1 KB, ${r.sessions} sessions, to smtp-sink | ${mmr(t.accept, f0)} | ${mmr(r.postfix.accept, f0)} | **${mmr(ratio?.accept, f2, '×')}** | ${mmr(t, f0)} | ${mmr(r.postfix, f0)} | **${mmr(ratio?.e2e ?? { median: r.ratioMedian, min: r.ratioMedian, max: r.ratioMedian }, f2, '×')}** | ${mmr(t.cpu ?? { median: t.cpuMsPerMsg, min: t.cpuMsPerMsg, max: t.cpuMsPerMsg }, f3)} | ${mmr(r.postfix.cpu ?? { median: r.postfix.cpuMsPerMsg, min: r.postfix.cpuMsPerMsg, max: r.postfix.cpuMsPerMsg }, f3)} | ${userSys(t.cpuUser, t.cpuSys)} | ${userSys(r.postfix.cpuUser, r.postfix.cpuSys)} |`;
    out.push(relayRow('relay (MX lookup, durable queue)', r.tern, r.ratio));
    if (r.ternDkim) out.push(relayRow(`relay with DKIM signing (Tern ${r.dkimAlgorithm ?? 'rsa-sha256'}; Postfix unsigned, the same row)`, r.ternDkim, r.ratioDkim));
  }
  return out;
}

/** Postfix's CPU per message by daemon in one scenario: medians over the rounds, largest first. */
function postfixParts(d: BenchResults, id: string, peer: PeerName): string[] {
  const s = d.accept.scenarios.find((x) => x.id === id);
  const runs = s?.runs.filter((r) => r.peer === peer && r.ok && r.cpuMsPerMsgByProcess) ?? [];
  if (!s || !runs.length) return [];
  const names = [...new Set(runs.flatMap((r) => Object.keys(r.cpuMsPerMsgByProcess!)))];
  const parts = names
    .map((n) => ({ n, ms: median(runs.map((r) => r.cpuMsPerMsgByProcess![n] ?? 0)) }))
    .filter((x) => x.ms >= 0.005)
    .sort((a, b) => b.ms - a.ms);
  const sum = parts.reduce((a, x) => a + x.ms, 0);
  return [
    `Where ${peer}'s CPU goes (${where(s, id)}; each process's own user+system time sampled every 200 ms, by program, per message, median over the rounds; ` +
      `they add up to ${f3(sum)} of the ${f3(s.summary[peer]?.cpuMsPerMsg.median)} ms measured in all, the rest being processes that lived between two samples): ` +
      parts.map((x) => `${x.n} ${f3(x.ms)} ms (${f0((100 * x.ms) / sum)} %)`).join(', ') + '.',
    '',
  ];
}

/** How busy the machine was just before the Maildir runs (other work on a shared machine). */
function quietText(d: BenchResults): string {
  const runs = d.accept.scenarios.filter((s) => s.id.startsWith('md-')).flatMap((s) => s.runs).filter((r) => r.busyBefore !== undefined);
  if (!runs.length) return '';
  const busy = runs.map((r) => 100 * r.busyBefore!);
  const waits = runs.filter((r) => r.quietWaitSeconds! >= 15).length;
  return `; busy just before the runs: median ${f0(median(busy))} %, at most ${f0(Math.max(...busy))} %${waits ? `, ${waits} of ${runs.length} runs started without the machine getting quiet` : ''}`;
}

function issue16Section(d: BenchResults): string[] {
  const tgt = issue16Targets(d);
  const rounds = d.accept.runsEach;
  return [
    '## The configuration users run (issue 16)',
    '',
    'Both servers deliver into a Maildir and a message counts as handled when its file is in the Maildir\'s `new/`. ' +
      '**Tern\'s defaults**: the inbound SPF/DKIM/DMARC/ARC checks on (no `inbound` key), Maildir delivery (`tern-default`). **Like for like**: the same with the checks off (`inbound.enabled: false`; `tern-maildir`). ' +
      '**Postfix**: smtpd into its queue, then virtual(8) into a Maildir (`postfix-maildir`); it runs no SPF/DKIM/DMARC at all. ' +
      `Each server pinned to CPU 0, smtp-source on CPU 1; ${rounds} interleaved round(s) (in each, the scenario's servers in turn: tern-default, postfix-maildir, tern-maildir, and at 1 KB × 20 sessions \`tern\` with discard delivery, for the split below), after an unmeasured warm-up of ${d.accept.warmupMessages} messages each. ` +
      '**Accepted**: messages / time until smtp-source has had the last 250. **End to end**: messages / time until the last file is in `new/` (relay: until the sink has the last message). ' +
      '**CPU**: the server\'s user+system time from the start until every message is handled, per message; **user / sys**: the same time split into user and system (kernel) time, medians (the kernel\'s part includes fsync and the file system\'s work for it: see the Maildir floor under "The disk and the no-disk bound"). ' +
      'Before each measured run the driver waits for a quiet machine (under 15 % busy over half a second, at most 15 s: this machine is shared)' + quietText(d) + '. Ratios are taken round by round, then the median (min–max over the rounds); rates are medians (min–max).',
    '',
    ...issue16Table(d),
    '',
    ...postfixParts(d, 'md-1k-s20-new', 'postfix-maildir'),
    d.relay?.ternDkim ? `Postfix has no DKIM signer: the DKIM row compares Tern signing every message (a key for the sender's domain made by \`tern dkim keygen\`, ${d.relay.dkimAlgorithm ?? 'rsa-sha256'}; relayed mail from a trusted network is treated as submission) with the same unsigned Postfix runs.
` : '',
    '### Targets (issue 16)',
    '',
    '| target | where | measured | |',
    '| --- | --- | --- | --- |',
    ...tgt.map((t) => `| ${t.target} | ${t.where} | ${t.measured} | ${metText(t.met)} |`),
    '',
    `${tgt.filter((t) => t.met === true).length} of ${tgt.length} met, ${tgt.filter((t) => t.met === false).length} not met, ${tgt.filter((t) => t.met === undefined).length} not measured. ` +
      'Met is read on the median ratio; the range shows how far single rounds strayed.',
    '',
    ...cpuSplit(d),
  ];
}

/**
 * Where Tern's CPU per message goes in the headline scenario, from the same
 * rounds: `tern` (checks off, discard delivery) is acceptance; tern-maildir
 * minus it is Maildir delivery; tern-default minus tern-maildir the inbound
 * checks. Then the CPU budget each target leaves: Tern runs on one core and
 * is CPU-bound there, so N× Postfix's messages/s needs at most
 * 1000 / (N × Postfix's msg/s) ms per message.
 */
function cpuSplit(d: BenchResults): string[] {
  const s = d.accept.scenarios.find((x) => x.id === 'md-1k-s20-new');
  const at = (p: PeerName) => {
    const x = s?.summary[p];
    return { all: num(x?.cpuMsPerMsg.median), user: num(x?.cpuUserMsPerMsg?.median), sys: num(x?.cpuSysMsPerMsg?.median), rate: num(x?.rate.median) };
  };
  const accept = at('tern');
  const maildir = at('tern-maildir');
  const defaults = at('tern-default');
  const pf = at('postfix-maildir');
  if (!s || !Number.isFinite(accept.all) || !Number.isFinite(maildir.all) || !Number.isFinite(defaults.all)) return [];
  const minus = (a: typeof accept, b: typeof accept) => ({ all: a.all - b.all, user: a.user - b.user, sys: a.sys - b.sys });
  const row = (part: string, x: { all: number; user: number; sys: number }, how: string) => `| ${part} | ${f3(x.all)} | ${f3(x.user)} | ${f3(x.sys)} | ${how} |`;
  const mf = d.maildirFloor;
  const floor = mf ? { all: (num(mf.durable.userUsPerFile) + num(mf.durable.systemUsPerFile)) / 1000, user: num(mf.durable.userUsPerFile) / 1000, sys: num(mf.durable.systemUsPerFile) / 1000 } : undefined;
  const busy = (x: typeof accept) => f0((x.rate * x.all) / 10);
  const out = [
    `### Where Tern's CPU per message goes (${where(s, 'md-1k-s20-new')})`,
    '',
    "Medians over the same rounds; a part is the difference of two rows' medians. `tern` is Tern with the checks off and `delivery: discard`, run in the same rounds as the others.",
    '',
    '| part | CPU ms/msg | user | system | from |',
    '| --- | ---: | ---: | ---: | --- |',
    row('acceptance: TCP connection, SMTP, the spool journal (group commit), events, log, discard', accept, '`tern`'),
    row('Maildir delivery: one durable file per message, the done mark, its events', minus(maildir, accept), '`tern-maildir` − `tern`'),
    ...(floor ? [row("… of which the disk's floor for one durable 1 KiB file", floor, 'bench/disk.ts (below)')] : []),
    row('inbound checks: SPF, DKIM, DMARC, ARC (mailauth), Authentication-Results', minus(defaults, maildir), '`tern-default` − `tern-maildir`'),
    row("**Tern's defaults**, in all", defaults, '`tern-default`'),
    '',
  ];
  if (Number.isFinite(pf.rate)) {
    const budget = (n: number) => 1000 / (n * pf.rate);
    const floorText = floor ? ` plus the disk's floor for one Maildir file (${f3(floor.all)} ms) comes to ${f3(accept.all + floor.all)} ms` : '';
    out.push(
      `Tern was CPU-bound on its core in these runs (busy ${busy(defaults)} % with its defaults, ${busy(maildir)} % like for like, from messages/s × CPU per message). ` +
        `At Postfix's median of ${f0(pf.rate)} msg/s, 3× needs at most ${f3(budget(3))} ms of CPU per message and 4× at most ${f3(budget(4))} ms; the target for the defaults is 0.5 ms. ` +
        `Acceptance alone (${f3(accept.all)} ms)${floorText}, before any Maildir bookkeeping or check.`,
      '',
    );
  }
  return out;
}

// ---------------------------------------------------------------- tables

const range = (s: Spread | undefined, f: (x: number) => string, runs: number) =>
  !s || !Number.isFinite(num(s.median)) ? 'n/a' : runs > 1 ? `${f(s.median)} (${f(s.min)}–${f(s.max)})` : f(s.median);

/** The disk's sync rate, what Tern got out of it (group commit), and smtp-sink, the no-disk bound. */
function diskSection(d: BenchResults): string[] {
  const out: string[] = ['## The disk and the no-disk bound', ''];
  const disk = d.disk;
  if (disk) {
    out.push(`- This disk (${disk.dir}): ${f0(disk.syncsPerSecond)} fdatasync/s for one writer appending 1 KiB before each (median ${disk.medianMs.toFixed(2)} ms; bench/disk.ts). ` +
      'A server that paid one sync per message could not accept more messages per second than that.');
  }
  out.push(...maildirFloorText(d));
  const j = d.accept.ternJournal?.tern;
  if (j) {
    out.push(`- Tern's journal over the whole accept run (the \`tern\` peer): ${j.records} messages in ${j.batches} batches, ` +
      `${(j.records / j.batches).toFixed(1)} messages per fdatasync on average (group commit: every commit that arrives while a batch is being written and synced joins the next one).`);
  }
  for (const id of ['1k-s20-new', '1k-s100-new', '1k-s100-reuse']) {
    const s = d.accept.scenarios.find((x) => x.id === id);
    const tern = s?.summary.tern?.rate.median;
    if (!s || tern === undefined) continue;
    const parts = [`${describeId(id)}: Tern ${f0(tern)} msg/s`];
    if (disk) parts.push(`${(tern / disk.syncsPerSecond).toFixed(2)}× the disk's serial sync rate`);
    if (s.ratios.sink) parts.push(`${f2(s.ratios.sink.rate)}× smtp-sink's messages/s at ${f2(s.ratios.sink.cpuMsPerMsg)}× its CPU per message`);
    out.push(`- ${parts.join('; ')}.`);
  }
  out.push('');
  return out;
}

/**
 * The Maildir floor (bench/disk.ts measureMaildirFloor): CPU per durable
 * Maildir file on this disk, and what it means for Tern's 1 KB Maildir rows.
 */
function maildirFloorText(d: BenchResults): string[] {
  const mf = d.maildirFloor;
  if (!mf) return [];
  const v = (x: MaildirVariant) =>
    `${f0(x.filesPerSecond)} files/s, ${f0(x.userUsPerFile)} µs user and ${f0(x.systemUsPerFile)} µs system CPU per file (${x.files} files)`;
  const out = [
    `- The Maildir floor (${mf.dir}; bench/disk.ts): ${f0(mf.fileBytes / 1024)} KiB files, ${mf.inFlight} deliveries in flight through libuv's thread pool (${mf.threadPool} threads), ` +
      'CPU from process.cpuUsage (every thread of the process), after an unmeasured warm-up. ' +
      `Durable, as a Maildir delivery must be (open tmp/NAME, write, fdatasync, close, rename into new/, fsync of new/ once per ${mf.dirSyncEvery} files): ${v(mf.durable)}. ` +
      `Without the fdatasync and the directory fsync: ${v(mf.nonDurable)}. ` +
      // On this VM the variant without syncs has measured as dear as the durable one or dearer (the kernel's
      // work for creating and renaming a file, and the thread pool's switches on one core, are most of it):
      // a difference at or below zero is reported as such, not as a price.
      (mf.durability.systemUsPerFile > 0
        ? `The syncs add ${f0(mf.durability.userUsPerFile)} µs user and ${f0(mf.durability.systemUsPerFile)} µs system CPU per file. `
        : `The syncs added no measurable CPU (the difference was ${f0(mf.durability.userUsPerFile)} µs user and ${f0(mf.durability.systemUsPerFile)} µs system per file): most of the kernel's time goes to creating, writing and renaming the file, not to the fsyncs. `) +
      'Kernel threads that commit the file system\'s journal (jbd2, kworkers) are charged to no process, here or in the servers\' CPU figures.',
  ];
  const floorMs = num(mf.durable.systemUsPerFile) / 1000;
  let meaning = `- That is the floor of writing Maildir files this way (Tern's way: libuv's thread pool, ${mf.inFlight} in flight${mf.pinned ? ', pinned to CPU 0 as the servers are' : ''}): with nothing else to do, the kernel's part alone is ${f3(floorMs)} ms per 1 KB copy. Postfix's virtual(8) makes the same system calls from its own processes (its system time is in the tables above).`;
  // The discard row of the same rounds when there is one (issue 16's headline scenario), else the plain 1 KB scenario's.
  const discardId = d.accept.scenarios.find((x) => x.id === 'md-1k-s20-new')?.summary.tern ? 'md-1k-s20-new' : '1k-s20-new';
  const discard = d.accept.scenarios.find((x) => x.id === discardId);
  const discardCpu = num(discard?.summary.tern?.cpuMsPerMsg.median);
  if (Number.isFinite(discardCpu) && Number.isFinite(floorMs)) {
    meaning += ` So Tern's CPU per message in the 1 KB Maildir rows (one copy per message) cannot go below its CPU per message with discard delivery (\`tern\`, ${where(discard, discardId)}: ${f3(discardCpu)} ms) plus this floor: ${f3(discardCpu + floorMs)} ms`;
    const md = d.accept.scenarios.find((x) => x.id === 'md-1k-s20-new')?.summary['tern-maildir'];
    const mdCpu = num(md?.cpuMsPerMsg.median);
    meaning += Number.isFinite(mdCpu)
      ? ` (measured in the like-for-like row at 1 KB, 20 sessions: tern-maildir ${f3(mdCpu)} ms${Number.isFinite(num(md?.cpuSysMsPerMsg?.median)) ? `, of which ${f3(md?.cpuSysMsPerMsg?.median)} ms system` : ''}).`
      : '.';
  }
  out.push(meaning);
  return out;
}

function headline(d: BenchResults): string[] {
  const out = [
    '| scenario | messages | Tern msg/s | Tern/Postfix | Tern/Haraka | Tern/smtp-sink | Tern CPU ms/msg | Postfix CPU ms/msg | Haraka CPU ms/msg |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const s of d.accept.scenarios) {
    if (!s.peers.includes('tern')) continue; // issue 16's Maildir scenarios have their own table
    const sessions = s.sessions !== s.requestedSessions ? ` (${s.sessions} run)` : '';
    out.push(`| ${s.name}${sessions} | ${s.messages} × ${size(s.size)} | ${f0(s.summary.tern?.rate.median)} | **${xr(s.ratios.postfix)}**${dagger(noisy(s, 'postfix'))} | ${xr(s.ratios.haraka)}${dagger(noisy(s, 'haraka'))} | ${xr(s.ratios.sink)}${dagger(noisy(s, 'sink'))} | ${f3(s.summary.tern?.cpuMsPerMsg.median)} | ${f3(s.summary.postfix?.cpuMsPerMsg.median)} | ${f3(s.summary.haraka?.cpuMsPerMsg.median)} |`);
  }
  out.push(`| relay to smtp-sink, 20 sessions | ${d.relay.messages} × 1 KB | ${f0(d.relay.tern.median)} | **${f2(d.relay.ratioMedian)}×**${dagger(relayNoisy(d.relay))} | – | – | ${f3(d.relay.tern.cpuMsPerMsg)} | ${f3(d.relay.postfix.cpuMsPerMsg)} | – |`);
  const dk = d.relay.ternDkim;
  if (dk) out.push(`| relay to smtp-sink with DKIM signing, 20 sessions | ${d.relay.messages} × 1 KB | ${f0(dk.median)} | **${f2(d.relay.ratioDkim?.e2e.median)}×** | – | – | ${f3(dk.cpuMsPerMsg)} | ${f3(d.relay.postfix.cpuMsPerMsg)} | – |`);
  return out;
}

function scenarioTable(s: ScenarioResult, runs: number): string[] {
  const rows = s.peers.map((p: PeerName) => {
    const x = s.summary[p];
    const failed = x && x.failed ? ` (${x.failed} of ${x.runs} failed: ${s.runs.find((r) => r.peer === p && !r.ok)?.error ?? ''})` : '';
    return `| ${p}${failed} | ${range(x?.rate, f0, runs)} | ${range(x?.e2eRate, f0, runs)} | ${range(x?.cpuMsPerMsg, f3, runs)} | ${userSys(x?.cpuUserMsPerMsg, x?.cpuSysMsPerMsg)} | ${range(x?.peakRssKiB, mib, runs)} | ${range(x?.peakPssKiB, mib, runs)} | ${range(x?.drainSeconds, f2, runs)} |`;
  });
  const comparedText = (s.compared ?? [])
    .map((c) => `${c.a}/${c.b}: **${mmr(c.rate, f2, '×')}** accepted, **${mmr(c.e2eRate, f2, '×')}** end to end, ${mmr(c.cpuMsPerMsg, f2, '×')} CPU per message`)
    .join('; ');
  const ratioText = (['postfix', 'haraka', 'sink'] as const)
    .filter((p) => s.ratios[p])
    .map((p) => `Tern/${p === 'sink' ? 'smtp-sink' : p[0]!.toUpperCase() + p.slice(1)}: **${xr(s.ratios[p])}** messages/s, ${xr(s.ratios[p], 'cpuMsPerMsg')} CPU per message`)
    .join('; ');
  const variantText = (['tern-checks', 'tern-maildir'] as const)
    .filter((p) => s.variants[p])
    .map((p) => `${p}/tern: ${xr(s.variants[p])} messages/s, ${xr(s.variants[p], 'cpuMsPerMsg')} CPU per message`)
    .join('; ');
  return [
    `### ${s.name}`,
    '',
    `${s.messages} messages of ${s.size} B over ${s.sessions} concurrent session${s.sessions > 1 ? 's' : ''}${s.sessions !== s.requestedSessions ? ` (${s.requestedSessions} asked for; at most one per two messages)` : ''}${s.reuse ? ' (`smtp-source -d`)' : ''}.`,
    '',
    '| peer | messages/s accepted | messages/s end to end | server CPU ms/message | CPU user / sys ms/message (medians) | peak RSS MiB | peak PSS MiB | s until all handled |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    [ratioText, variantText, comparedText].filter(Boolean).map((t) => `${t}.`).join(' '),
    '',
  ];
}

function latencyTable(d: BenchResults): string[] {
  const rows = d.accept.latency;
  if (!rows.length) return ['Not measured in this run.', ''];
  const peers = [...new Set(rows.map((r) => r.peer))];
  const runs = d.accept.runsEach;
  const cell = (p: PeerName, reuse: boolean) => {
    const r = rows.find((x) => x.peer === p && x.reuse === reuse);
    if (!r) return 'n/a | n/a | n/a';
    return `${range(r.p50, f2, runs)} | ${range(r.p99, f2, runs)} | ${range(r.rate, f0, runs)}${r.errors ? ` (${r.errors} errors)` : ''}`;
  };
  const first = rows[0]!;
  return [
    `${first.messages} messages of 1 KB over ${first.sessions} sessions per run, ${runs} run(s) per peer and mode, interleaved; our client (bench/latency.ts), no pipelining. ` +
      'Latency: from writing the end of data ("\\r\\n.\\r\\n", in one write with the content) to reading the reply.',
    '',
    '| peer | new conn. p50 ms | p99 ms | msg/s | many per conn. p50 ms | p99 ms | msg/s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...peers.map((p) => `| ${p} | ${cell(p, false)} | ${cell(p, true)} |`),
    '',
  ];
}

function memoryTables(m: MemoryResult | undefined): string[] {
  if (!m) return ['Not measured in this run (quick mode and --issue16 skip it).', ''];
  return [
    `### ${m.connections.toLocaleString('en')} idle connections`,
    '',
    'Each connection has read the greeting, sent EHLO and read the reply, then stays silent. ' +
      'Per connection: (RSS after − RSS before) / connections open; the slope is the least-squares slope of RSS over connections past the first fifth (fixed costs paid once left out).',
    '',
    '| server | open | RSS before MiB | RSS after MiB | KiB per connection | slope KiB per connection | s to open |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...m.idle.map((r) => `| ${r.peer} | ${r.opened}${Object.keys(r.refused).length ? ` (refused: ${Object.entries(r.refused).map(([k, v]) => `${v} ${k}`).join(', ')})` : ''} | ${mib1(r.rssBeforeKiB)} | ${mib1(r.rssAfterKiB)} | ${f1(num(r.bytesPerConnection) / 1024)} | ${f1(num(r.marginalBytesPerConnection) / 1024)} | ${f1(r.openSeconds)} |`),
    '',
    'Postfix: not measured. Its smtpd is one process per connection; 5,000 idle connections would need default_process_limit (and the system\'s process and file limits) far above how Postfix is run, and the figure would be mostly per-process overhead.',
    '',
    `### One ${f0(m.bigBytes / MB)} MB message`,
    '',
    'One session; the client generates the content as it sends it. VmRSS summed over the server\'s processes, sampled every 20 ms from DATA to the reply after the end of data.',
    '',
    '| server | seconds | RSS before MiB | peak MiB | growth MiB | RSS after delivery MiB | reply |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- |',
    ...m.big.map((r) => `| ${r.peer} | ${f2(r.seconds)} | ${mib1(r.rssBeforeKiB)} | ${mib1(r.rssPeakKiB)} | ${mib1(r.rssGrowthKiB)} | ${mib1(r.rssAfterDeliveryKiB)} | ${(r.error ?? r.reply.split('\n').pop() ?? '').replace(/\|/g, '\\|').slice(0, 60)} |`),
    '',
  ];
}

function relayTable(r: RelayResult): string[] {
  const runs = r.runs.filter((x) => x.mta === 'postfix').length;
  return [
    `${r.messages} × ${r.size} B over ${r.sessions} sessions, relayed to smtp-sink (Tern by MX lookup on a loopback DNS server, Postfix by relayhost); the clock stops when the sink has all of them. ${runs} run(s) each, interleaved.`,
    '',
    '| MTA | messages/s end to end | messages/s accepted | server CPU ms/message | CPU user / sys ms/message |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...[r.tern, r.postfix, ...(r.ternDkim ? [r.ternDkim] : [])].map((s) => `| ${s.mta} | ${runs > 1 ? `${f0(s.median)} (${f0(s.min)}–${f0(s.max)})` : f0(s.median)} | ${mmr(s.accept, f0)} | ${f3(s.cpuMsPerMsg)} | ${userSys(s.cpuUser, s.cpuSys)} |`),
    '',
    `Tern/Postfix: **${f2(r.ratioMedian)}×** messages/s end to end (median of run-by-run ratios${r.ratio ? `; range ${mmr(r.ratio.e2e, f2, '×')}, accepted ${mmr(r.ratio.accept, f2, '×')}` : ''}).` +
      (r.ratioDkim ? ` tern-dkim/Postfix: **${mmr(r.ratioDkim.e2e, f2, '×')}** end to end, ${mmr(r.ratioDkim.accept, f2, '×')} accepted.` : ''),
    '',
  ];
}

// ---------------------------------------------------------------- document

function yamlBlock(x: unknown): string[] {
  return ['```yaml', stringify(x).trimEnd(), '```'];
}

/** `jsonName`: where the numbers are kept, as the report names it (docs/benchmarks.json unless written elsewhere). */
export function renderMarkdown(d: BenchResults, jsonName = 'docs/benchmarks.json'): string {
  const a = d.accept;
  const m = d.machine;
  const cfg = a.peerConfigs;
  const tgt = targets(d);
  const peersIn = (p: PeerName) => a.scenarios.filter((s) => s.peers.includes(p)).map((s) => s.name);
  return [
    '# Benchmarks',
    '',
    `Generated by \`${d.command}\` (bench/run.ts) on ${m.date}; ${f0(d.elapsedSeconds)} s in all. Every number below comes from ${jsonName}, written by the same run.`,
    busyWarning(d),
    d.quick ? '\n**Quick mode**: 1 KB at 20 sessions only, one run per peer, few messages, no memory tests: a smoke test, not a result to quote.\n' : '',
    a.issue16 ? '\n**Issue 16\'s rows only** (`--issue16`): the Maildir scenarios and the relay rows; the other scenarios, latency and memory were not run (the previous full run is in this file\'s git history).\n' : '',
    ...issue16Section(d),
    ...(a.issue16 ? [] : [
    '## Headline: Tern / peer',
    '',
    'Messages/s ratios are Tern/peer, computed run by run (Tern and the peer in the same round) and then the median. ' +
      'CPU is the server\'s user+system time per message, including the work after the 250 (discarding, queueing, delivery).',
    '',
    ...headline(d),
    '',
    DAGGER_NOTE,
    '',
    '## Targets (issue 6)',
    '',
    'The targets of issue 6, next to what this run measured; met / not met is computed from the data by bench/report.ts. ' +
      'The acceptance targets are read at 20 and 100 concurrent sessions, a new connection per message (many per connection for the third).',
    '',
    '| target | where | measured | |',
    '| --- | --- | --- | --- |',
    ...tgt.map((t) => `| ${t.target} | ${t.where} | ${t.measured} | ${metText(t.met)} |`),
    '',
    DAGGER_NOTE,
    '',
    `${tgt.filter((t) => t.met === true).length} of ${tgt.length} met, ${tgt.filter((t) => t.met === false).length} not met, ${tgt.filter((t) => t.met === undefined).length} not measured.`,
    '',
    ]),
    ...diskSection(d),
    '## Machine and versions',
    '',
    `- CPUs (nproc): ${m.nproc}; model: ${m.cpu}; memory: ${f1(num(m.memoryGiB))} GiB`,
    `- Kernel: ${m.kernel}`,
    `- Load average (1, 5, 15 min) at the start: ${(m.loadavg ?? []).map((x) => x.toFixed(2)).join(', ') || 'n/a'}; at the end: ${(d.loadavgAfter ?? []).map((x) => x.toFixed(2)).join(', ') || 'n/a'} (the one at the end includes the benchmark's own processes, Postfix's smtpd waiting on fsync among them)`,
    `- Tern: ${ternVersionText(d)}`,
    `- Node ${m.node} (Tern and Haraka); Postfix ${m.postfix} (Debian package; smtp-source and smtp-sink from it); Haraka ${a.haraka} (npm)`,
    `- Pinned: ${m.pinned ? 'yes: server under test on CPU 0, the load generator (smtp-source or our client) and the driver on CPU 1 (taskset)' : 'no (taskset missing or one CPU)'}`,
    `- Command: \`${d.command}\` (the full run: \`npm run bench\`; the smoke test: \`npm run bench -- --quick\`; \`node bench/report.ts\` rewrites this file from docs/benchmarks.json)`,
    '',
    '## How it was run',
    '',
    'bench/run.ts runs three scripts, each its own process: bench/accept.ts (throughput, CPU, memory under load, latency), ' +
      (d.memory ? 'bench/memory.ts (idle connections, one big message), ' : '') + 'bench/relay.ts (relaying end to end). ' +
      'All servers listen on 127.0.0.1 only.',
    '',
    '### Peers',
    '',
    '- **tern**: `tern serve --config tern.yaml` from this checkout, as a user runs it, like for like with Postfix: durable spool (fsync before the 250), Received header, info logs to a file (one JSON line per event), ' +
      '`delivery: discard` for the recipient\'s domain (the message is durably queued, then dropped by the scheduler, like Postfix\'s discard(8)), and the inbound SPF/DKIM/DMARC/iprev checks off, as Postfix and Haraka run none. ' +
      '`dns.servers` points at a loopback DNS server with empty zones (test/helpers/dns-server.ts), so that any lookup is answered (NXDOMAIN) on this machine. ' +
      'Handled = its log\'s delivery lines with `"relay":"discard"`. Its tern.yaml, complete (ports and directories are chosen afresh for each run; everything not in it is Tern\'s default):',
    '',
    ...(cfg.tern ? yamlBlock(cfg.tern) : []),
    '',
    `- **tern-checks**: the same with the inbound checks on (Tern's default: no \`inbound\` key), to show what they cost; in: ${peersIn('tern-checks').join('; ') || 'none'}.`,
    `- **tern-maildir**: the same (checks off) delivering to a Maildir instead (\`mailboxes: [user]\`, no \`delivery\` key); handled = files in the Maildir's new/; in: ${peersIn('tern-maildir').join('; ') || 'none'}.`,
    `- **tern-default**: Tern's defaults for a receiving domain: the inbound SPF/DKIM/DMARC/ARC checks on (no \`inbound\` key) and Maildir delivery; otherwise the same; handled = files in the Maildir's new/; in: ${peersIn('tern-default').join('; ') || 'none'}.`,
    '- **postfix-maildir**: the same private Postfix instance, delivering through virtual(8) into a Maildir (virtual(8) fsyncs each file before it links it into new/); handled = files in the Maildir\'s new/, as for Tern. main.cf settings over the helper\'s (the virtual_mailbox_* ones are the helper\'s own, shown for completeness): ' +
      (cfg['postfix-maildir'] ? Object.entries(cfg['postfix-maildir']).map(([k, v]) => `\`${k} = ${String(v)}\``).join(', ') : 'n/a') + '.',
    '- **postfix**: a private instance (test/helpers/postfix.ts, its own main.cf, master.cf and queue in a temp dir): smtpd into its real queue (fsynced by cleanup before the 250), then qmgr hands each message to discard(8); ' +
      'no peer-name lookups (`smtpd_peername_lookup = no`). Handled = `status=sent` lines in its log. main.cf settings over the helper\'s: ' +
      (cfg.postfix ? Object.entries(cfg.postfix).map(([k, v]) => `\`${k} = ${String(v)}\``).join(', ') : 'n/a') + '.',
    `- **haraka**: Haraka ${a.haraka} from npm (bench/haraka.ts installs it into bench/.peers/haraka), one process (\`nodes=0\`), log level notice to a file, plugins \`rcpt_to.in_host_list\` and \`queue-fsync\` ` +
      '(bench/peers/haraka/queue-fsync.js: each message streamed to a file, fsynced, renamed into a queue directory and the directory fsynced before the 250). Its reverse DNS lookup of the client is answered "unknown" by the plugin (as Postfix\'s `smtpd_peername_lookup = no`). ' +
      '`[max] bytes` raised to the same 128 MiB limit; Haraka\'s default `spool_after` (hold the message in memory while it arrives) is kept. Handled = files queued.',
    '- **sink**: Postfix\'s `smtp-sink` (SMTP without disk): the upper bound, and a measure of what the load generator can do.',
    '',
    '### Accepting (bench/accept.ts)',
    '',
    `Every peer runs at once (idle while another is measured), each pinned to CPU 0. Each first gets an unmeasured warm-up of ${a.warmupMessages} × 1 KB over 20 sessions (JIT for the Node servers — Haraka's CPU per message settles only after a few thousand messages — and process pools for Postfix). ` +
      `Then for each scenario, ${a.runsEach} round(s), each running every peer of the scenario in turn (${(a.scenarios.find((s) => s.peers.includes('tern')) ?? a.scenarios[0])?.peers.join(', ') ?? ''}, then again): ` +
      '`smtp-source -s SESSIONS -m N -l SIZE [-d] -f load@load.test -t user@DOMAIN 127.0.0.1:PORT` on CPU 1. For every run:',
    '',
    '- **messages/s**: N / smtp-source\'s wall time (every message has had its 250 after DATA);',
    '- **server CPU ms/message**: user+system time of the server\'s processes (/proc/PID/stat, children reaped by them included: Postfix\'s master reaps its daemons) from the start of the run until the server has handled all N (discarded, queued, delivered, sunk), over N; **CPU user / sys**: the same time split into user (utime + cutime) and system (stime + cstime), the system part being the kernel\'s work for the server (the file system and fsync, loopback TCP);',
    '- **peak RSS / PSS**: the highest sum of VmRSS / Pss (/proc/PID/smaps_rollup) over the server\'s processes, sampled every 200 ms over the same span. For Postfix (100+ processes sharing their libraries) the VmRSS sum counts shared pages once per process; PSS divides them between the sharers and is the fairer figure.',
    '- **s until all handled**: wall time until the server has handled all N.',
    '',
    'Median (min–max) over the rounds. Scenarios, first issue 16\'s (both delivering into a Maildir; ids `md-…`): 1 KB × 20 sessions (tern-default, postfix-maildir, tern-maildir), 1 KB × 100 and 100 KB × 20 (tern-maildir, postfix-maildir), a new connection per message; then ' +
      '1 KB / 100 KB / 1 MB / 10 MB × 1, 20 and 100 sessions, a new connection per message; ' +
      'many messages per connection (`smtp-source -d`) at 1 KB × 1, 20, 100 sessions and at 100 KB × 20 sessions. ' +
      'Not run: 10 MB at 100 sessions (40 messages: fewer than one message per session at a time). Message counts are chosen so that one run of the slowest peer takes a few seconds (they are in each table).',
    '',
    'After the throughput scenarios, latency: our own client (bench/latency.ts) against tern, postfix and haraka, 1 KB over 20 sessions, a new connection per message and then many per connection; ' +
      'each run waits until the peer has handled every message before the next starts.',
    '',
    ...(d.memory ? [
      '### Memory (bench/memory.ts)',
      '',
      `A fresh server for each measurement (so that a heap grown by earlier load does not hide the figure), pinned to CPU 0, configured as above; Tern's limits for the idle test: ${Object.entries(d.memory.idleTernLimits).map(([k, v]) => `\`${k}: ${v}\``).join(', ')} (the only difference). ` +
        `Idle: ${d.memory.connections.toLocaleString('en')} connections after an unmeasured warm-up of 200, Tern and Haraka. Big message: one ${f0(d.memory.bigBytes / MB)} MB message after 20 small ones, Tern, Haraka and Postfix.`,
      '',
    ] : []),
    '### Relaying (bench/relay.ts)',
    '',
    'Tern (`trustedNetworks: [127.0.0.0/8]`, durable spool, MX lookup on the loopback DNS server, `outbound.port` = the sink\'s) and Postfix (`relayhost` = the sink, `mynetworks = 127.0.0.0/8`) relay 1 KB messages from smtp-source to smtp-sink on 127.0.0.3 (the sink on CPU 1); interleaved runs' + (d.relay.warmupMessages ? `, after an unmeasured warm-up of ${d.relay.warmupMessages} messages each. ` : '. ') +
      (d.relay.ternDkim ? `A second Tern, \`tern-dkim\`, is the same with \`load.test\` (the sender's domain) among its domains and a signing key for it made by \`tern dkim keygen\` (${d.relay.dkimAlgorithm ?? 'rsa-sha256'}): mail from a trusted network is submission, so it is fixed up and signed before the spool commit. Postfix has no signer; its runs are the same for both comparisons.` : ''),
    '',
    '## Accepting: every scenario',
    '',
    ...a.scenarios.flatMap((s) => scenarioTable(s, a.runsEach)),
    '## Latency: end of DATA → 250',
    '',
    ...latencyTable(d),
    '## Memory',
    '',
    ...memoryTables(d.memory),
    '## Relaying',
    '',
    ...relayTable(d.relay),
    '## Hostile content',
    '',
    'bench/adversarial.ts (not run by bench/run.ts; `node bench/adversarial.ts --write`) sends one Tern messages of 20 MiB built to be expensive (bare LF, bare CR, NUL, 64 KiB lines; valid but dense: empty lines, one-octet lines, stuffed one-dot lines) over DATA and BDAT, with the time and server CPU of each as a ratio to plain text of the same size, and a legitimate 1 KB message\'s latency while 4 hostile connections run. Its latest results are in docs/adversarial.md (issue 11, break 2).',
    '',
    '## Reading these numbers',
    '',
    '- Two cores: the server gets one, the load generator the other. When a peer comes close to smtp-sink\'s rate, the load generator (smtp-source, one process for all sessions) is the limit, not the server; the ratio to smtp-sink shows how close.',
    '- Everything is on loopback: no network latency, so the per-message fsync and the server\'s CPU are what separates the peers.',
    '- Message counts are small enough for a run in minutes; run-to-run spread is in the min–max.',
    '',
  ].join('\n');
}

if (import.meta.filename === path.resolve(process.argv[1] ?? '')) {
  const root = path.resolve(import.meta.dirname, '..');
  const file = process.argv[2] ?? path.join(root, 'docs/benchmarks.json');
  const out = process.argv[3] ?? path.join(root, 'docs/benchmarks.md');
  const data = JSON.parse(fs.readFileSync(file, 'utf8')) as BenchResults;
  fs.writeFileSync(out, renderMarkdown(data, path.resolve(file) === path.join(root, 'docs/benchmarks.json') ? undefined : path.basename(file)));
  console.log(`wrote ${path.relative(process.cwd(), out)} from ${path.relative(process.cwd(), file)}`);
}
