import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Journal, readJournal } from './journal.ts';
import { ClosedFileError, p, type FsIo } from '../util/fsio.ts';
import { FaultIo } from '../../test/helpers/fault-io.ts';
import { Spool } from './spool.ts';
import type { Envelope, QueuedMessage } from './types.ts';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tern-journal-'));
}

const json = (id: string) => Buffer.from(JSON.stringify({ id }));
const segments = (dir: string) => fs.readdirSync(dir).filter((n) => n.endsWith('.seg'));

test('concurrent appends share batches: one segment, records in order, each readable at its location', async () => {
  const dir = tmp();
  try {
    const j = new Journal(dir, true);
    j.init();
    const bodies = Array.from({ length: 50 }, (_, i) => [Buffer.from(`Subject: ${i}\r\n\r\n`), Buffer.from(`body ${i}\r\n`)]);
    const locs = await Promise.all(bodies.map((b, i) => j.append(`M${i}`, json(`M${i}`), b, b[0]!.length + b[1]!.length)));
    assert.equal(segments(dir).length, 1);
    // Group commit: the first append is written alone; the 49 that queued
    // meanwhile share the next batch (one writev, one fdatasync).
    assert.deepEqual(j.stats, { batches: 2, records: 50 });
    for (let i = 0; i < locs.length; i++) {
      const got = await j.read(locs[i]!, bodies[i]![0]!.length + bodies[i]![1]!.length);
      assert.equal(got.toString(), `Subject: ${i}\r\n\r\nbody ${i}\r\n`);
    }
    // Later offsets for later appends: the file is in commit order.
    assert.ok(locs.every((l, i) => i === 0 || l.offset > locs[i - 1]!.offset));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('recovery returns every record not marked done, and a sealed segment goes once all are finished', async () => {
  const dir = tmp();
  try {
    const j = new Journal(dir, true);
    j.init();
    const a = await j.append('A', json('A'), [Buffer.from('aaa')], 3);
    await j.append('B', json('B'), [Buffer.from('bbbb')], 4);
    j.release('A', a);
    await new Promise((r) => setTimeout(r, 50)); // the .done append happens on the next turn
    await j.close();
    // A new process: A is done, B is not.
    const j2 = new Journal(dir, true);
    const { records, corrupt, torn } = j2.recover(path.join(dir, 'corrupt'));
    assert.deepEqual(corrupt, []);
    assert.equal(torn, 0);
    assert.deepEqual(records.map((r) => JSON.parse(r.envelopeJson.toString()).id), ['B']);
    assert.equal((await j2.read(records[0]!.location, records[0]!.bodyLength)).toString(), 'bbbb');
    j2.release('B', records[0]!.location);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(fs.readdirSync(dir), [], 'segment and its .done deleted');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a torn tail (never acknowledged) is ignored; a record failing its CRC is skipped and the segment copied aside', async () => {
  const dir = tmp();
  try {
    const j = new Journal(dir, true);
    j.init();
    await j.append('A', json('A'), [Buffer.from('first')], 5);
    await j.append('B', json('B'), [Buffer.from('second')], 6);
    await j.append('C', json('C'), [Buffer.from('third')], 5);
    await j.close();
    const seg = path.join(dir, segments(dir)[0]!);
    // Torn tail: half a record header and some bytes.
    fs.appendFileSync(seg, 'TJ1 40 9');
    let r = new Journal(dir, true).recover(path.join(dir, 'corrupt'));
    assert.deepEqual(r.records.map((x) => JSON.parse(x.envelopeJson.toString()).id), ['A', 'B', 'C']);
    assert.equal(r.torn, 1);
    assert.deepEqual(r.corrupt, []);
    await r.records[0]!.location.segment.file.close();
    // Flip a byte inside B's message: B fails its CRC, A and C still come back.
    const data = fs.readFileSync(seg);
    const at = data.indexOf('second');
    data[at] = 0x53;
    fs.writeFileSync(seg, data);
    r = new Journal(dir, true).recover(path.join(dir, 'corrupt'));
    assert.deepEqual(r.records.map((x) => JSON.parse(x.envelopeJson.toString()).id), ['A', 'C']);
    assert.equal(r.corrupt.length, 1);
    assert.ok(fs.existsSync(path.join(dir, 'corrupt', r.corrupt[0]!)), 'a copy kept for the admin');
    await r.records[0]!.location.segment.file.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('segments roll over past their size limit and full ones are deleted when their messages finish', async () => {
  const dir = tmp();
  try {
    const j = new Journal(dir, false, 1000);
    j.init();
    const body = Buffer.alloc(1200, 0x61);
    const a = await j.append('A', json('A'), [body], 1200);
    const b = await j.append('B', json('B'), [body], 1200);
    assert.equal(segments(dir).length, 2, 'a second segment after the first passed 1000 bytes');
    j.release('A', a);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(segments(dir).length, 1, 'the full, finished segment is gone');
    j.release('B', b);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(segments(dir).length, 0, "B's segment was full too");
    const c = await j.append('C', json('C'), [Buffer.from('small')], 5);
    j.release('C', c);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(segments(dir).length, 1, 'the active segment stays for the next appends');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('spool: small messages go to the journal, large ones to their own file; both recover and remove cleanly', async () => {
  const dir = tmp();
  try {
    const spool = new Spool({ dir });
    spool.init();
    const env = (): Envelope => ({ id: spool.newId(), sender: 's@x.test', receivedAt: Date.now(), smtputf8: false, recipients: [{ address: 'a@b.test', original: 'a@b.test' }] });
    const small = spool.create(env());
    small.write(Buffer.from('Subject: small\r\n\r\nhi\r\n'));
    const s = await small.commit('X-Top: 1\r\n');
    const big = spool.create(env());
    big.write(Buffer.from('Subject: big\r\n\r\n'));
    big.write(Buffer.alloc(600 * 1024, 0x62));
    const b = await big.commit();
    assert.deepEqual(fs.readdirSync(spool.queueDir), [b.envelope.id], 'only the large one has a queue file');
    assert.deepEqual(new Set(spool.list()), new Set([s.envelope.id, b.envelope.id]));
    const read = async (m: typeof s) => {
      const chunks: Buffer[] = [];
      for await (const c of spool.openMessage(m)) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    };
    assert.equal((await read(s)).toString(), 'X-Top: 1\r\nSubject: small\r\n\r\nhi\r\n');
    const again = new Spool({ dir });
    again.init();
    const { messages } = await again.recover();
    assert.deepEqual(messages.map((m) => m.envelope.id).sort(), [s.envelope.id, b.envelope.id].sort());
    const rs = messages.find((m) => m.envelope.id === s.envelope.id)!;
    assert.equal((await (async () => {
      const chunks: Buffer[] = [];
      for await (const c of again.openMessage(rs)) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString();
    })()), 'X-Top: 1\r\nSubject: small\r\n\r\nhi\r\n', 'read back from disk after recovery');
    for (const m of messages) await again.remove(m.envelope.id);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(again.list(), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a failed write rejects its batch, seals the segment and the next append goes to a new one', async () => {
  const dir = tmp();
  try {
    let failNext = false;
    const io: FsIo = {
      ...p,
      writev: (fd, bufs) => (failNext ? ((failNext = false), Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }))) : p.writev(fd, bufs)),
    };
    const j = new Journal(dir, true, undefined, io);
    j.init();
    const a = await j.append('A', json('A'), [Buffer.from('aaa')], 3);
    failNext = true;
    await assert.rejects(j.append('B', json('B'), [Buffer.from('bbb')], 3), /ENOSPC/);
    const c = await j.append('C', json('C'), [Buffer.from('ccc')], 3);
    assert.notEqual(c.segment, a.segment, 'a fresh segment after the failure');
    assert.equal(segments(dir).length, 2);
    const { records } = new Journal(dir, true).recover(path.join(dir, 'corrupt'));
    assert.deepEqual(records.map((r) => JSON.parse(r.envelopeJson.toString()).id), ['A', 'C'], 'B was refused: never recovered');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('spool: a journaled message that gets delivery state moves to a queue file of its own, and its journal record is released', async () => {
  const dir = tmp();
  try {
    const spool = openSpool(dir);
    const msg = await commitSmall(spool, 'Subject: deferred\r\n\r\nbody\r\n', 'X-Top: 1\r\n');
    const id = msg.envelope.id;
    assert.deepEqual(fs.readdirSync(spool.queueDir), []);
    await spool.writeState(id, { ...msg.state, attempts: 1, lastReply: [{ code: 451, enhanced: '4.4.1', text: 'try later' }] });
    assert.deepEqual(fs.readdirSync(spool.queueDir), [id], 'now a queue file');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(readJournalIds(path.join(dir, 'journal')).includes(id), false, 'journal record marked done');
    const chunks: Buffer[] = [];
    for await (const c of spool.openMessage(msg)) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), 'X-Top: 1\r\nSubject: deferred\r\n\r\nbody\r\n', 'read from the file now');
    const { messages } = await openSpool(dir).recover();
    assert.deepEqual(messages.map((m) => m.envelope.id), [id], 'recovered once');
    assert.equal(messages[0]!.state.attempts, 1);
    assert.equal(messages[0]!.envelope.prepend, 'X-Top: 1\r\n');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('spool: after a crash between the move and the done mark, the queue file wins and the record is dropped', async () => {
  const dir = tmp();
  try {
    const spool = openSpool(dir);
    const id = (await commitSmall(spool, 'Subject: twice\r\n\r\nbody\r\n')).envelope.id;
    // What #moveToFile writes, without the done mark that follows it.
    const rec = readJournal(path.join(dir, 'journal')).find((r) => r.id === id)!;
    fs.writeFileSync(path.join(spool.queueDir, id), Buffer.concat([rec.message, rec.envelopeJson, Buffer.from(`\nTERN2 ${rec.message.length} ${rec.envelopeJson.length}\n`)]));
    const { messages } = await openSpool(dir).recover();
    assert.deepEqual(messages.map((m) => m.envelope.id), [id], 'one copy, not two');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(readJournalIds(path.join(dir, 'journal')).includes(id), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function readJournalIds(dir: string): string[] {
  return readJournal(dir).map((r) => r.id);
}

function openSpool(dir: string): Spool {
  const spool = new Spool({ dir });
  spool.init();
  return spool;
}

/** A small (journaled) message with one recipient. */
function commitSmall(spool: Spool, text: string, prepend?: string): Promise<QueuedMessage> {
  const w = spool.create({ id: spool.newId(), sender: 's@x.test', receivedAt: Date.now(), smtputf8: false, recipients: [{ address: 'a@b.test', original: 'a@b.test' }] });
  w.write(Buffer.from(text));
  return w.commit(prepend);
}

test('many concurrent appends over rolling segments: recovery returns exactly the unfinished ones, each once', async () => {
  const dir = tmp();
  try {
    const j = new Journal(dir, false, 4096);
    j.init();
    const ids = Array.from({ length: 600 }, (_, i) => `M${String(i).padStart(4, '0')}`);
    const locs = new Map<string, Awaited<ReturnType<Journal['append']>>>();
    // Waves of 50 commits in flight at once, as concurrent sessions would make them.
    for (let w = 0; w < ids.length; w += 50) {
      const wave = ids.slice(w, w + 50);
      const got = await Promise.all(wave.map((id) => j.append(id, json(id), [Buffer.from(`Subject: ${id}\r\n\r\n`), Buffer.alloc(40 + (w % 7) * 30, 0x62)], `Subject: ${id}\r\n\r\n`.length + 40 + (w % 7) * 30)));
      wave.forEach((id, k) => locs.set(id, got[k]!));
    }
    assert.ok(segments(dir).length > 5, 'rolled over many times');
    const finished = new Set(ids.filter((_, i) => i % 3 !== 1));
    for (const id of finished) j.release(id, locs.get(id)!);
    await new Promise((r) => setTimeout(r, 50));
    await j.close();
    const r = new Journal(dir, false, 4096).recover(path.join(dir, 'corrupt'));
    const back = r.records.map((x) => JSON.parse(x.envelopeJson.toString()).id as string);
    assert.deepEqual(back, ids.filter((id) => !finished.has(id)), 'the unfinished ones, in order, once each');
    assert.deepEqual(r.corrupt, []);
    assert.equal(r.torn, 0);
    for (const x of r.records) {
      const id = JSON.parse(x.envelopeJson.toString()).id as string;
      const body = fs.readFileSync(x.location.segment.path).subarray(x.location.offset, x.location.offset + x.bodyLength);
      assert.ok(body.toString('latin1').startsWith(`Subject: ${id}\r\n`), `${id}: its own bytes`);
    }
    const live = new Set(r.records.map((x) => x.location.segment.name));
    assert.equal(segments(dir).length, live.size, 'segments with nothing left were deleted');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a segment deleted while a record is being read closes only after the read; a read after that fails without touching the old descriptor', async () => {
  const dir = tmp();
  try {
    const fault = new FaultIo();
    const j = new Journal(dir, true, undefined, fault.io);
    j.init();
    const a = await j.append('A', json('A'), [Buffer.from('aaaa')], 4);
    let release: () => void = () => {};
    fault.before = (c) => (c.op === 'read' ? new Promise<void>((r) => (release = r)) : undefined);
    const reading = j.read(a, 4);
    await j.close(); // seals the segment
    j.release('A', a); // its last record is finished: the segment is deleted
    await new Promise((r) => setTimeout(r, 50));
    const segCloses = () => fault.calls.filter((c) => c.op === 'close' && c.path.endsWith('.seg')).length;
    assert.equal(segCloses(), 0, 'not closed under the pending read');
    release();
    assert.equal((await reading).toString(), 'aaaa');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(segCloses(), 1, 'closed once, after the read');
    assert.deepEqual(segments(dir), []);
    await assert.rejects(j.read(a, 4), ClosedFileError);
    assert.deepEqual(fault.violations, []);
    assert.deepEqual([...fault.open.values()], [], 'the segment and its .done are closed');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
