// The durable queue. One file per message in <spool>/queue/<id>:
//
//   <message> <envelope JSON> "\nTERN2 <message length> <JSON length>\n"
//
// The envelope is a trailer, written at commit: the message streams to disk
// from its first byte, and what is only known at the end (a DKIM signature,
// Authentication-Results) still goes in the envelope, as header fields that
// delivery emits before the stored bytes (envelope.prepend).
//
// A message is written under <spool>/tmp/, fsynced, and renamed into
// queue/; the rename is the commit, and the queue directory is fsynced
// before anyone is told (the 250). Directory fsyncs are shared by every
// commit waiting at the same moment (group commit), which is how
// concurrent sessions avoid paying one each. Delivery state lives beside
// it in <spool>/state/<id>.json, replaced atomically; a missing state file
// means "nothing delivered yet".
//
// Small messages (those still in memory at commit, under WRITE_BATCH) skip
// the file of their own: they are appended to the journal (journal.ts),
// where one fdatasync makes a whole batch of concurrent commits durable.
// Their bytes stay in a bounded memory cache until delivered, so the usual
// first delivery reads nothing back from disk.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import { upgradeState, type DeliveryState, type Envelope, type QueuedMessage } from './types.ts';
import { DirSync, OpenFile, p, type FsIo } from '../util/fsio.ts';
import { Journal, type JournalLocation } from './journal.ts';
import { noteExternalGarbage } from '../util/memory.ts';

const MAGIC = 'TERN2 ';
/** The trailer is at most this long: two 16-digit numbers and the magic. */
const TRAILER_MAX = 64;
/** Bytes read from the end of a queue file at start-up: the trailer and, nearly always, the whole envelope. */
const HEADER_READ = 8 * 1024;
/** Buffer this much before writing to disk, so small messages cost one write. */
const WRITE_BATCH = 256 * 1024;
/** Bytes of recently committed journal messages kept in memory for their first delivery. */
const CACHE_MAX = 64 * 1024 * 1024;

export interface SpoolOptions {
  /** Directory holding tmp/, queue/, state/, corrupt/. */
  dir: string;
  /** Turn off only in tests that measure something else: every fsync is skipped. */
  fsync?: boolean;
  /** The file system calls (tests inject failures); default: the real ones. */
  io?: FsIo;
}

let idCounter = 0;

/** Random bytes fetched 4 KiB at a time: one call per 1024 ids instead of one each. */
let randomPool = Buffer.alloc(0);
let randomAt = 0;
function randomUint32(): number {
  if (randomAt + 4 > randomPool.length) {
    randomPool = crypto.randomBytes(4096);
    randomAt = 0;
  }
  const v = randomPool.readUInt32BE(randomAt);
  randomAt += 4;
  return v;
}

export class Spool {
  readonly dir: string;
  readonly tmpDir: string;
  readonly queueDir: string;
  readonly stateDir: string;
  readonly fsync: boolean;
  readonly io: FsIo;
  readonly #queueSync: DirSync;
  readonly #stateSync: DirSync;
  readonly #stateWrites = new Map<string, Promise<void>>();
  readonly journal: Journal;
  /** Where each journaled message lives. */
  readonly #journaled = new Map<string, Journaled>();
  /** Message bytes of recent journal commits, oldest first (Map order). */
  readonly #cache = new Map<string, Buffer[]>();
  #cacheBytes = 0;
  /** Ids that may have a state file (so remove() skips a pointless unlink). */
  readonly #withState = new Set<string>();

  constructor(options: SpoolOptions) {
    this.dir = options.dir;
    this.fsync = options.fsync ?? true;
    this.io = options.io ?? p;
    this.tmpDir = path.join(this.dir, 'tmp');
    this.queueDir = path.join(this.dir, 'queue');
    this.stateDir = path.join(this.dir, 'state');
    this.#queueSync = new DirSync(this.queueDir, this.fsync, this.io);
    this.#stateSync = new DirSync(this.stateDir, this.fsync, this.io);
    this.journal = new Journal(path.join(this.dir, 'journal'), this.fsync, undefined, this.io);
  }

