// Shared pieces of the benchmarks (bench/accept.ts, bench/memory.ts,
// bench/relay.ts, bench/peers.ts): CPU pinning, smtp-source / smtp-sink, Tern
// as a child process, CPU time and memory from /proc, counting what a server
// has handled (log lines, files), medians, and a description of the machine.
// CPU time is read as user + system and also split into the two (cpuSplitMs,
// cpuMeterSplit): the system part is the kernel's work on the server's
// behalf (fsync among it).
//
// Pinning (on a 2-core machine): the server under test on CPU 0, the load
// generator (and this driver process) on CPU 1. Without taskset nothing is
// pinned and results say so.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { stringify } from 'yaml';

export const ROOT = path.resolve(import.meta.dirname, '..');
export const SERVER_CPU = 0;
export const LOAD_CPU = 1;

export const haveTaskset = spawnSync('taskset', ['-V']).status === 0 && os.availableParallelism() >= 2;

/** Command line helpers: `--name VALUE` and `--flag`. */
export function cli(argv: string[] = process.argv.slice(2)): {
  num: (name: string, dflt: number) => number;
  str: (name: string) => string | undefined;
  flag: (name: string) => boolean;
} {
  const str = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  return {
    str,
    num: (name, dflt) => {
      const v = str(name);
      return v === undefined ? dflt : Number(v);
    },
    flag: (name) => argv.includes(`--${name}`),
  };
}

/** argv to run `cmd` pinned to one CPU (unchanged without taskset). */
export function pin(cpu: number, cmd: string, argv: string[]): [string, string[]] {
  return haveTaskset ? ['taskset', ['-c', String(cpu), cmd, ...argv]] : [cmd, argv];
}

/** Pin running processes (children forked later inherit it). */
export function pinPids(cpu: number, pids: number[]): void {
  if (!haveTaskset) return;
  for (const pid of pids) spawnSync('taskset', ['-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
}

/** This driver process shares the load generator's CPU, away from the server under test. */
export function pinSelf(): void {
  pinPids(LOAD_CPU, [process.pid]);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function waitUntil(fn: () => boolean, timeoutMs: number, everyMs = 5): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) return false;
    await sleep(everyMs);
  }
  return true;
}

const TICK = 100; // USER_HZ on Linux

/** CPU time split into user (utime + cutime) and system, i.e. kernel (stime + cstime), ms. */
export interface CpuSplit { user: number; system: number }

/**
 * CPU time of these processes (reaped children included), in ms, split
 * into user and system time: a server that fsyncs spends much of its CPU
 * in the kernel (the file system's journal, the block layer), which no
 * change to its own code can remove; the split shows how much.
 */
export function cpuSplitMs(pids: number[]): CpuSplit {
  let user = 0;
  let system = 0;
  for (const pid of pids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime, stime, cutime, cstime: fields 14-17 of stat, 11-14 after "pid (comm) ".
      user += Number(f[11]) + Number(f[13]);
      system += Number(f[12]) + Number(f[14]);
    } catch {
      /* gone */
    }
  }
  return { user: (user * 1000) / TICK, system: (system * 1000) / TICK };
}

/** CPU time (user + system, including reaped children) of these processes, in ms. */
export function cpuMs(pids: number[]): number {
  const c = cpuSplitMs(pids);
  return c.user + c.system;
}

/**
 * CPU time of a changing set of processes between two instants: processes
 * that exist at the end but not at the start count from zero; processes that
 * exit in between are lost unless their parent reaps them (cutime), which
 * Postfix's master does.
 */
export function cpuMeter(pids: () => number[]): () => number {
  const meter = cpuMeterSplit(pids);
  return () => meter().total;
}

/**
 * cpuMeter with the total split into user and system time, all read from
 * the same /proc samples (total = user + system).
 */
