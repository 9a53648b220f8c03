import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Spool, initialState } from './spool.ts';
import type { Envelope } from './types.ts';

function setup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-spool-'));
  const spool = new Spool({ dir });
  spool.init();
  return { dir, spool, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

const env = (spool: Spool): Envelope => ({ id: spool.newId(), sender: 's@x.test', receivedAt: Date.now(), smtputf8: false, recipients: [{ address: 'a@b.test', original: 'a@b.test' }] });

test('commit: the file holds the envelope and the message; recovery reads both and drops half-written files', async () => {
  const t = setup();
  try {
    const w = t.spool.create(env(t.spool));
    w.write(Buffer.from('Subject: a\r\n\r\n'));
    w.write(Buffer.from('body\r\n'));
    const msg = await w.commit();
    const half = t.spool.create(env(t.spool));
    half.write(Buffer.alloc(300 * 1024, 0x61)); // big enough to reach the disk before commit
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(fs.readdirSync(t.spool.tmpDir).length, 1, 'an uncommitted file exists in tmp/');
    const { messages, discarded } = await t.spool.recover();
    assert.equal(discarded, 1);
    assert.equal(messages.length, 1);
    assert.deepEqual(messages[0]!.envelope, msg.envelope);
    assert.equal(messages[0]!.size, 'Subject: a\r\n\r\nbody\r\n'.length);
    const chunks: Buffer[] = [];
    for await (const c of t.spool.openMessage(messages[0]!)) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), 'Subject: a\r\n\r\nbody\r\n');
  } finally {
    t.cleanup();
  }
});

test('state writes for one message are serialized: concurrent writes all succeed and the last one wins', async () => {
  const t = setup();
  try {
    const w = t.spool.create(env(t.spool));
    const msg = await w.commit();
    const id = msg.envelope.id;
    const states = [1, 2, 3, 4].map((n) => ({ ...initialState(msg.envelope), attempts: n }));
    await Promise.all(states.map((s) => t.spool.writeState(id, s)));
    assert.equal(t.spool.readState(id)!.attempts, 4);
    assert.deepEqual(fs.readdirSync(t.spool.stateDir), [`${id}.json`]);
  } finally {
    t.cleanup();
  }
});

test('an unreadable queue file is set aside, never deleted', async () => {
  const t = setup();
  try {
    fs.writeFileSync(path.join(t.spool.queueDir, 'GARBAGE'), 'not a queue file');
    const { messages, corrupt } = await t.spool.recover();
    assert.equal(messages.length, 0);
    assert.deepEqual(corrupt, ['GARBAGE']);
    assert.ok(fs.existsSync(path.join(t.dir, 'corrupt', 'GARBAGE')));
  } finally {
    t.cleanup();
  }
});

test('fields known only at commit (e.g. a DKIM signature) are delivered before the stored bytes, also after recovery', async () => {
  const t = setup();
  try {
    const w = t.spool.create(env(t.spool));
    w.write(Buffer.from('Subject: p\r\n\r\nbody\r\n'));
    const msg = await w.commit('X-Added: yes\r\n');
    const read = async (m: typeof msg) => {
      const chunks: Buffer[] = [];
      for await (const c of t.spool.openMessage(m)) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString();
    };
    assert.equal(await read(msg), 'X-Added: yes\r\nSubject: p\r\n\r\nbody\r\n');
    assert.equal(msg.size, 'X-Added: yes\r\nSubject: p\r\n\r\nbody\r\n'.length);
    const { messages } = await t.spool.recover();
    assert.equal(await read(messages[0]!), 'X-Added: yes\r\nSubject: p\r\n\r\nbody\r\n');
    assert.equal(messages[0]!.size, msg.size);
  } finally {
    t.cleanup();
  }
});
