// Issue 11, break 10: a Maildir copy that fails part-way (disk full, the
// queued message unreadable) leaves nothing in the mailbox's tmp/, and a
// retry delivers it whole.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { MaildirTransport } from './maildir.ts';
import { FaultIo, errno } from '../../test/helpers/fault-io.ts';

const to = { domain: 'tern.test', localPart: 'alice', address: 'alice@tern.test' };
// 700 KiB in 4 KiB chunks: three 256 KiB write batches.
const chunks = Array.from({ length: 175 }, (_, i) => Buffer.alloc(4096, 0x41 + (i % 26)));

test('ENOSPC on the second write: tempfail, the partial copy is removed from tmp/ at once, the retry lands whole', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-maildir-'));
  try {
    const fault = new FaultIo();
    let writes = 0;
    fault.fail = (c) => (c.op === 'writev' && ++writes === 2 ? errno('ENOSPC', 'writev') : undefined);
    const t = new MaildirTransport({ root, hostname: 'mx.tern.test', fsync: true, io: fault.io });
    const msg = { id: 'Q1', receivedAt: 1_700_000_000_000, sender: 's@x.test', recovered: false, open: () => Readable.from(chunks) };
    const r = await t.deliverCopy(msg, 0, to);
    assert.equal(r.status, 'tempfail');
    assert.deepEqual([r.reply.code, r.reply.enhanced], [451, '4.3.0']);
    assert.match(r.reply.text, /ENOSPC/);
    const dir = path.join(root, 'tern.test', 'alice');
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), [], 'no partial copy in tmp/');
    assert.deepEqual(fs.readdirSync(path.join(dir, 'new')), []);
    assert.deepEqual(fault.violations, []);
    assert.deepEqual([...fault.open.values()], [], 'the copy was closed');
    const again = await t.deliverCopy(msg, 0, to);
    assert.equal(again.status, 'ok');
    const files = fs.readdirSync(path.join(dir, 'new'));
    assert.equal(files.length, 1);
    assert.ok(fs.readFileSync(path.join(dir, 'new', files[0]!)).subarray(-chunks.length * 4096).equals(Buffer.concat(chunks)));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a message that cannot be read part-way: tempfail and nothing left in tmp/', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-maildir-'));
  try {
    const t = new MaildirTransport({ root, hostname: 'mx.tern.test', fsync: false });
    const open = () =>
      Readable.from((async function* () {
        yield* chunks.slice(0, 100);
        throw errno('EIO', 'read');
      })());
    const r = await t.deliverCopy({ id: 'Q2', receivedAt: 1_700_000_000_000, sender: 's@x.test', recovered: false, open }, 0, to);
    assert.equal(r.status, 'tempfail');
    assert.deepEqual(fs.readdirSync(path.join(root, 'tern.test', 'alice', 'tmp')), []);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a small copy: opened, written, closed and renamed on the calling thread, only the fsyncs in the pool; ENOSPC on its write leaves tmp/ empty', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-maildir-'));
  try {
    const fault = new FaultIo();
    const t = new MaildirTransport({ root, hostname: 'mx.tern.test', fsync: true, io: fault.io });
    const small = [Buffer.from('Subject: hi\r\n\r\nbody\r\n')];
    const msg = { id: 'Q3', receivedAt: 1_700_000_000_000, sender: 's@x.test', recovered: false, open: () => Readable.from(small) };
    assert.equal((await t.deliverCopy(msg, 0, to)).status, 'ok');
    // The copy, then the directory's fsync (durable rename).
    assert.deepEqual(fault.calls.map((c) => c.op), ['openSync', 'writevSync', 'fsync', 'closeSync', 'renameSync', 'openSync', 'fsync', 'closeSync']);
    const dir = path.join(root, 'tern.test', 'alice');
    const [file] = fs.readdirSync(path.join(dir, 'new'));
    assert.equal(fs.readFileSync(path.join(dir, 'new', file!), 'utf8'), 'Return-Path: <s@x.test>\r\nDelivered-To: alice@tern.test\r\nSubject: hi\r\n\r\nbody\r\n');

    fault.fail = (c) => (c.op === 'writevSync' ? errno('ENOSPC', 'writev') : undefined);
    const r = await t.deliverCopy({ ...msg, id: 'Q4' }, 0, to);
    assert.equal(r.status, 'tempfail');
    assert.match(r.reply.text, /ENOSPC/);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), [], 'no partial copy in tmp/');
    assert.equal(fs.readdirSync(path.join(dir, 'new')).length, 1);
    assert.deepEqual(fault.violations, []);
    assert.deepEqual([...fault.open.values()], [], 'every descriptor closed');
    assert.equal(fault.closes, fault.opens);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
