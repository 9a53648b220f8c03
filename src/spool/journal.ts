// The queue journal: small messages are appended to a shared segment file
// and made durable by one fdatasync per batch, instead of a file, an fsync
// and a directory fsync each. Every commit that arrives while a batch is
// being written and synced waits for the next batch (group commit), so the
// cost per message falls as concurrency rises, and no commit is ever told
// "durable" before the fdatasync covering its bytes has returned.
//
// <spool>/journal/<name>.seg is a sequence of records:
//
//   "TJ1 <json length> <message length> <crc32 hex>\n" <envelope JSON> <message>
//
// The CRC covers the JSON and the message, so a record torn by a power
// failure (written but never synced, hence never acknowledged) is told apart
// from a good one. <name>.done lists the ids of finished messages, one per
// line; it is appended to without fsync, like Postfix's unlink of a
// delivered queue file: a crash can at worst repeat a delivery, never lose
// one. A segment is deleted (with its .done) once it is no longer the one
// being appended to and every message in it is finished.

import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { DirSync, OpenFile, p, type FsIo } from '../util/fsio.ts';

/** Start a new segment past this size, so finished ones can be deleted. */
const SEGMENT_MAX = 32 * 1024 * 1024;
const MAGIC = 'TJ1 ';
/** A record header is "TJ1 " + two numbers + 8 hex digits: well under this. */
const HEADER_MAX = 64;

export class Segment {
  readonly name: string;
  readonly path: string;
  /**
   * The segment file, owned here. Reads of its records may still be in
   * flight when it is deleted: OpenFile makes them finish first, and any
   * read after that fails instead of reading whatever file reused the
   * descriptor number.
   */
  readonly file: OpenFile;
  /** Bytes written (and, once a batch is synced, durable). */
  size: number;
  /** Records not yet finished. */
  live = 0;
  /** No more appends: deleted once live reaches 0. */
  sealed = false;
  /** <name>.done, opened on the first finished record. */
  doneFile: OpenFile | null = null;
  /** Set once deletion starts: nothing is appended or opened for it any more. */
  deleting = false;
  /** Serializes appends to .done and the final deletion. */
  doneChain: Promise<void> = Promise.resolve();
  doneQueue: string[] = [];

  constructor(name: string, path: string, file: OpenFile, size: number) {
    this.name = name;
    this.path = path;
    this.file = file;
    this.size = size;
  }
}

export interface JournalLocation {
  segment: Segment;
  /** Offset of the first message byte in the segment. */
  offset: number;
}

export interface JournalRecord {
  envelopeJson: Buffer;
  location: JournalLocation;
  bodyLength: number;
}

interface Pending {
  id: string;
  header: Buffer;
  json: Buffer;
  chunks: Buffer[];
  size: number;
  resolve: (loc: JournalLocation) => void;
  reject: (e: unknown) => void;
}

export class Journal {
  readonly dir: string;
  readonly #fsync: boolean;
  readonly #segmentMax: number;
  readonly #dirSync: DirSync;
  readonly #io: FsIo;
  #active: Segment | null = null;
  #queue: Pending[] = [];
  /** The append loop while it runs (it stops when the queue is empty). */
  #running: Promise<void> | null = null;
  #seq = 0;
  #doneScheduled = false;
  /** Since start: batches written (one fdatasync each) and the records in them. */
  readonly stats = { batches: 0, records: 0 };
  readonly #doneSegments = new Set<Segment>();

  constructor(dir: string, fsync: boolean, segmentMax = SEGMENT_MAX, io: FsIo = p) {
    this.dir = dir;
    this.#fsync = fsync;
    this.#segmentMax = segmentMax;
    this.#io = io;
    this.#dirSync = new DirSync(dir, fsync, io);
  }

