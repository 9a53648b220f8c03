// Durability: a 250 after DATA means the message survives kill -9.
// A bounded load of numbered messages runs against Tern in a child process;
// the process is killed mid-run, restarted on the same data, and every
// message that got a 250 must then be in the Maildir exactly once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { queuedIds } from './smtp-kit.ts';
import { RawClient, mailbox, spawnServer, waitFor, writeConfig } from '../helpers/server.ts';

const MESSAGES = 400;
const SESSIONS = 8;
const KILL_AFTER_ACKS = 120;

test('no acknowledged message is lost or duplicated across kill -9', { timeout: 90_000 }, async () => {
  const { file, dataDir, dir } = writeConfig();
  const first = await spawnServer(file);
  const acked = new Set<number>();
  let next = 0;
  let killed = false;
  /** Failures before the kill: after it, a dead connection is expected. */
  const errors: string[] = [];

  async function worker(): Promise<void> {
    let c: RawClient;
    try {
      c = await RawClient.connect(first.ports.smtp!);
      await c.reply();
      await c.cmd('EHLO load.test');
    } catch (e) {
      if (!killed) errors.push(`connect: ${String(e)}`);
      return;
    }
    try {
      while (next < MESSAGES && !killed) {
        const n = next++;
        // Pipelined: MAIL, RCPT, DATA in one write, then the content.
        c.send('MAIL FROM:<load@load.test>\r\nRCPT TO:<alice@tern.test>\r\nDATA\r\n');
        assert.match(await c.reply(), /^250/);
        assert.match(await c.reply(), /^250/);
        assert.match(await c.reply(), /^354/);
        c.send(`Subject: msg-${n}\r\nX-Seq: ${n}\r\n\r\nbody of ${n}\r\n${'x'.repeat(900)}\r\n.\r\n`);
        const r = await c.reply();
        if (r.startsWith('250 ')) acked.add(n);
        if (acked.size >= KILL_AFTER_ACKS && !killed) {
          killed = true;
          first.child.kill('SIGKILL');
        }
      }
    } catch (e) {
      // After the kill the connection dies with the server: the message in flight was not acknowledged.
      if (!killed) errors.push(String(e));
    } finally {
      c.close();
    }
  }
  await Promise.all(Array.from({ length: SESSIONS }, worker));
  assert.deepEqual(errors, [], 'no client error before the kill');
  assert.ok(killed, 'the server was killed mid-run');
  await new Promise((r) => (first.child.exitCode !== null || first.child.signalCode ? r(null) : first.child.once('exit', r)));
  assert.ok(acked.size >= KILL_AFTER_ACKS);

  const second = await spawnServer(file);
  try {
    const seqOf = (f: string): number => Number(/^X-Seq: (\d+)/m.exec(fs.readFileSync(f, 'latin1'))![1]);
    await waitFor(() => {
      const seen = new Set(mailbox(dataDir, 'tern.test', 'alice').map(seqOf));
      return [...acked].every((n) => seen.has(n));
    }, 30_000, 'every acknowledged message to be delivered');
    // Let recovery finish everything it found (unacknowledged messages it
    // committed included), then count. These small messages are journal
    // records, not queue files: spool/queue/ is empty all along.
    await waitFor(() => queuedIds(dataDir).length === 0, 30_000, 'the queue to drain');
    const counts = new Map<number, number>();
    for (const f of mailbox(dataDir, 'tern.test', 'alice')) counts.set(seqOf(f), (counts.get(seqOf(f)) ?? 0) + 1);
    for (const n of acked) assert.equal(counts.get(n), 1, `message ${n} delivered exactly once`);
    for (const [n, k] of counts) assert.equal(k, 1, `message ${n} (maybe unacknowledged) is not duplicated`);
    assert.deepEqual(fs.readdirSync(`${dataDir}/spool/tmp`), [], 'half-written files were discarded');
  } finally {
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