  init(): void {
    for (const d of [this.tmpDir, this.queueDir, this.stateDir]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    this.journal.init();
  }

  /** Called by SpoolWriter: a small message goes into the journal. */
  async appendToJournal(envelope: Envelope, json: Buffer, chunks: Buffer[], size: number): Promise<void> {
    const loc = await this.journal.append(envelope.id, json, chunks, size);
    this.#journaled.set(envelope.id, { loc, jsonLength: json.length, bodyLength: size });
    this.#cache.set(envelope.id, chunks);
    this.#cacheBytes += size;
    for (const [id, c] of this.#cache) {
      if (this.#cacheBytes <= CACHE_MAX) break;
      this.#dropCache(id, c);
    }
  }

  #dropCache(id: string, chunks: Buffer[]): void {
    this.#cache.delete(id);
    for (const c of chunks) this.#cacheBytes -= c.length;
  }

  /**
   * A new queue id: time-ordered, unique across restarts and processes,
   * safe as a file name and in a Message-ID. 16 characters of [0-9A-Z].
   */
  newId(): string {
    const t = Date.now().toString(36).toUpperCase().padStart(9, '0');
    const c = (idCounter = (idCounter + 1) % 1296).toString(36).toUpperCase().padStart(2, '0');
    const r = randomUint32().toString(36).toUpperCase().padStart(7, '0').slice(0, 5);
    return t + c + r;
  }

  /** Start writing a message. The envelope is final; the caller streams the message. */
  create(envelope: Envelope): SpoolWriter {
    return new SpoolWriter(this, envelope);
  }

  queuePath(id: string): string {
    return path.join(this.queueDir, id);
  }

  /** Called by SpoolWriter after its rename. */
  syncQueueDir(): Promise<void> {
    return this.#queueSync.sync();
  }

  /**
   * Start-up recovery, all at once: every committed message with its state
   * (tests and tools; `tern serve` uses beginRecovery() so that its
   * listeners need not wait for a large queue to be read).
   */
  async recover(): Promise<{ messages: QueuedMessage[]; discarded: number; corrupt: string[] }> {
    const recovery = this.beginRecovery();
    const messages = [...recovery.journaled];
    while (recovery.remaining > 0) messages.push(...recovery.next());
    messages.sort((a, b) => (a.envelope.id < b.envelope.id ? -1 : a.envelope.id > b.envelope.id ? 1 : 0));
    return { messages, discarded: recovery.discarded, corrupt: recovery.corrupt };
  }

  /**
   * The first, quick step of start-up recovery; Recovery.next() reads the
   * queue files afterwards, a batch at a time. Half-written files in tmp/
   * were never acknowledged and are discarded; the journal is read (its
   * messages come back whole, in `journaled`); queue/ and state/ are listed.
   *
   * Once this returns, new mail may be accepted while the queue files are
   * read: a new message has a new id, so it is neither in the listing nor
   * touched by the rest of recovery, and no recovered message is handed
   * out twice. Whatever recovery deletes (tmp/ files, stale state files)
   * is decided here, before any new message exists.
   */
  beginRecovery(): Recovery {
    let discarded = 0;
    for (const name of fs.readdirSync(this.tmpDir)) {
      fs.rmSync(path.join(this.tmpDir, name), { force: true });
      discarded++;
    }
    const journaled: QueuedMessage[] = [];
    const corrupt: string[] = [];
    const journal = this.journal.recover(path.join(this.dir, 'corrupt'));
    corrupt.push(...journal.corrupt);
    // Oldest first (ids are time-ordered), as mail waiting longest should move first.
    const files = fs.readdirSync(this.queueDir).sort();
    const inQueue = new Set(files);
    const ids = new Set(files);
    for (const r of journal.records) {
      const envelope = JSON.parse(r.envelopeJson.toString('utf8')) as Envelope;
      if (inQueue.has(envelope.id)) {
        // Moved to a queue file, and the crash came before the journal heard: the file wins.
        this.journal.release(envelope.id, r.location);
        continue;
      }
      ids.add(envelope.id);
      this.#journaled.set(envelope.id, { loc: r.location, jsonLength: r.envelopeJson.length, bodyLength: r.bodyLength });
      const state = this.readState(envelope.id);
      if (state) this.#withState.add(envelope.id);
      journaled.push({ envelope, state: state ?? initialState(envelope), bodyLength: r.bodyLength, size: r.bodyLength + Buffer.byteLength(envelope.prepend ?? ''), recovered: true });
    }
    // State files whose message is gone (crash between the two removals), and half-written ones.
    const states = new Set<string>();
    for (const name of fs.readdirSync(this.stateDir)) {
      const id = name.replace(/\.json$/, '');
      if (!ids.has(id) || name.endsWith('.tmp')) fs.rmSync(path.join(this.stateDir, name), { force: true });
      else states.add(id);
    }
    return new Recovery(this, journaled, files, states, discarded, corrupt);
  }

  /** Recovery.next(): one queue file and its state; a file that does not parse is set aside in corrupt/ (null). */
  recoverFile(id: string, hasState: boolean): QueuedMessage | null {
    try {
      const { envelope, bodyLength, size } = this.#readHeader(id);
      const state = hasState ? this.readState(id) : null;
      if (state) this.#withState.add(id);
      return { envelope, state: state ?? initialState(envelope), bodyLength, size, recovered: true };
    } catch {
      // Never delete what might be mail: set it aside for the admin.
      const dest = path.join(this.dir, 'corrupt');
      fs.mkdirSync(dest, { recursive: true });
      fs.renameSync(this.queuePath(id), path.join(dest, id));
      fs.rmSync(path.join(this.stateDir, `${id}.json`), { force: true });
      return null;
    }
  }

  async readHeader(id: string): Promise<{ envelope: Envelope; bodyLength: number; size: number }> {
    return this.#readHeader(id);
  }

  /**
   * The envelope from a queue file's trailer. One read from the end gets
   * the trailer and, nearly always, the whole envelope with it: at start-up
   * this runs once per queued message, so each system call counts.
   */
  #readHeader(id: string): { envelope: Envelope; bodyLength: number; size: number } {
    const file = this.queuePath(id);
    const fd = fs.openSync(file, 'r');
    try {
      const { size: fileSize } = fs.fstatSync(fd);
      const tail = Buffer.allocUnsafe(Math.min(fileSize, HEADER_READ));
      const got = fs.readSync(fd, tail, 0, tail.length, fileSize - tail.length);
      if (got !== tail.length) throw new Error('short read');
      const text = tail.toString('latin1', Math.max(0, tail.length - TRAILER_MAX));
      const at = text.lastIndexOf('\n' + MAGIC);
      const m = at < 0 ? null : /^TERN2 (\d+) (\d+)\n$/.exec(text.slice(at + 1));
      if (!m) throw new Error('bad queue file trailer');
      const bodyLength = Number(m[1]);
      const jsonLength = Number(m[2]);
      const trailerLength = text.length - at;
      if (bodyLength + jsonLength + trailerLength !== fileSize) throw new Error('queue file length mismatch');
      let json: Buffer;
      if (jsonLength + trailerLength <= tail.length) {
        const end = tail.length - trailerLength;
        json = tail.subarray(end - jsonLength, end);
      } else {
        json = Buffer.alloc(jsonLength);
        fs.readSync(fd, json, 0, jsonLength, bodyLength);
      }
      const envelope = JSON.parse(json.toString('utf8')) as Envelope;
      if (envelope.id !== id) throw new Error('queue file id mismatch');
      return { envelope, bodyLength, size: bodyLength + Buffer.byteLength(envelope.prepend ?? '') };
    } finally {
      fs.closeSync(fd);
    }
  }

