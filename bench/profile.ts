// Where Tern's time goes: runs Tern (configured like the `tern` peer of
// bench/accept.ts unless told otherwise) under `node --cpu-prof`, pinned to
// CPU 0, sends it N messages with smtp-source from CPU 1, stops it, and
// prints the profile by function (self time), by file, and by Tern
// function (inclusive), plus msg/s and CPU ms per message of the run.
//
//   node bench/profile.ts [--messages N] [--sessions S] [--size BYTES] [--reuse]
//                         [--checks] [--maildir] [--dkim [rsa|ed25519]] [--top K] [--keep]
//
// --checks: inbound SPF/DKIM/DMARC on; --maildir: Maildir delivery instead of
// discard; --dkim: the sender's domain (load.test) is one of Tern's, with a
// signing key from `tern dkim keygen` (rsa unless told), and 127.0.0.0/8 is
// trusted, so every message is submission and signed (bench/relay.ts's
// tern-dkim, without the relaying); --keep: leave the .cpuprofile (for
// Chrome DevTools) and print its path.

import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { stringify } from 'yaml';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { freePort } from '../test/helpers/server.ts';
import { cli, cpuMs, logCounter, pin, runSource, SERVER_CPU, tempDir, waitUntil } from './lib.ts';

const args = cli();
const N = args.num('messages', 6000);
const SESSIONS = args.num('sessions', 20);
const SIZE = args.num('size', 1024);
const REUSE = args.flag('reuse');
const TOP = args.num('top', 30);
const DKIM = args.flag('dkim');
const DKIM_ALGO = ['rsa', 'ed25519'].includes(args.str('dkim') ?? '') ? args.str('dkim')! : 'rsa';
/** strace -c over the measured span instead of the CPU profile: system calls per message, by call. */
const SYSCALLS = args.flag('syscalls');
/** perf record over the measured span instead of the CPU profile: where the kernel's (and everyone's) time goes, by symbol. */
const PERF = args.flag('perf');

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

const short = (url: string) => url.replace(/^.*\/(node_modules\/[^/]+|src)\//, '$1/');

/** Self time per function and per file, and inclusive time per src/ function, as shares of all samples. */
export function summarize(p: CpuProfile, top: number): string {
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (const [id, t] of self) {
    const cf = nodes.get(id)!.callFrame;
    add(byFn, `${cf.functionName || '(anonymous)'} ${short(cf.url)}:${cf.lineNumber + 1}`, t);
    add(byFile, short(cf.url) || cf.functionName, t);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const c = nodes.get(cur)!.callFrame;
      if (!c.url.includes('/src/')) continue;
      const k = `${c.functionName || '(anonymous)'} ${short(c.url)}:${c.lineNumber + 1}`;
      if (!seen.has(k)) {
        seen.add(k);
        add(inclusive, k, t);
      }
    }
  }
  const list = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
  return [
    `${(total / 1000).toFixed(0)} ms of samples (start-up included)`,
    'self time by function:', ...list(byFn),
    'self time by file:', ...list(byFile),
    'inclusive time, Tern functions:', ...list(inclusive),
  ].join('\n');
}

/**
 * Context switches of all the process's threads (voluntary and not, from
 * /proc/PID/task/TID/status). With the server pinned to one core, each one
 * is a thread handing the core to another (the thread pool, V8's helpers):
 * kernel time that the CPU profile does not show. Threads that ended are lost.
 */
function contextSwitches(pid: number): number {
  let n = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
    } catch {
      /* ended */
    }
  }
  return n;
}

/** strace -c's table with a calls-per-message column: "% time seconds usecs/call calls errors syscall". */
function perMessage(table: string, messages: number): string {
  const rows = table.split('\n').filter((l) => /^\s*\d+\.\d+\s/.test(l));
  const out = ['system calls per message (strace -c -f over the measured span; its own overhead inflates the times):', '  calls/msg  errors  % time  syscall'];
  for (const l of rows) {
    const f = l.trim().split(/\s+/);
    const calls = Number(f[3]);
    const errors = f.length === 6 ? Number(f[4]) : 0;
    out.push(`  ${(calls / messages).toFixed(2).padStart(9)}  ${String(errors).padStart(6)}  ${f[0]!.padStart(6)}  ${f[f.length - 1]}`);
  }
  return out.join('\n');
}

