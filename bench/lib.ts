// Shared pieces of the benchmarks (bench/relay.ts, bench/accept.ts): CPU
// pinning, smtp-source / smtp-sink, Tern as a child process, CPU time from
// /proc, medians, and a description of the machine.
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

/** CPU time (user + system, including reaped children) of these processes, in ms. */
export function cpuMs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime, stime, cutime, cstime: fields 14-17 of stat, 11-14 after "pid (comm) ".
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      /* gone */
    }
  }
  return (ticks * 1000) / TICK;
}

/**
 * CPU time of a changing set of processes between two instants: processes
 * that exist at the end but not at the start count from zero; processes that
 * exit in between are lost unless their parent reaps them (cutime), which
 * Postfix's master does.
 */
export function cpuMeter(pids: () => number[]): () => number {
  const start = new Map(pids().map((p) => [p, cpuMs([p])]));
  return () => {
    let total = 0;
    for (const p of pids()) total += cpuMs([p]) - (start.get(p) ?? 0);
    return total;
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

export interface Spread { median: number; min: number; max: number }

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

export interface Machine { nproc: number; cpu: string; kernel: string; node: string; postfix: string; date: string; pinned: boolean }

export function machine(): Machine {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown';
  const pf = spawnSync('postconf', ['-d', '-h', 'mail_version'], { encoding: 'utf8' });
  return {
    nproc: os.availableParallelism(),
    cpu: model.trim(),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    postfix: pf.status === 0 ? pf.stdout.trim() : 'unknown',
    date: new Date().toISOString(),
    pinned: haveTaskset,
  };
}