export function cpuMeterSplit(pids: () => number[]): () => CpuSplit & { total: number } {
  const start = new Map(pids().map((p) => [p, cpuSplitMs([p])]));
  return () => {
    let user = 0;
    let system = 0;
    for (const p of pids()) {
      const now = cpuSplitMs([p]);
      const s = start.get(p);
      user += now.user - (s?.user ?? 0);
      system += now.system - (s?.system ?? 0);
    }
    return { total: user + system, user, system };
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

export interface Spread { median: number; min: number; max: number }

/** Sum over these processes of one "Name:  N kB" field of a /proc file; processes that are gone count 0. */
function sumProcKiB(pids: number[], file: string, field: string): number {
  const re = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm');
  let total = 0;
  for (const pid of pids) {
    try {
      const m = re.exec(fs.readFileSync(`/proc/${pid}/${file}`, 'latin1'));
      if (m) total += Number(m[1]);
    } catch {
      /* gone */
    }
  }
  return total;
}

/** Sum of VmRSS (KiB) over these processes. */
export function rssKiB(pids: number[]): number {
  return sumProcKiB(pids, 'status', 'VmRSS');
}

/**
 * Sum of Pss (KiB, /proc/<pid>/smaps_rollup) over these processes: shared
 * pages split between the processes sharing them, so that a server made of
 * many processes (Postfix) is not charged its shared libraries once per
 * process as the VmRSS sum does.
 */
export function pssKiB(pids: number[]): number {
  return sumProcKiB(pids, 'smaps_rollup', 'Pss');
}

export interface MemoryPeak { rssKiB: number; pssKiB: number; samples: number }

/**
 * Samples RSS and PSS (each summed over `pids()`) every `everyMs` until
 * stop(), which returns the highest of each. Runs in this (driver) process,
 * on the load generator's CPU.
 */
export function memorySampler(pids: () => number[], everyMs = 200): { stop: () => MemoryPeak } {
  const peak: MemoryPeak = { rssKiB: 0, pssKiB: 0, samples: 0 };
  const sample = () => {
    const p = pids();
    peak.rssKiB = Math.max(peak.rssKiB, rssKiB(p));
    peak.pssKiB = Math.max(peak.pssKiB, pssKiB(p));
    peak.samples++;
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return { ...peak };
    },
  };
}

/**
 * `pids` re-evaluated at most every `ms` (scanning /proc for a server's
 * processes is too slow to do at every memory sample).
 */
export function cachedPids(pids: () => number[], ms = 500): () => number[] {
  let at = 0;
  let last: number[] = [];
  return () => {
    const now = Date.now();
    if (now - at >= ms) {
      last = pids();
      at = now;
    }
    return last;
  };
}

/** pid and all its descendants, from /proc. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(e));
      children.set(ppid, list);
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** Entries in a directory (0 if it does not exist yet). */
export function countFiles(dir: string): number {
  try {
    return fs.readdirSync(dir).length;
  } catch {
    return 0;
  }
}

/** Remove every entry of a directory (not the directory). */
export function emptyDir(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) fs.rmSync(path.join(dir, n), { force: true, recursive: true });
}

/**
 * Count the lines of a growing log file that contain `needle`, reading only
 * what was appended since the last call.
 */
export function logCounter(file: string, needle: string): () => number {
  let offset = 0;
  let count = 0;
  let rest = '';
  const buf = Buffer.alloc(1 << 20);
  return () => {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return count;
    }
    try {
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        offset += n;
        const lines = (rest + buf.subarray(0, n).toString('latin1')).split('\n');
        rest = lines.pop()!;
        for (const l of lines) if (l.includes(needle)) count++;
      }
    } finally {
      fs.closeSync(fd);
    }
    return count;
  };
}

export function spread(xs: number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

export interface Sink { child: ChildProcess; count: () => number; reset: () => void; stop: () => void }

/**
 * Postfix's smtp-sink with its running "mesg=N" counter (-c). With `quiet`
 * the counter is off and nothing is parsed.
 */
export function startSink(host: string, port: number, cpu: number, backlog = 1024): Sink {
  const [cmd, argv] = pin(cpu, 'smtp-sink', ['-u', 'nobody', '-c', `${host}:${port}`, String(backlog)]);
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
  return { child, count: () => last - base, reset: () => (base = last), stop: () => void child.kill() };
}

export interface SourceOptions {
  host: string;
  port: number;
  messages: number;
  sessions: number;
  size: number;
  /** Many messages per connection (smtp-source -d). */
  reuse?: boolean;
  from: string;
  to: string;
  timeoutMs: number;
}

export interface SourceResult { seconds: number; status: number | null; stderr: string }

/** Run smtp-source on the load CPU; resolves with its wall time. Killed after timeoutMs. */
export async function runSource(o: SourceOptions): Promise<SourceResult> {
  const flags = ['-s', String(o.sessions), '-m', String(o.messages), '-l', String(o.size), '-f', o.from, '-t', o.to];
  if (o.reuse) flags.unshift('-d');
  const [cmd, argv] = pin(LOAD_CPU, 'smtp-source', [...flags, `${o.host}:${o.port}`]);
  const t0 = process.hrtime.bigint();
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    if (stderr.length < 4000) stderr += d;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs);
  const status = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(timer);
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, status, stderr };
}

export interface TernProcess { child: ChildProcess; pid: number; dir: string; logFile: string; stop: () => Promise<void> }

/**
 * Tern from this checkout as a user runs it (`tern serve --config FILE`),
 * pinned to `cpu`, its log (stdout) going to a file as a service manager
 * would take it. Resolves once it logs "tern started".
 */
