// Start-up recovery in steps (issue 12, item 5): `tern serve` lists the
// spool (beginRecovery), starts its listeners, and reads the queue files
// afterwards. Mail accepted meanwhile must be neither handed out again by
// the recovery nor touched by it, and every old message comes out once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Spool, initialState, RECOVERY_BATCH } from './spool.ts';
import type { Envelope, QueuedMessage } from './types.ts';

function open(dir: string): Spool {
  const spool = new Spool({ dir, fsync: false });
  spool.init();
  return spool;
}

const envelope = (spool: Spool, recipients = 1): Envelope => ({
  id: spool.newId(),
  sender: 's@x.test',
  receivedAt: Date.now(),
  smtputf8: false,
  recipients: Array.from({ length: recipients }, (_, i) => ({ address: `r${i}@later.test`, original: `r${i}@later.test` })),
});

/** A small message (journaled), then deferred once: moved to a queue file with a state file, as a 451 does. */
async function deferred(spool: Spool, recipients = 1): Promise<QueuedMessage> {
  const w = spool.create(envelope(spool, recipients));
  w.write(Buffer.from('Subject: later\r\n\r\nbody\r\n'));
  const msg = await w.commit();
  msg.state.attempts = 1;
  await spool.writeState(msg.envelope.id, msg.state);
  return msg;
}

async function firstAttempt(spool: Spool): Promise<QueuedMessage> {
  const w = spool.create(envelope(spool));
  w.write(Buffer.from('Subject: new\r\n\r\nbody\r\n'));
  return w.commit();
}

test('mail accepted during recovery is not handed out by it nor touched by it; every old message comes out once', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-recovery-'));
  try {
    const before = open(dir);
    const old = new Set<string>();
    const n = 2 * RECOVERY_BATCH + 17;
    for (let i = 0; i < n; i++) old.add((await deferred(before)).envelope.id);
    // One envelope too large for the first read from the end of its file (8 KiB).
    const wide = await deferred(before, 400);
    old.add(wide.envelope.id);
    const journaled = new Set<string>();
    for (let i = 0; i < 5; i++) journaled.add((await firstAttempt(before)).envelope.id);
    await before.journal.close();
    // Leftovers of a crash: a half-written message, a state file whose message is gone, a half-written state file.
    fs.writeFileSync(path.join(before.tmpDir, 'PARTIAL'), 'half');
    fs.writeFileSync(path.join(before.stateDir, 'GONE.json'), JSON.stringify(initialState(envelope(before))));
    fs.writeFileSync(path.join(before.stateDir, `${wide.envelope.id}.json.tmp`), '{');

    // The restart.
    const spool = open(dir);
    const recovery = spool.beginRecovery();
    assert.equal(recovery.discarded, 1);
    assert.deepEqual(fs.readdirSync(spool.tmpDir), []);
    assert.deepEqual(new Set(recovery.journaled.map((m) => m.envelope.id)), journaled);
    assert.equal(recovery.files, n + 1);
    assert.equal(recovery.remaining, n + 1);
    assert.deepEqual(fs.readdirSync(spool.stateDir).sort(), [...old].map((id) => `${id}.json`).sort(), 'stale state files went before anything new could exist');

    // The listeners are up: new mail, one of it deferred already, one of the journaled ones too.
    const fresh = [await deferred(spool), await firstAttempt(spool)];
    const movedJournaled = recovery.journaled[0]!;
    movedJournaled.state.attempts = 1;
    await spool.writeState(movedJournaled.envelope.id, movedJournaled.state);

    const loaded: QueuedMessage[] = [];
    await recovery.load((m) => loaded.push(m), () => false);
    assert.equal(recovery.remaining, 0);
    assert.equal(loaded.length, old.size, 'each old queue file once');
    assert.deepEqual(new Set(loaded.map((m) => m.envelope.id)), old);
    for (const m of loaded) {
      assert.equal(m.recovered, true);
      assert.equal(m.state.attempts, 1, 'with its state');
    }
    assert.equal(loaded.find((m) => m.envelope.id === wide.envelope.id)!.envelope.recipients.length, 400);
    assert.ok(fs.existsSync(spool.queuePath(fresh[0]!.envelope.id)), "a new deferred message's queue file is left alone");
    assert.ok(fs.existsSync(path.join(spool.stateDir, `${fresh[0]!.envelope.id}.json`)), "a new message's state file is kept");
    assert.ok(fs.existsSync(spool.queuePath(movedJournaled.envelope.id)), 'a recovered journal message moved to its file meanwhile');

    // And the next start sees exactly the old, the fresh and the journaled mail.
    await spool.journal.close();
    const all = await open(dir).recover();
    assert.deepEqual(new Set(all.messages.map((m) => m.envelope.id)), new Set([...old, ...journaled, ...fresh.map((m) => m.envelope.id)]));
    assert.equal(all.messages.length, old.size + journaled.size + fresh.length, 'nothing twice');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a corrupt queue file in a batch is set aside with its state; the others load; load() stops when told', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-recovery-'));
  try {
    const before = open(dir);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await deferred(before)).envelope.id);
    await before.journal.close();
    fs.writeFileSync(before.queuePath(ids[3]!), 'not a queue file');

    const spool = open(dir);
    const recovery = spool.beginRecovery();
    const first = recovery.next(5);
    assert.deepEqual(first.map((m) => m.envelope.id), ids.slice(0, 5).filter((_, i) => i !== 3), 'oldest first, the bad one left out');
    assert.deepEqual(recovery.corrupt, [ids[3]]);
    assert.ok(fs.existsSync(path.join(dir, 'corrupt', ids[3]!)), 'set aside, never deleted');
    assert.ok(!fs.existsSync(path.join(spool.stateDir, `${ids[3]}.json`)));
    let calls = 0;
    await recovery.load(() => calls++, () => true);
    assert.equal(calls, 0, 'stopped before the next batch');
    assert.equal(recovery.remaining, 5);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
