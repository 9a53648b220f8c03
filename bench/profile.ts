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
  const [cmd, argv] = pin(SERVER_CPU, process.execPath, ['--cpu-prof', '--cpu-prof-dir', dir, '--max-semi-space-size=4', path.resolve(import.meta.dirname, '../src/cli/main.ts'), 'serve', '--config', path.join(dir, 'tern.yaml')]);
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
    const c0 = cpuMs([child.pid!]);
    const base = done();
    const r = await source(N);
    await waitUntil(() => done() - base >= N, 120_000, 10);
    const cpu = cpuMs([child.pid!]) - c0;
    console.log(`${N} × ${SIZE} B, ${SESSIONS} sessions${REUSE ? ', many per connection' : ''}: ${(N / r.seconds).toFixed(0)} msg/s, ${(cpu / N).toFixed(3)} ms CPU per message`);
  } finally {
    const gone = new Promise((res) => child.once('exit', res));
    child.kill('SIGTERM');
    await gone;
    await dns.close();
  }
  const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('no profile written');
  console.log(summarize(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as CpuProfile, TOP));
  if (args.flag('keep')) console.log(`profile: ${path.join(dir, file)}`);
  else fs.rmSync(dir, { recursive: true, force: true });
}

if (import.meta.main) await main();
