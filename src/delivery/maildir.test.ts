import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { MaildirTransport } from './maildir.ts';

test('a copy lands in new/ whole (many chunks, several writes), with Return-Path and Delivered-To first; a repeat replaces it', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-maildir-'));
  try {
    const t = new MaildirTransport({ root, hostname: 'mx.tern.test', fsync: true });
    // 700 KiB in 4 KiB chunks: more than one 256 KiB write batch.
    const chunks = Array.from({ length: 175 }, (_, i) => Buffer.alloc(4096, 0x41 + (i % 26)));
    const msg = { id: 'Q1', receivedAt: 1_700_000_000_000, sender: 's@x.test', recovered: false, open: () => Readable.from(chunks) };
    const to = { domain: 'tern.test', localPart: 'alice', address: 'alice@tern.test' };
    const r = await t.deliverCopy(msg, 0, to);
    assert.equal(r.status, 'ok');
    const dir = path.join(root, 'tern.test', 'alice');
    const files = fs.readdirSync(path.join(dir, 'new'));
    assert.equal(files.length, 1);
    const data = fs.readFileSync(path.join(dir, 'new', files[0]!));
    const head = 'Return-Path: <s@x.test>\r\nDelivered-To: alice@tern.test\r\n';
    assert.equal(data.subarray(0, head.length).toString(), head);
    assert.ok(data.subarray(head.length).equals(Buffer.concat(chunks)), 'every byte, in order');
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), [], 'nothing left in tmp/');
    await t.deliverCopy({ ...msg, recovered: true }, 0, to);
    assert.equal(fs.readdirSync(path.join(dir, 'new')).length, 1, 'same name: replaced, not added');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
