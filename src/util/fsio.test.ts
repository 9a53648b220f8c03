import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ClosedFileError, OpenFile } from './fsio.ts';
import { FaultIo, errno } from '../../test/helpers/fault-io.ts';

function tmpFile(): { file: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-fsio-'));
  return { file: path.join(dir, 'f'), cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

test('OpenFile: concurrent and repeated close() close the descriptor once and share one promise', async () => {
  const t = tmpFile();
  try {
    const fault = new FaultIo();
    const f = await OpenFile.open(t.file, 'w', fault.io);
    const a = f.close();
    const b = f.close();
    assert.equal(a, b, 'the same promise for every caller');
    assert.equal(f.closed, true, 'closed as soon as close() is called');
    await Promise.all([a, b, f.close()]);
    assert.equal(fault.closes, 1);
    assert.deepEqual(fault.violations, []);
  } finally {
    t.cleanup();
  }
});

test('OpenFile: every operation after close() fails without a system call on the old number', async () => {
  const t = tmpFile();
  try {
    const fault = new FaultIo();
    const f = await OpenFile.open(t.file, 'w+', fault.io);
    const closing = f.close();
    const before = fault.calls.length;
    await assert.rejects(f.writev([Buffer.from('x')]), ClosedFileError);
    await assert.rejects(f.fsync(), ClosedFileError);
    await assert.rejects(f.fdatasync(), ClosedFileError);
    await assert.rejects(f.read(Buffer.alloc(1), 0, 1, 0), ClosedFileError);
    assert.throws(() => f.writeSync('x'), ClosedFileError);
    await closing;
    assert.equal(fault.calls.length, before, 'no call reached the file system');
    assert.equal(fs.readFileSync(t.file).length, 0);
  } finally {
    t.cleanup();
  }
});

test('OpenFile: close() waits for the operations already started, then closes', async () => {
  const t = tmpFile();
  try {
    const fault = new FaultIo();
    const f = await OpenFile.open(t.file, 'w', fault.io);
    let release: () => void = () => {};
    fault.before = (c) => (c.op === 'writev' ? new Promise<void>((r) => (release = r)) : undefined);
    const writing = f.writev([Buffer.from('hello')]);
    const closing = f.close();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(fault.closes, 0, 'not closed while the write is pending');
    release();
    await writing;
    await closing;
    assert.equal(fault.closes, 1);
    assert.equal(fs.readFileSync(t.file, 'utf8'), 'hello', 'the write went to this file');
    assert.deepEqual(fault.violations, []);
  } finally {
    t.cleanup();
  }
});

test('OpenFile: a failed close is reported to every caller and never retried', async () => {
  const t = tmpFile();
  try {
    const fault = new FaultIo();
    fault.fail = (c) => (c.op === 'close' ? Object.assign(new Error('EIO: injected'), { code: 'EIO' }) : undefined);
    const f = await OpenFile.open(t.file, 'w', fault.io);
    await assert.rejects(f.close(), /EIO/);
    await assert.rejects(f.close(), /EIO/);
    assert.equal(fault.closes, 1);
  } finally {
    t.cleanup();
  }
});

test('OpenFile.closeSync: closes once (close() after it is a no-op), refuses while an operation is in flight, and nothing runs after it', async () => {
  const t = tmpFile();
  try {
    const fault = new FaultIo();
    const f = OpenFile.openSync(t.file, 'w', fault.io);
    f.writevSync([Buffer.from('ab'), Buffer.from('cd')]);
    let release!: () => void;
    fault.before = (c) => (c.op === 'fsync' ? new Promise<void>((r) => (release = r)) : undefined);
    const syncing = f.fsync();
    await new Promise((r) => setImmediate(r));
    assert.throws(() => f.closeSync(), /in flight/, 'no sync close under a pending fsync');
    assert.equal(f.closed, false);
    release();
    await syncing;
    f.closeSync();
    f.closeSync();
    await f.close();
    assert.equal(fault.closes, 1, 'one close in all');
    assert.throws(() => f.writevSync([Buffer.from('x')]), ClosedFileError);
    await assert.rejects(f.fsync(), ClosedFileError);
    assert.deepEqual(fault.violations, []);
    assert.equal(fs.readFileSync(t.file, 'utf8'), 'abcd');
  } finally {
    t.cleanup();
  }
});

test('OpenFile.closeSync: a failing close still releases the descriptor, once', async () => {
  const t = tmpFile();
  try {
    const fault = new FaultIo();
    fault.fail = (c) => (c.op === 'closeSync' ? errno('EIO', 'close') : undefined);
    const f = OpenFile.openSync(t.file, 'w', fault.io);
    assert.throws(() => f.closeSync(), /EIO/);
    await f.close();
    assert.equal(fault.closes, 1);
    assert.deepEqual([...fault.open.values()], []);
    assert.deepEqual(fault.violations, []);
  } finally {
    t.cleanup();
  }
});