  /** The message as delivered: the envelope's prepended fields, then the stored bytes (our Received header first). */
  openMessage(msg: QueuedMessage): Readable {
    const id = msg.envelope.id;
    const j = this.#journaled.get(id);
    if (j) {
      const loc = j.loc;
      const prepend = msg.envelope.prepend;
      const cached = this.#cache.get(id);
      const head: Buffer[] = prepend ? [Buffer.from(prepend, 'utf8')] : [];
      if (cached) return Readable.from(head.concat(cached), { objectMode: false });
      const journal = this.journal;
      return Readable.from((async function* () {
        yield* head;
        if (msg.bodyLength > 0) yield await journal.read(loc, msg.bodyLength);
      })(), { objectMode: false });
    }
    const prepend = msg.envelope.prepend;
    if (msg.bodyLength === 0) return Readable.from(prepend ? [Buffer.from(prepend, 'utf8')] : [], { objectMode: false });
    const file = fs.createReadStream(this.queuePath(msg.envelope.id), { start: 0, end: msg.bodyLength - 1, highWaterMark: 64 * 1024 });
    return Readable.from((async function* () {
      if (prepend) yield Buffer.from(prepend, 'utf8');
      // Every consumer (Maildir, remote SMTP, a DSN) is done with a chunk
      // when it asks for the next: those reads are garbage for util/memory.ts.
      for await (const chunk of file) {
        yield chunk as Buffer;
        noteExternalGarbage((chunk as Buffer).length);
      }
    })(), { objectMode: false });
  }