export async function startTern(config: Record<string, unknown>, dir: string, cpu: number): Promise<TernProcess> {
  const file = path.join(dir, 'tern.yaml');
  fs.writeFileSync(file, stringify(config));
  const logFile = path.join(dir, 'tern.log');
  const fd = fs.openSync(logFile, 'w');
  const [cmd, argv] = pin(cpu, process.execPath, [path.join(ROOT, 'src/cli/main.ts'), 'serve', '--config', file]);
  const child = spawn(cmd, argv, { stdio: ['ignore', fd, 'inherit'] });
  fs.closeSync(fd);
  let exited: number | null | undefined;
  child.once('exit', (c) => (exited = c));
  const started = () => {
    // Only the head of the log is read: the start-up line comes first.
    const buf = Buffer.alloc(64 * 1024);
    const rfd = fs.openSync(logFile, 'r');
    const n = fs.readSync(rfd, buf, 0, buf.length, 0);
    fs.closeSync(rfd);
    return buf.subarray(0, n).toString().includes('"tern started"');
  };
  const ok = await waitUntil(() => started() || exited !== undefined, 30_000, 20);
  if (!ok || exited !== undefined) {
    child.kill('SIGKILL');
    throw new Error(`tern did not start (exit ${exited}):\n${fs.readFileSync(logFile, 'utf8').slice(-3000)}`);
  }
  return {
    child,
    pid: child.pid!,
    dir,
    logFile,
    stop: async () => {
      if (exited !== undefined) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
    },
  };
}

export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

export interface Machine {
  nproc: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  node: string;
  postfix: string;
  date: string;
  pinned: boolean;
  /** 1, 5 and 15 minute load averages when this was taken (other work on the machine shows here). */
  loadavg: number[];
}

export function machine(): Machine {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown';
  const pf = spawnSync('postconf', ['-d', '-h', 'mail_version'], { encoding: 'utf8' });
  return {
    nproc: os.availableParallelism(),
    cpu: model.trim(),
    memoryGiB: os.totalmem() / 1024 ** 3,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    postfix: pf.status === 0 ? pf.stdout.trim() : 'unknown',
    date: new Date().toISOString(),
    pinned: haveTaskset,
    loadavg: os.loadavg(),
  };
}

/**
 * CPU time by process name (comm: smtpd, cleanup, virtual, …) over a span,
 * for servers made of many processes. Each process's own user+system time
 * (not its reaped children's, which would count them twice) is read every
 * `everyMs`; a process that exits between two samples loses what it spent
 * since the last one, and one that lives less than `everyMs` is missed, so
 * the parts add up to a little less than cpuMeter's total.
 */
export function cpuByName(pids: () => number[], everyMs = 200): { stop: () => Record<string, number> } {
  // Keyed by pid and start time: a pid the kernel hands out again is another process.
  const seen = new Map<string, { name: string; first: number; last: number }>();
  const sample = (initial: boolean) => {
    for (const pid of pids()) {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const ticks = Number(f[11]) + Number(f[12]);
        const key = `${pid}:${f[19]}`;
        const p = seen.get(key);
        if (p) p.last = ticks;
        else seen.set(key, { name, first: initial ? ticks : 0, last: ticks });
      } catch {
        /* gone */
      }
    }
  };
  sample(true);
  const timer = setInterval(() => sample(false), everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      sample(false);
      const out: Record<string, number> = {};
      for (const p of seen.values()) out[p.name] = (out[p.name] ?? 0) + ((p.last - p.first) * 1000) / TICK;
      return out;
    },
  };
}

/** Busy and total jiffies over all CPUs, from the first line of /proc/stat. */
function cpuJiffies(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
  const total = f.slice(0, 8).reduce((a, x) => a + x, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

/**
 * Wait until the machine is quiet (over all CPUs, less than `share` busy
 * in a `windowMs` window), at most `maxMs`. Other work on this shared
 * machine (builds, test runs) otherwise lands in some rounds and not others.
 * Resolves with the busy share of the last window and the seconds waited.
 */
export async function waitForQuiet(o: { share?: number; windowMs?: number; maxMs?: number } = {}): Promise<{ busy: number; waited: number }> {
  const share = o.share ?? 0.15;
  const windowMs = o.windowMs ?? 500;
  const t0 = Date.now();
  for (;;) {
    const a = cpuJiffies();
    await sleep(windowMs);
    const b = cpuJiffies();
    const busy = b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0;
    const waited = (Date.now() - t0) / 1000;
    if (busy < share || Date.now() - t0 >= (o.maxMs ?? 15_000)) return { busy, waited };
  }
}