async function main(): Promise<void> {
  const dir = tempDir('tern-profile-');
  const dns = await startDnsServer({});
  const port = await freePort('127.0.0.1');
  const config = {
    hostname: 'bench.tern.test',
    dataDir: path.join(dir, 'data'),
    listeners: [{ role: 'smtp', address: '127.0.0.1', port }],
    domains: [
      args.flag('maildir') ? { name: 'tern.test', mailboxes: ['user'] } : { name: 'tern.test', delivery: 'discard' },
      ...(DKIM ? [{ name: 'load.test', mailboxes: ['load'] }] : []),
    ],
    ...(DKIM ? { trustedNetworks: ['127.0.0.0/8'] } : {}),
    dns: { servers: [dns.address] },
    limits: { connectionsPerIp: 1000, connections: 2000, messageSize: 128 * 1024 * 1024 },
    ...(args.flag('checks') ? {} : { inbound: { enabled: false } }),
  };
  fs.writeFileSync(path.join(dir, 'tern.yaml'), stringify(config));
  if (DKIM) {
    const k = spawnSync(process.execPath, [path.resolve(import.meta.dirname, '../src/cli/main.ts'), 'dkim', 'keygen', 'load.test', '--selector', 'bench', '--algo', DKIM_ALGO, '--config', path.join(dir, 'tern.yaml')], { encoding: 'utf8' });
    if (k.status !== 0) throw new Error(`tern dkim keygen failed (${k.status}): ${k.stderr}`);
  }
  const logFile = path.join(dir, 'tern.log');
  const fd = fs.openSync(logFile, 'w');
  // The flags `tern serve` would re-exec with, given here so that the profiled process is the first one.
  const profiling = SYSCALLS || PERF ? [] : ['--cpu-prof', '--cpu-prof-dir', dir];
  // --node-flags "…": more flags for Tern's node (to try V8 or libuv settings).
  const extra = (args.str('node-flags') ?? '').split(/\s+/).filter(Boolean);
  const [cmd, argv] = pin(SERVER_CPU, process.execPath, [...profiling, ...extra, '--max-semi-space-size=4', path.resolve(import.meta.dirname, '../src/cli/main.ts'), 'serve', '--config', path.join(dir, 'tern.yaml')]);
  const child = spawn(cmd, argv, { stdio: ['ignore', fd, 'inherit'], env: { ...process.env, TERN_NO_REEXEC: '1' } });
  fs.closeSync(fd);
  try {
    if (!(await waitUntil(() => fs.readFileSync(logFile, 'utf8').includes('"tern started"'), 30_000, 20))) throw new Error('tern did not start');
    const done = args.flag('maildir')
      ? () => { try { return fs.readdirSync(path.join(dir, 'data/mailboxes/tern.test/user/new')).length; } catch { return 0; } }
      : logCounter(logFile, '"relay":"discard"');
    const source = (messages: number) => runSource({ host: '127.0.0.1', port, messages, sessions: SESSIONS, size: SIZE, reuse: REUSE, from: 'load@load.test', to: 'user@tern.test', timeoutMs: 300_000 });
    await source(Math.min(1000, N)); // warm-up
    await waitUntil(() => done() >= Math.min(1000, N), 60_000, 20);
    const tracer = SYSCALLS
      ? spawn('strace', [...(process.env.STRACE_RAW ? ['-e', 'trace=futex,openat,fsync,close,rename,writev,pwrite64,write,read'] : ['-c']), '-f', '-o', path.join(dir, 'strace.txt'), '-p', String(child.pid)], { stdio: 'ignore' })
      : PERF
        ? spawn('perf', ['record', '-g', '-o', path.join(dir, 'perf.data'), '-p', String(child.pid)], { stdio: 'ignore' })
        : null;
    if (tracer) await new Promise((res) => setTimeout(res, 1000)); // attached to every thread
    const c0 = cpuMs([child.pid!]);
    const x0 = contextSwitches(child.pid!);
    const base = done();
    const r = await source(N);
    await waitUntil(() => done() - base >= N, 120_000, 10);
    const cpu = cpuMs([child.pid!]) - c0;
    const switches = contextSwitches(child.pid!) - x0;
    console.log(`${N} × ${SIZE} B, ${SESSIONS} sessions${REUSE ? ', many per connection' : ''}: ${(N / r.seconds).toFixed(0)} msg/s, ${(cpu / N).toFixed(3)} ms CPU per message, ${(switches / N).toFixed(1)} context switches per message${tracer ? ' (traced: slower than untraced)' : ''}`);
    if (tracer) {
      const stopped = new Promise((res) => tracer.once('exit', res));
      tracer.kill('SIGINT');
      await stopped;
      if (SYSCALLS && process.env.STRACE_RAW) fs.copyFileSync(path.join(dir, 'strace.txt'), process.env.STRACE_RAW);
      else if (SYSCALLS) console.log(perMessage(fs.readFileSync(path.join(dir, 'strace.txt'), 'utf8'), N));
      else console.log(spawnSync('perf', ['report', '-i', path.join(dir, 'perf.data'), '--no-children', '--sort', 'sym', '--stdio', '-g', 'none', '--percent-limit', '0.7'], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout);
    }
  } finally {
    const gone = new Promise((res) => child.once('exit', res));
    child.kill('SIGTERM');
    await gone;
    await dns.close();
  }
  if (SYSCALLS || PERF) {
    if (args.flag('keep')) console.log(`kept: ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
    return;
  }
  const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('no profile written');
  console.log(summarize(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as CpuProfile, TOP));
  if (args.flag('keep')) console.log(`profile: ${path.join(dir, file)}`);
  else fs.rmSync(dir, { recursive: true, force: true });
}

if (import.meta.main) await main();