  readState(id: string): DeliveryState | null {
    try {
      // An old file's reply strings become structured replies here, once (types.ts).
      return upgradeState(JSON.parse(fs.readFileSync(path.join(this.stateDir, `${id}.json`), 'utf8')) as DeliveryState);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /**
   * Replace the delivery state atomically (tmp, fsync, rename, dir fsync).
   * Writes for one message are serialized: two deliveries of the same
   * message may finish together, and the later state must land last.
   */
  writeState(id: string, state: DeliveryState): Promise<void> {
    const snapshot = JSON.stringify(state);
    const prev = this.#stateWrites.get(id) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(async () => {
      await this.#moveToFile(id);
      await this.#writeState(id, snapshot);
    });
    this.#stateWrites.set(id, next);
    this.#withState.add(id);
    void next.finally(() => {
      if (this.#stateWrites.get(id) === next) this.#stateWrites.delete(id);
    }).catch(() => {});
    return next;
  }

  /**
   * A journaled message that needs state (it was deferred, partly delivered
   * or held) moves to a queue file of its own before its state is written:
   * a message retried for days would otherwise keep its whole 32 MiB
   * segment on disk. Deferred mail is the exception, so the copy is cheap in
   * total, and the journal only ever holds mail in its first attempt.
   * Crash-safe in either order: the file is durable before the journal
   * record is marked done, and recovery finding both keeps one (the file).
   */
  async #moveToFile(id: string): Promise<void> {
    const j = this.#journaled.get(id);
    if (!j) return;
    const record = await this.journal.read({ segment: j.loc.segment, offset: j.loc.offset - j.jsonLength }, j.jsonLength + j.bodyLength);
    const json = record.subarray(0, j.jsonLength);
    const message = record.subarray(j.jsonLength);
    const tmp = path.join(this.tmpDir, id);
    const file = this.queuePath(id);
    // A copy that may not be durable is taken back: the journal record still
    // holds the message, and a stray copy would be delivered again at restart.
    await this.#writeDurably(tmp, [message, json, Buffer.from(`\n${MAGIC}${message.length} ${json.length}\n`, 'latin1')], file, this.#queueSync, true);
    this.#journaled.delete(id);
    const cached = this.#cache.get(id);
    if (cached) this.#dropCache(id, cached);
    this.journal.release(id, j.loc);
  }

