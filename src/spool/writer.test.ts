// SpoolWriter under races and failures (issue 11, breaks 1 and 10): commit
// and abort never both act, every descriptor is closed exactly once, and a
// commit that fails at any step leaves nothing that could be delivered.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Spool, type SpoolWriter } from './spool.ts';
import type { Envelope, QueuedMessage } from './types.ts';
import { FaultIo, errno, type IoCall } from '../../test/helpers/fault-io.ts';
import { Intake } from '../intake/intake.ts';
import { silentLogger } from '../util/log.ts';
import type { InboundVerifier } from '../intake/authenticate.ts';
import type { InboundPolicy } from '../policy/inbound.ts';

/** Over the 256 KiB write batch: the message reaches its tmp file before commit. */
const BIG = 300 * 1024;

function setup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-writer-'));
  const fault = new FaultIo();
  const spool = new Spool({ dir, io: fault.io });
  spool.init();
  return { dir, fault, spool, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

const env = (spool: Spool): Envelope => ({ id: spool.newId(), sender: 's@x.test', receivedAt: Date.now(), smtputf8: false, recipients: [{ address: 'a@b.test', original: 'a@b.test' }] });

/** A writer whose message is already in its tmp file (the queue-file path, not the journal). */
async function bigWriter(spool: Spool, fault: FaultIo): Promise<{ w: SpoolWriter; body: Buffer }> {
  const w = spool.create(env(spool));
  const body = Buffer.alloc(BIG, 0x61);
  for (let off = 0; off < BIG; off += 64 * 1024) w.write(body.subarray(off, off + 64 * 1024));
  await waitUntil(() => fault.calls.some((c) => c.op === 'writev'));
  await new Promise((r) => setTimeout(r, 20)); // the first batch's write completes
  return { w, body };
}

async function waitUntil(fn: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !fn(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(fn(), 'condition reached');
}

function assertAllClosedOnce(fault: FaultIo): void {
  assert.deepEqual(fault.violations, [], 'no second close and no call on a closed descriptor');
  assert.deepEqual([...fault.open.values()], [], 'every descriptor opened was closed');
  assert.equal(fault.closes, fault.opens, 'exactly one close per open');
}

function queueFileBody(spool: Spool, msg: QueuedMessage): Buffer {
  return fs.readFileSync(spool.queuePath(msg.envelope.id)).subarray(0, msg.bodyLength);
}

/** The calls a clean commit of a big message makes, in order (a baseline run). */
async function commitCalls(): Promise<IoCall[]> {
  const t = setup();
  try {
    const { w } = await bigWriter(t.spool, t.fault);
    const from = t.fault.calls.length;
    await w.commit();
    return t.fault.calls.slice(from);
  } finally {
    t.cleanup();
  }
}

/** The commit's await points: its asynchronous calls (a synchronous one has no moment for an abort to come in). */
async function commitSteps(): Promise<IoCall[]> {
  return (await commitCalls()).filter((c) => !c.op.endsWith('Sync'));
}

test('the commit of a big message makes the calls this test suite steps through', async () => {
  const calls = await commitCalls();
  // write the rest, fsync, close, rename, then fsync queue/ (opened and closed on the calling thread, fsynced in the pool).
  assert.deepEqual(calls.map((c) => c.op), ['writev', 'fsync', 'close', 'rename', 'openSync', 'fsync', 'closeSync']);
  assert.deepEqual((await commitSteps()).map((c) => c.op), ['writev', 'fsync', 'close', 'rename', 'fsync']);
});

test('abort() at every await point of a commit waits for it: the message is committed whole and each descriptor closed once', async () => {
  const steps = await commitSteps();
  for (let k = 0; k < steps.length; k++) {
    const t = setup();
    try {
      const { w, body } = await bigWriter(t.spool, t.fault);
      let seen = 0;
      let aborted: Promise<void> | null = null;
      let abortDone = false;
      t.fault.before = async () => {
        if (seen++ !== k) return;
        // The client resets now, while this call is pending: give the abort every chance to act.
        aborted = w.abort().then(() => void (abortDone = true));
        await new Promise((r) => setTimeout(r, 10));
        assert.equal(abortDone, false, `step ${k}: abort() does not finish before the commit`);
      };
      const msg = await w.commit();
      await aborted;
      assert.ok(aborted, `step ${k}: abort() ran during the commit`);
      assert.deepEqual(queueFileBody(t.spool, msg), body, `step ${k}: the committed message is whole`);
      assert.deepEqual(fs.readdirSync(t.spool.tmpDir), [], `step ${k}: nothing left in tmp/`);
      assertAllClosedOnce(t.fault);
    } finally {
      t.cleanup();
    }
  }
});

test('abort() called right after commit() starts (real timing, no pauses) leaves the commit alone', async () => {
  for (let i = 0; i < 20; i++) {
    const t = setup();
    try {
      const { w, body } = await bigWriter(t.spool, t.fault);
      const committing = w.commit();
      const aborting = w.abort();
      const msg = await committing;
      await aborting;
      assert.deepEqual(queueFileBody(t.spool, msg), body);
      assert.deepEqual(t.spool.list(), [msg.envelope.id]);
      assertAllClosedOnce(t.fault);
    } finally {
      t.cleanup();
    }
  }
});

test('a small (journal) message: abort() during its commit waits, and the message stays committed', async () => {
  const t = setup();
  try {
    const w = t.spool.create(env(t.spool));
    w.write(Buffer.from('Subject: s\r\n\r\nsmall\r\n'));
    const committing = w.commit();
    await w.abort();
    const msg = await committing;
    assert.deepEqual(t.spool.list(), [msg.envelope.id]);
  } finally {
    await t.spool.journal.close();
    t.cleanup();
  }
});

test('commit() after abort() is refused and writes nothing', async () => {
  const t = setup();
  try {
    const { w } = await bigWriter(t.spool, t.fault);
    await w.abort();
    await assert.rejects(w.commit(), /commit after aborted/);
    assert.deepEqual(fs.readdirSync(t.spool.tmpDir), []);
    assert.deepEqual(fs.readdirSync(t.spool.queueDir), []);
    assertAllClosedOnce(t.fault);
  } finally {
    t.cleanup();
  }
});

test('a commit failing at any step removes everything it made: nothing in tmp/ or queue/, nothing recovered', async () => {
  const steps = await commitSteps();
  for (let k = 0; k < steps.length; k++) {
    const t = setup();
    try {
      const { w } = await bigWriter(t.spool, t.fault);
      let seen = 0;
      t.fault.fail = () => (seen++ === k ? errno('EIO', steps[k]!.op) : undefined);
      await assert.rejects(w.commit(), /EIO/, `step ${k} (${steps[k]!.op}) fails the commit`);
      await w.abort(); // what the session does next: nothing more to do
      assert.deepEqual(fs.readdirSync(t.spool.tmpDir), [], `step ${k}: tmp/ empty`);
      assert.deepEqual(fs.readdirSync(t.spool.queueDir), [], `step ${k} (${steps[k]!.op}): queue/ empty, so a restart delivers nothing`);
      const again = new Spool({ dir: t.dir });
      assert.deepEqual((await again.recover()).messages, [], `step ${k}: nothing recovered`);
      assertAllClosedOnce(t.fault);
    } finally {
      t.cleanup();
    }
  }
});

test('ENOSPC while the message streams in: its tmp file is removed at once, and the commit is refused', async () => {
  const t = setup();
  try {
    t.fault.fail = (c) => (c.op === 'writev' ? errno('ENOSPC', 'writev') : undefined);
    const w = t.spool.create(env(t.spool));
    const chunk = Buffer.alloc(64 * 1024, 0x62);
    for (let i = 0; i < 5; i++) w.write(chunk);
    await waitUntil(() => t.fault.calls.some((c) => c.op === 'unlink'));
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(fs.readdirSync(t.spool.tmpDir), [], 'no empty file left in tmp/ while the client still sends');
    // The rest of the message is still read (the dialogue stays in sync) but neither written nor kept.
    for (let i = 0; i < 20; i++) assert.equal(w.write(chunk), true);
    assert.equal(w.size, 25 * chunk.length);
    const writes = t.fault.calls.filter((c) => c.op === 'writev').length;
    await assert.rejects(w.commit(), /ENOSPC/);
    assert.equal(t.fault.calls.filter((c) => c.op === 'writev').length, writes, 'no write after the failure');
    assert.deepEqual(fs.readdirSync(t.spool.tmpDir), []);
    assert.deepEqual(fs.readdirSync(t.spool.queueDir), []);
    assertAllClosedOnce(t.fault);
  } finally {
    t.cleanup();
  }
});

test('ENOSPC on a state write leaves no state/*.json.tmp; on the move out of the journal, no file in tmp/ or queue/', async () => {
  const t = setup();
  try {
    const w = t.spool.create(env(t.spool));
    w.write(Buffer.from('Subject: s\r\n\r\nsmall\r\n'));
    const msg = await w.commit();
    const id = msg.envelope.id;
    // A journaled message moves to a queue file before its first state write.
    t.fault.fail = (c) => (c.op === 'writev' && c.path.startsWith(t.spool.tmpDir) ? errno('ENOSPC', 'writev') : undefined);
    await assert.rejects(t.spool.writeState(id, { ...msg.state, attempts: 1 }), /ENOSPC/);
    assert.deepEqual(fs.readdirSync(t.spool.tmpDir), [], 'the partial copy is gone');
    assert.deepEqual(fs.readdirSync(t.spool.queueDir), []);
    const chunks: Buffer[] = [];
    for await (const c of t.spool.openMessage(msg)) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), 'Subject: s\r\n\r\nsmall\r\n', 'still readable from the journal');
    // Now the move succeeds and the state write fails.
    t.fault.fail = (c) => (c.op === 'writev' && c.path.endsWith('.json.tmp') ? errno('ENOSPC', 'writev') : undefined);
    await assert.rejects(t.spool.writeState(id, { ...msg.state, attempts: 1 }), /ENOSPC/);
    assert.deepEqual(fs.readdirSync(t.spool.stateDir), [], 'no .json.tmp left in state/');
    assert.deepEqual(fs.readdirSync(t.spool.queueDir), [id]);
    t.fault.fail = null;
    await t.spool.writeState(id, { ...msg.state, attempts: 2 });
    assert.deepEqual(fs.readdirSync(t.spool.stateDir), [`${id}.json`]);
    assert.deepEqual(t.fault.violations, []);
  } finally {
    await t.spool.journal.close();
    t.cleanup();
  }
});