  init(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Append one message; resolves once it is on disk and synced. `chunks`
   * are written as they are (never copied) and must not change afterwards.
   */
  append(id: string, json: Buffer, chunks: Buffer[], size: number): Promise<JournalLocation> {
    let crc = zlib.crc32(json);
    for (const c of chunks) crc = zlib.crc32(c, crc);
    const header = Buffer.from(`${MAGIC}${json.length} ${size} ${crc.toString(16).padStart(8, '0')}\n`, 'latin1');
    return new Promise((resolve, reject) => {
      this.#queue.push({ id, header, json, chunks, size, resolve, reject });
      this.#running ??= this.#loop();
    });
  }

  async #loop(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      let seg: Segment | null = null;
      try {
        seg = await this.#segment();
        const bufs: Buffer[] = [];
        const locs: JournalLocation[] = [];
        let off = seg.size;
        for (const r of batch) {
          bufs.push(r.header, r.json);
          for (const c of r.chunks) bufs.push(c);
          off += r.header.length + r.json.length;
          locs.push({ segment: seg, offset: off });
          off += r.size;
        }
        await seg.file.writev(bufs);
        seg.size = off;
        if (this.#fsync) await seg.file.fdatasync();
        seg.live += batch.length;
        this.stats.batches++;
        this.stats.records += batch.length;
        batch.forEach((r, i) => r.resolve(locs[i]!));
        if (seg.size >= this.#segmentMax) this.#seal(seg);
      } catch (e) {
        // The segment's tail is now unknown: append to a fresh one from here on.
        if (seg) {
          // Records that did reach the file were refused to their clients:
          // mark them done, so a restart does not deliver them after all.
          for (const r of batch) seg.doneQueue.push(r.id);
          this.#doneSegments.add(seg);
          this.#seal(seg);
          this.#flushDone();
        }
        for (const r of batch) r.reject(e);
      }
    }
    this.#running = null;
  }

  async #segment(): Promise<Segment> {
    if (this.#active) return this.#active;
    // Names sort in creation order: time, then a counter within the process.
    const name = `${Date.now().toString(36).padStart(9, '0')}-${(this.#seq++).toString(36).padStart(4, '0')}`;
    const file = path.join(this.dir, `${name}.seg`);
    const handle = await OpenFile.open(file, 'wx+', this.#io);
    try {
      // The new name must survive a crash before any record in it is acknowledged.
      await this.#dirSync.sync();
    } catch (e) {
      // Never used: remove it now rather than leave an empty segment behind.
      await handle.close().catch(() => {});
      await this.#io.unlink(file).catch(() => {});
      throw e;
    }
    this.#active = new Segment(name, file, handle, 0);
    return this.#active;
  }

  #seal(seg: Segment): void {
    seg.sealed = true;
    if (this.#active === seg) this.#active = null;
    this.#maybeDelete(seg);
  }

  /** The message bytes of a record. */
  read(loc: JournalLocation, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    return new Promise((res, rej) => {
      let got = 0;
      const step = (): void => {
        if (got === length) return res(buf);
        loc.segment.file.read(buf, got, length - got, loc.offset + got).then((n) => {
          if (n === 0) return rej(new Error(`journal ${loc.segment.name}: short read`));
          got += n;
          step();
        }, rej);
      };
      step();
    });
  }

  /** A message is finished (delivered, bounced or deleted): note it, and drop the segment once all are. */
  release(id: string, loc: JournalLocation): void {
    const seg = loc.segment;
    seg.live--;
    seg.doneQueue.push(id);
    this.#doneSegments.add(seg);
    if (!this.#doneScheduled) {
      this.#doneScheduled = true;
      // One append per segment per turn of the event loop, however many finished.
      setImmediate(() => this.#flushDone());
    }
  }

  #flushDone(): void {
    this.#doneScheduled = false;
    for (const seg of this.#doneSegments) {
      const ids = seg.doneQueue;
      seg.doneQueue = [];
      if (seg.sealed && seg.live === 0) {
        this.#maybeDelete(seg);
        continue;
      }
      if (seg.deleting) continue;
      // A small append to the page cache, done right here: handing it to the
      // thread pool cost more (two thread switches per write) than the write.
      // No fsync: see the top of the file.
      try {
        seg.doneFile ??= OpenFile.openSync(seg.path.replace(/\.seg$/, '.done'), 'a', this.#io);
        seg.doneFile.writeSync(ids.join('\n') + '\n');
      } catch {
        // Losing a done mark repeats a delivery after a crash; it never loses mail.
      }
    }
    this.#doneSegments.clear();
  }

  #maybeDelete(seg: Segment): void {
    if (!seg.sealed || seg.live > 0 || seg.deleting) return;
    // Decided once, synchronously: a second call (release and a failed
    // batch can both get here) finds it deleting and does nothing.
    seg.deleting = true;
    seg.doneChain = seg.doneChain.then(async () => {
      await seg.file.close().catch(() => {});
      await seg.doneFile?.close().catch(() => {});
      await this.#io.unlink(seg.path).catch(() => {});
      await this.#io.unlink(seg.path.replace(/\.seg$/, '.done')).catch(() => {});
    });
  }

  /**
   * Start-up: every record of every segment whose id is not in its .done.
   * All old segments are sealed (appends go to a new one). A record that
   * fails its CRC is skipped and its segment copied to `corruptDir` for the
   * admin; bytes that do not parse as a record end the scan (a torn tail:
   * written but never synced, so never acknowledged).
   */
  recover(corruptDir: string): { records: JournalRecord[]; corrupt: string[]; torn: number } {
    const records: JournalRecord[] = [];
    const corrupt: string[] = [];
    let torn = 0;
    const names = fs.readdirSync(this.dir).filter((n) => n.endsWith('.seg')).sort();
    for (const n of fs.readdirSync(this.dir)) {
      // A .done without its segment: the segment was deleted first.
      if (n.endsWith('.done') && !names.includes(n.replace(/\.done$/, '.seg'))) fs.rmSync(path.join(this.dir, n), { force: true });
    }
    for (const n of names) {
      const file = path.join(this.dir, n);
      const data = fs.readFileSync(file);
      let done = new Set<string>();
      try {
        done = new Set(fs.readFileSync(file.replace(/\.seg$/, '.done'), 'latin1').split('\n'));
      } catch {
        /* none finished */
      }
      const seg = new Segment(n.replace(/\.seg$/, ''), file, OpenFile.openSync(file, 'r', this.#io), data.length);
      seg.sealed = true;
      const parsed = parseSegment(data);
      const bad = parsed.bad;
      for (const r of parsed.records) {
        if (done.has(r.id)) continue;
        seg.live++;
        records.push({ envelopeJson: Buffer.from(r.json), location: { segment: seg, offset: r.offset }, bodyLength: r.bodyLength });
      }
      const pos = parsed.end;
      if (pos < data.length) torn++;
      if (bad) {
        // Never delete what might be mail: keep a copy for the admin.
        fs.mkdirSync(corruptDir, { recursive: true });
        fs.copyFileSync(file, path.join(corruptDir, n));
        corrupt.push(n);
      }
      if (seg.live === 0) {
        seg.deleting = true;
        void seg.file.close().catch(() => {});
        fs.rmSync(file, { force: true });
        fs.rmSync(file.replace(/\.seg$/, '.done'), { force: true });
      }
    }
    return { records, corrupt, torn };
  }

  /** Waits for appends in flight and closes every file (tests, shutdown). */
  async close(): Promise<void> {
    while (this.#running) await this.#running;
    this.#flushDone();
    if (this.#active) this.#seal(this.#active);
  }
}

interface ParsedRecord { id: string; json: Buffer; offset: number; bodyLength: number }

/**
 * The records of one segment's bytes: those that parse and pass their CRC
 * (`bad` if any failed), and where parsing stopped (`end` < length: a torn tail).
 */
export function parseSegment(data: Buffer): { records: ParsedRecord[]; bad: boolean; end: number } {
  const records: ParsedRecord[] = [];
  let pos = 0;
  let bad = false;
  while (pos < data.length) {
    const nl = data.indexOf(10, pos);
    const m = nl < 0 || nl - pos > HEADER_MAX ? null : /^TJ1 (\d+) (\d+) ([0-9a-f]{8})$/.exec(data.toString('latin1', pos, nl));
    if (!m) break;
    const jsonLength = Number(m[1]);
    const bodyLength = Number(m[2]);
    const start = nl + 1;
    const end = start + jsonLength + bodyLength;
    if (end > data.length) break;
    const json = data.subarray(start, start + jsonLength);
    const crc = zlib.crc32(data.subarray(start + jsonLength, end), zlib.crc32(json));
    pos = end;
    let id: unknown;
    try {
      id = crc === parseInt(m[3]!, 16) ? (JSON.parse(json.toString('utf8')) as { id?: unknown }).id : undefined;
    } catch {
      /* bad JSON: counted below */
    }
    if (typeof id !== 'string') {
      bad = true;
      continue;
    }
    records.push({ id, json, offset: start + jsonLength, bodyLength });
  }
  return { records, bad, end: pos };
}

/**
 * Read-only view of a journal directory (tools and tests): every record
 * not marked done, with its message bytes.
 */
export function readJournal(dir: string): { id: string; envelopeJson: Buffer; message: Buffer }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.seg')).sort();
  } catch {
    return [];
  }
  const out: { id: string; envelopeJson: Buffer; message: Buffer }[] = [];
  for (const n of names) {
    const file = path.join(dir, n);
    let data: Buffer;
    try {
      data = fs.readFileSync(file);
    } catch {
      continue; // deleted meanwhile
    }
    let done = new Set<string>();
    try {
      done = new Set(fs.readFileSync(file.replace(/\.seg$/, '.done'), 'latin1').split('\n'));
    } catch {
      /* none finished */
    }
    for (const r of parseSegment(data).records) {
      if (!done.has(r.id)) out.push({ id: r.id, envelopeJson: r.json, message: data.subarray(r.offset, r.offset + r.bodyLength) });
    }
  }
  return out;
}