  async #writeState(id: string, snapshot: string): Promise<void> {
    const final = path.join(this.stateDir, `${id}.json`);
    // A renamed state file stays even if the directory fsync failed: the
    // previous one is gone, and this is the newest state we know.
    await this.#writeDurably(`${final}.tmp`, [Buffer.from(snapshot)], final, this.#stateSync, false);
  }

  /**
   * tmp, fsync, rename to `final`, directory fsync. On any failure (ENOSPC
   * most likely) nothing it made stays behind, so a full disk leaves no
   * empty files in tmp/ or state/ until the next restart (issue 11, break
   * 10): the tmp file goes, and so does `final` (if `undoRename`) when the
   * rename happened but could not be made durable.
   */
  async #writeDurably(tmp: string, bufs: Buffer[], final: string, dirSync: DirSync, undoRename: boolean): Promise<void> {
    const io = this.io;
    let file: OpenFile | null = null;
    let renamed = false;
    try {
      file = await OpenFile.open(tmp, 'w', io);
      await file.writev(bufs);
      if (this.fsync) await file.fsync();
      await file.close();
      renamed = true;
      await io.rename(tmp, final);
      await dirSync.sync();
    } catch (e) {
      await file?.close().catch(() => {});
      if (file) await io.unlink(tmp).catch(() => {});
      if (renamed && undoRename) await io.unlink(final).catch(() => {});
      throw e;
    }
  }

  /** Remove a finished message: the queue file first, so a crash never leaves a message without its state. */
  async remove(id: string): Promise<void> {
    // A state write in flight may be moving the message to a file: let it finish.
    await this.#stateWrites.get(id)?.catch(() => {});
    const j = this.#journaled.get(id);
    if (j) {
      this.#journaled.delete(id);
      const cached = this.#cache.get(id);
      if (cached) this.#dropCache(id, cached);
      this.journal.release(id, j.loc);
    } else {
      await this.io.unlink(this.queuePath(id));
      await this.#queueSync.sync();
    }
    if (this.#withState.delete(id)) {
      await this.io.unlink(path.join(this.stateDir, `${id}.json`));
    }
  }

  /** Ids of committed messages: queue files and journal records. */
  list(): string[] {
    return [...fs.readdirSync(this.queueDir), ...this.#journaled.keys()];
  }
}

/**
 * Start-up recovery in progress (Spool.beginRecovery): the journal's
 * messages, already read, and the queue files still to read, oldest first.
 * next() reads the next batch synchronously (a few ms), so the caller can
 * let the event loop serve sessions between batches.
 */
export class Recovery {
  /** Small messages from the journal, in their first attempt. */
  readonly journaled: QueuedMessage[];
  readonly discarded: number;
  /** Journal segments and queue files set aside in corrupt/ (grows as next() finds them). */
  readonly corrupt: string[];
  readonly #spool: Spool;
  readonly #files: string[];
  readonly #states: Set<string>;
  #at = 0;

  constructor(spool: Spool, journaled: QueuedMessage[], files: string[], states: Set<string>, discarded: number, corrupt: string[]) {
    this.#spool = spool;
    this.journaled = journaled;
    this.#files = files;
    this.#states = states;
    this.discarded = discarded;
    this.corrupt = corrupt;
  }

  /** Queue files found at start. */
  get files(): number {
    return this.#files.length;
  }

  /** Queue files not read yet. */
  get remaining(): number {
    return this.#files.length - this.#at;
  }

  /**
   * Read the remaining queue files, one batch per later turn of the event
   * loop (sessions are served in between), handing each message to `add`.
   * Stops early once `stopped()` says so.
   */
  async load(add: (msg: QueuedMessage) => void, stopped: () => boolean): Promise<void> {
    while (this.remaining > 0) {
      await new Promise((r) => setImmediate(r));
      if (stopped()) return;
      for (const msg of this.next()) add(msg);
    }
  }

