// The disk's own limit for durable commits: how many "append 1 KB, then
// fdatasync" rounds per second one writer gets, back to back, on the
// filesystem the benchmarks use (os.tmpdir()). A durable MTA that paid one
// sync per message could not accept more messages per second than this;
// group commit (several messages per sync) is how it gets past it.
//
//   node bench/disk.ts [--seconds S]

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cli } from './lib.ts';

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

if (import.meta.main) {
  const args = cli();
  console.log(JSON.stringify(measureDisk(args.num('seconds', 2))));
}
