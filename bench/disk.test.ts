// bench/disk.ts's Maildir floor on a small scale: both variants deliver what
// they were asked to, stop at the time bound, report per-file figures, and
// leave nothing behind.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { measureMaildirFloor } from './disk.ts';

test('measureMaildirFloor: N files each way, per-file CPU, the difference, and its temp directory removed', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-disk-test-'));
  try {
    const r = await measureMaildirFloor({ files: 100, warmupFiles: 20, dir });
    assert.equal(r.dir, dir);
    assert.equal(r.fileBytes, 1024);
    assert.equal(r.inFlight, 20);
    assert.equal(r.dirSyncEvery, 20);
    assert.equal(r.threadPool, Number(process.env.UV_THREADPOOL_SIZE) || 4);
    for (const v of [r.durable, r.nonDurable]) {
      assert.equal(v.files, 100);
      assert.ok(v.seconds > 0 && Number.isFinite(v.filesPerSecond) && v.filesPerSecond > 0);
      assert.ok(v.userUsPerFile >= 0 && v.systemUsPerFile >= 0);
    }
    assert.equal(r.durability.userUsPerFile, r.durable.userUsPerFile - r.nonDurable.userUsPerFile);
    assert.equal(r.durability.systemUsPerFile, r.durable.systemUsPerFile - r.nonDurable.systemUsPerFile);
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('measureMaildirFloor: the time bound stops it before N files', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-disk-test-'));
  try {
    const r = await measureMaildirFloor({ files: 10_000_000, maxSeconds: 0.2, warmupFiles: 0, dir });
    for (const v of [r.durable, r.nonDurable]) {
      assert.ok(v.files > 0 && v.files < 10_000_000);
      // The deliveries in flight at the bound still finish: a little past it.
      assert.ok(v.seconds < 5, `${v.seconds} s`);
    }
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