  /** The next messages from queue files (at most `max` files read; corrupt ones are set aside, so there may be fewer). */
  next(max = RECOVERY_BATCH): QueuedMessage[] {
    const out: QueuedMessage[] = [];
    const end = Math.min(this.#files.length, this.#at + max);
    for (; this.#at < end; this.#at++) {
      const id = this.#files[this.#at]!;
      const msg = this.#spool.recoverFile(id, this.#states.has(id));
      if (msg) out.push(msg);
      else this.corrupt.push(id);
    }
    return out;
  }
}

/** Queue files one Recovery.next() reads by default: a few milliseconds of work. */
export const RECOVERY_BATCH = 200;

/** Where a journaled message is: its record's message bytes, and the JSON right before them. */
interface Journaled {
  loc: JournalLocation;
  jsonLength: number;
  bodyLength: number;
}

export function initialState(envelope: Envelope): DeliveryState {
  return {
    attempts: 0,
    nextAttempt: envelope.receivedAt,
    status: envelope.recipients.map(() => 'pending'),
    lastReply: envelope.recipients.map(() => null),
  };
}

/**
 * Where a SpoolWriter is in its life. Exactly one of commit() and abort()
 * decides the message's fate; whichever comes second waits for the first:
 *
 *   writing ──commit()──► committing ──► committed
 *      │                      └──(any step fails; all undone)──► aborted
 *      └──abort()──► aborted
 */
type WriterState = 'writing' | 'committing' | 'committed' | 'aborted';

/**
 * Writes one message into the spool. Contract: call write() for each chunk
 * in order (it never copies; the chunks must not be reused by the caller),
 * then commit() or abort(). write() returns false when the caller should
 * pause its source until onDrain fires.
 *
 * commit() and abort() may race (a client that resets the connection right
 * after its final dot: the session aborts while the commit runs). They
 * never both act: abort() during a commit waits for it and leaves a
 * committed message alone. RFC 5321 §6.1 lets a message whose 250 never
 * reached the client be delivered (a duplicate at worst, never a loss); a
 * failed commit removes everything it made before it rejects, so a message
 * answered with 4xx/5xx is never delivered.
 */
export class SpoolWriter {
  readonly envelope: Envelope;
  readonly #spool: Spool;
  readonly #tmpPath: string;
  #state: WriterState = 'writing';
  /** The commit, or the abort's clean-up: what a later abort() waits for. */
  #ending: Promise<unknown> | null = null;
  /** The tmp file once the message outgrew memory; this writer is its only owner. */
  #file: Promise<OpenFile> | null = null;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #size = 0;
  #inflight: Promise<void> | null = null;
  #error: unknown = null;
  #drain: (() => void) | null = null;
  /** Set just before the rename into queue/: undoing must remove the queue file too. */
  #renaming = false;
  #tmpRemoved: Promise<void> | null = null;

  constructor(spool: Spool, envelope: Envelope) {
    this.#spool = spool;
    this.envelope = envelope;
    this.#tmpPath = path.join(spool.tmpDir, envelope.id);
  }

  /** Octets of message written so far. */
  get size(): number {
    return this.#size;
  }

  write(chunk: Buffer): boolean {
    if (this.#state !== 'writing') throw new Error(`SpoolWriter: write after ${this.#state === 'committing' ? 'commit' : this.#state}`);
    this.#size += chunk.length;
    // The file failed (disk full): the commit will refuse the message, so
    // the rest of it is only counted, neither kept nor written.
    if (this.#error) return true;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (this.#buffered >= WRITE_BATCH) {
      if (!this.#inflight) this.#flush();
      return this.#buffered < WRITE_BATCH * 2;
    }
    return true;
  }

  onDrain(cb: () => void): void {
    this.#drain = cb;
  }

  #flush(): void {
    const chunks = this.#chunks;
    this.#chunks = [];
    this.#buffered = 0;
    this.#inflight = this.#open()
      .then((file) => file.writev(chunks))
      .then(
        () => noteExternalGarbage(chunks.reduce((n, c) => n + c.length, 0)),
        (e: unknown) => this.#writeFailed(e),
      )
      .finally(() => {
        this.#inflight = null;
        if (this.#buffered >= WRITE_BATCH && this.#state === 'writing') this.#flush();
        else {
          const d = this.#drain;
          this.#drain = null;
          d?.();
        }
      });
  }

  /**
   * A write failed (ENOSPC, EIO): the message can no longer be committed.
   * Its file goes now, not at commit or at the next restart (issue 11,
   * break 10), and nothing more is buffered for it.
   */
  #writeFailed(e: unknown): void {
    this.#error ??= e;
    this.#chunks = [];
    this.#buffered = 0;
    void this.#removeTmp();
  }

  #open(): Promise<OpenFile> {
    this.#file ??= OpenFile.open(this.#tmpPath, 'wx', this.#spool.io);
    return this.#file;
  }

