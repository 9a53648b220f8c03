// The disk's own limits, on the filesystem the benchmarks use (os.tmpdir()):
//
// measureDisk: how many "append 1 KB, then fdatasync" rounds per second one
// writer gets, back to back. A durable MTA that paid one sync per message
// could not accept more messages per second than this; group commit
// (several messages per sync) is how it gets past it.
//
// measureMaildirFloor: what one durable Maildir file costs, done the way a
// Maildir delivery agent must do it (Tern's src/delivery/maildir.ts,
// Postfix's virtual(8)): open tmp/<name> (0600), write it, fdatasync, close,
// rename into new/<name>, and fsync new/ so that the rename survives a crash
// (here once per 20 files, as concurrent deliveries share a directory
// fsync). 1 KiB files, 20 deliveries in flight through libuv's thread pool
// (the callback fs API, as Node servers do it; the pool at its default size,
// as Tern runs). Then the same without the fdatasync and the directory
// fsync. For each: files/s, and the process's user and system CPU time per
// file (process.cpuUsage: every thread of this process). The difference is
// the price of durability; the system time of the durable variant is the
// kernel CPU that every durable Maildir delivery on this disk pays at least,
// whatever the server. Kernel threads that commit the file system's journal
// (jbd2, kworkers) are charged to no process, here or in the benchmarks'
// per-server CPU figures.
//
//   node bench/disk.ts [--seconds S] [--files N] [--max-seconds S]
//
// prints { disk, maildirFloor } as JSON. Other work on the machine inflates
// the system time per file (contended locks and caches in the kernel); the
// Maildir floor waits for a quiet machine first (bench/lib.ts waitForQuiet).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cli, waitForQuiet } from './lib.ts';

export interface DiskResult {
  /** fdatasync rounds per second (each after a 1 KiB append). */
  syncsPerSecond: number;
  /** Median time of one round, ms. */
  medianMs: number;
  rounds: number;
  dir: string;
}