test('intake: abort() while IncomingMessage.commit waits for the inbound checks waits for the commit; the message is queued once', async () => {
  const t = setup();
  try {
    let finishChecks: (o: unknown) => void = () => {};
    const verification = {
      write() {},
      abort() {},
      finish: () => new Promise((r) => (finishChecks = r)),
    };
    const inbound = {
      verifier: { begin: () => verification } as unknown as InboundVerifier,
      policy: { decide: () => ({ action: 'accept', quarantine: [], reasons: [] }) } as unknown as InboundPolicy,
    };
    const queued: QueuedMessage[] = [];
    const intake = new Intake({ spool: t.spool, hostname: 'mx.tern.test', onQueued: (m) => queued.push(m), log: silentLogger, maxReceived: 30, inbound });
    const incoming = intake.begin({ sender: 's@x.test', recipients: [{ address: 'a@b.test', original: 'a@b.test' }], params: { smtputf8: false }, trace: { ip: '127.0.0.1', protocol: 'ESMTP' }, authenticate: true });
    incoming.write(Buffer.from('Subject: x\r\n\r\n'));
    const body = Buffer.alloc(BIG, 0x63);
    incoming.write(body);
    await new Promise((r) => setTimeout(r, 20));
    const committing = incoming.commit(true);
    // The client resets while SPF/DKIM/DMARC still run.
    let abortDone = false;
    const aborting = incoming.abort().then(() => void (abortDone = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(abortDone, false, 'abort() waits for the commit');
    finishChecks({ header: 'Authentication-Results: mx.tern.test; none\r\n', spf: { result: 'none' }, dkim: [], arc: 'none', dmarc: null, iprev: { result: 'none', names: [] } });
    const msg = await committing;
    await aborting;
    assert.equal(queued.length, 1);
    assert.deepEqual(t.spool.list(), [msg.envelope.id]);
    assert.ok(fs.readFileSync(t.spool.queuePath(msg.envelope.id)).includes(body), 'whole');
    await assert.rejects(incoming.commit(true), /commit after/);
    assertAllClosedOnce(t.fault);
  } finally {
    t.cleanup();
  }
});