  /** Close and unlink the tmp file, once, if it was ever created. */
  #removeTmp(): Promise<void> {
    this.#tmpRemoved ??= (async () => {
      // Only a file this writer created ('wx' succeeded) is unlinked.
      const file = await this.#file?.catch(() => null);
      if (!file) return;
      await file.close().catch(() => {});
      await this.#spool.io.unlink(this.#tmpPath).catch(() => {});
    })();
    return this.#tmpRemoved;
  }

  /**
   * Make the message durable in queue/. `prepend` is header fields (CRLF
   * terminated) to deliver before the stored bytes. Resolves only after
   * fsyncs; rejects on any I/O error, after removing whatever it wrote.
   * At most once, and never after abort().
   */
  commit(prepend?: string): Promise<QueuedMessage> {
    if (this.#state !== 'writing') return Promise.reject(new Error(`SpoolWriter: commit after ${this.#state === 'committing' ? 'commit' : this.#state}`));
    this.#state = 'committing';
    const commit = this.#commit(prepend).then(
      (msg) => {
        this.#state = 'committed';
        return msg;
      },
      async (e: unknown) => {
        await this.#undo();
        this.#state = 'aborted';
        throw e;
      },
    );
    this.#ending = commit;
    return commit;
  }

  async #commit(prepend: string | undefined): Promise<QueuedMessage> {
    if (prepend) this.envelope.prepend = prepend;
    if (!this.#file && !this.#inflight) {
      // Never reached the disk: small enough for the journal.
      const chunks = this.#chunks;
      this.#chunks = [];
      await this.#spool.appendToJournal(this.envelope, Buffer.from(JSON.stringify(this.envelope), 'utf8'), chunks, this.#size);
      return this.#committed(prepend);
    }
    while (this.#inflight) await this.#inflight;
    if (this.#error) throw this.#error;
    const file = await this.#open();
    const json = Buffer.from(JSON.stringify(this.envelope), 'utf8');
    this.#chunks.push(json, Buffer.from(`\n${MAGIC}${this.#size} ${json.length}\n`, 'latin1'));
    await file.writev(this.#chunks);
    this.#chunks = [];
    if (this.#spool.fsync) await file.fsync();
    // close() errors count (NFS reports write errors there): the commit fails.
    await file.close();
    this.#renaming = true;
    await this.#spool.io.rename(this.#tmpPath, this.#spool.queuePath(this.envelope.id));
    await this.#spool.syncQueueDir();
    return this.#committed(prepend);
  }

  #committed(prepend: string | undefined): QueuedMessage {
    return {
      envelope: this.envelope,
      state: initialState(this.envelope),
      bodyLength: this.#size,
      size: this.#size + Buffer.byteLength(prepend ?? ''),
      recovered: false,
    };
  }

  /**
   * Remove everything written for this message: the tmp file, and the queue
   * file if the rename may have happened (with a directory fsync, so the
   * removal survives a crash). A journal append that failed needs nothing
   * here: the journal marks its own failed records done.
   */
  async #undo(): Promise<void> {
    this.#chunks = [];
    this.#buffered = 0;
    while (this.#inflight) await this.#inflight;
    await this.#removeTmp();
    if (this.#renaming) {
      await this.#spool.io.unlink(this.#spool.queuePath(this.envelope.id)).catch(() => {});
      await this.#spool.syncQueueDir().catch(() => {});
    }
  }

  /**
   * Forget the message (client gave up, or it was rejected). During a
   * commit: wait for it, and leave its outcome alone (committed stays
   * committed; a failed commit has already undone itself).
   */
  async abort(): Promise<void> {
    if (this.#state === 'writing') {
      this.#state = 'aborted';
      this.#ending = this.#undo();
    }
    await this.#ending?.catch(() => {});
  }
}