export function measureDisk(seconds = 2, dir = os.tmpdir()): DiskResult {
  const file = path.join(fs.mkdtempSync(path.join(dir, 'tern-disk-')), 'append');
  const fd = fs.openSync(file, 'a');
  const block = Buffer.alloc(1024, 0x61);
  const times: number[] = [];
  const end = performance.now() + seconds * 1000;
  try {
    while (performance.now() < end) {
      const t = performance.now();
      fs.writeSync(fd, block);
      fs.fdatasyncSync(fd);
      times.push(performance.now() - t);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
  const sorted = [...times].sort((a, b) => a - b);
  const total = times.reduce((a, b) => a + b, 0);
  return { syncsPerSecond: (times.length * 1000) / total, medianMs: sorted[Math.floor(sorted.length / 2)]!, rounds: times.length, dir };
}

// ---------------------------------------------------------------- Maildir floor

export interface MaildirVariant {
  /** Files delivered in the measured span. */
  files: number;
  seconds: number;
  filesPerSecond: number;
  /** process.cpuUsage() over the span (main thread and thread pool), per file, µs. */
  userUsPerFile: number;
  systemUsPerFile: number;
}

export interface MaildirFloorResult {
  dir: string;
  fileBytes: number;
  /** Deliveries in flight at once. */
  inFlight: number;
  /** The durable variant fsyncs new/ once per this many files. */
  dirSyncEvery: number;
  /** libuv's thread pool: UV_THREADPOOL_SIZE as inherited (not set by the benchmark), else libuv's default, 4. */
  threadPool: number;
  /** Unmeasured files delivered before each variant. */
  warmupFiles: number;
  /** Set by bench/run.ts: measured pinned to CPU 0, as the servers run (absent: not pinned). */
  pinned?: boolean;
  /** open, write, fdatasync, close, rename, fsync of new/ once per dirSyncEvery files. */
  durable: MaildirVariant;
  /** open, write, close, rename: no fdatasync, no directory fsync. */
  nonDurable: MaildirVariant;
  /** durable − nonDurable, per file: what durability costs in CPU on this disk. */
  durability: { userUsPerFile: number; systemUsPerFile: number };
}

export interface MaildirFloorOptions {
  /** Files per variant (default 2000)… */
  files?: number;
  /** …or fewer if this many seconds have gone by (default 3). */
  maxSeconds?: number;
  dir?: string;
  inFlight?: number;
  dirSyncEvery?: number;
  warmupFiles?: number;
}

// The callback API, one libuv thread pool request per call, as a Node
// server issues them (fs.promises' FileHandle adds its own bookkeeping).
const done = <T>(res: (v: T) => void, rej: (e: Error) => void) => (e: NodeJS.ErrnoException | null, v?: T) => (e ? rej(e) : res(v as T));
const open = (file: string, flags: string, mode?: number) => new Promise<number>((res, rej) => fs.open(file, flags, mode, done(res, rej)));
const write = (fd: number, buf: Buffer) =>
  new Promise<number>((res, rej) => fs.write(fd, buf, 0, buf.length, null, done(res, rej))).then((n) => {
    if (n !== buf.length) throw new Error(`short write: ${n} of ${buf.length} bytes`);
  });
const fdatasync = (fd: number) => new Promise<void>((res, rej) => fs.fdatasync(fd, done(res, rej)));
const fsync = (fd: number) => new Promise<void>((res, rej) => fs.fsync(fd, done(res, rej)));
const close = (fd: number) => new Promise<void>((res, rej) => fs.close(fd, done(res, rej)));
const rename = (from: string, to: string) => new Promise<void>((res, rej) => fs.rename(from, to, done(res, rej)));

async function syncDir(dir: string): Promise<void> {
  const fd = await open(dir, 'r');
  try {
    await fsync(fd);
  } finally {
    await close(fd);
  }
}

/** `n` files (or fewer after `maxMs`) into a fresh Maildir at `root`, `inFlight` at a time. */
async function deliverMany(root: string, o: { n: number; maxMs: number; durable: boolean; inFlight: number; dirSyncEvery: number; body: Buffer }): Promise<MaildirVariant> {
  const tmpDir = path.join(root, 'tmp');
  const newDir = path.join(root, 'new');
  for (const d of [tmpDir, newDir]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  let started = 0;
  let renamed = 0;
  const deliver = async (i: number) => {
    const name = `${i}.P${process.pid}.bench`;
    const tmp = path.join(tmpDir, name);
    const fd = await open(tmp, 'w', 0o600);
    try {
      await write(fd, o.body);
      if (o.durable) await fdatasync(fd);
    } finally {
      await close(fd);
    }
    await rename(tmp, path.join(newDir, name));
    // Every dirSyncEvery-th rename pays for a directory fsync that covers the renames before it.
    if (o.durable && ++renamed % o.dirSyncEvery === 0) await syncDir(newDir);
  };
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const end = t0 + o.maxMs;
  const lane = async () => {
    while (started < o.n && performance.now() < end) await deliver(started++);
  };
  await Promise.all(Array.from({ length: o.inFlight }, lane));
  // A last partial batch is made durable too (the time bound can stop mid-batch).
  if (o.durable && renamed % o.dirSyncEvery !== 0) await syncDir(newDir);
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - t0) / 1000;
  return { files: started, seconds, filesPerSecond: started / seconds, userUsPerFile: cpu.user / started, systemUsPerFile: cpu.system / started };
}

/**
 * The CPU floor of durable Maildir delivery on this disk: the durable and
 * the non-durable variant (see the top of this file), each after an
 * unmeasured warm-up in its own directory, in a temporary directory under
 * `dir` that is removed afterwards. The durable variant runs first, so that
 * the other's dirty pages are not flushed under it.
 */
export async function measureMaildirFloor(o: MaildirFloorOptions = {}): Promise<MaildirFloorResult> {
  const dir = o.dir ?? os.tmpdir();
  const files = o.files ?? 2000;
  const maxMs = (o.maxSeconds ?? 3) * 1000;
  const inFlight = o.inFlight ?? 20;
  const dirSyncEvery = o.dirSyncEvery ?? 20;
  const warmupFiles = o.warmupFiles ?? Math.min(200, files);
  const body = Buffer.alloc(1024, 0x61);
  const base = fs.mkdtempSync(path.join(dir, 'tern-maildir-floor-'));
  try {
    const variant = async (durable: boolean) => {
      const name = durable ? 'durable' : 'plain';
      const common = { durable, inFlight, dirSyncEvery, body };
      if (warmupFiles > 0) await deliverMany(path.join(base, `warmup-${name}`), { ...common, n: warmupFiles, maxMs });
      return deliverMany(path.join(base, name), { ...common, n: files, maxMs });
    };
    const durable = await variant(true);
    const nonDurable = await variant(false);
    return {
      dir, fileBytes: body.length, inFlight, dirSyncEvery, threadPool: Number(process.env.UV_THREADPOOL_SIZE) || 4, warmupFiles,
      durable, nonDurable,
      durability: { userUsPerFile: durable.userUsPerFile - nonDurable.userUsPerFile, systemUsPerFile: durable.systemUsPerFile - nonDurable.systemUsPerFile },
    };
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const args = cli();
  const disk = measureDisk(args.num('seconds', 2));
  // System time per file grows with other work on the machine (shared locks, caches): wait for quiet, as bench/run.ts does.
  await waitForQuiet();
  const maildirFloor = await measureMaildirFloor({ files: args.num('files', 2000), maxSeconds: args.num('max-seconds', 3) });
  console.log(JSON.stringify({ disk, maildirFloor }, null, 2));
}
