// Promise wrappers over the callback fs API (cheaper than FileHandle on the
// hot path), the one owner of an open file descriptor (OpenFile), and the
// shared directory fsync used for group commit.

import fs from 'node:fs';

/**
 * The file system calls Tern's durable writers make, as one object so tests
 * can inject failures (ENOSPC, EIO) at any step and count the closes.
 * Raw descriptors appear only here and inside OpenFile.
 */
export interface FsIo {
  open(file: string, flags: string): Promise<number>;
  openSync(file: string, flags: string): number;
  writev(fd: number, bufs: Buffer[]): Promise<void>;
  /** All of `bufs`, now, on the calling thread (small writes into the page cache; see OpenFile.writevSync). */
  writevSync(fd: number, bufs: Buffer[]): void;
  writeSync(fd: number, data: string): void;
  read(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  fsync(fd: number): Promise<void>;
  /** Data and the size that reaches it (enough for an appended file), not other metadata. */
  fdatasync(fd: number): Promise<void>;
  close(fd: number): Promise<void>;
  closeSync(fd: number): void;
  rename(from: string, to: string): Promise<void>;
  renameSync(from: string, to: string): void;
  /** Remove a file; one that is already gone is not an error. */
  unlink(file: string): Promise<void>;
}

export const p: FsIo = {
  open: (f, flags) => new Promise<number>((res, rej) => fs.open(f, flags, 0o600, (e, fd) => (e ? rej(e) : res(fd)))),
  openSync: (f, flags) => fs.openSync(f, flags, 0o600),
  writev: (fd, bufs) =>
    new Promise<void>((res, rej) => {
      const total = bufs.reduce((n, b) => n + b.length, 0);
      fs.writev(fd, bufs, (e, n) => (e ? rej(e) : n === total ? res() : writeRest(fd, bufs, n).then(res, rej)));
    }),
  writevSync: (fd, bufs) => {
    const total = bufs.reduce((n, b) => n + b.length, 0);
    let written = fs.writevSync(fd, bufs);
    if (written === total) return;
    // A short writev is rare (disk full, signals); finish with plain writes.
    const all = Buffer.concat(bufs);
    while (written < all.length) written += fs.writeSync(fd, all, written, all.length - written);
  },
  writeSync: (fd, data) => {
    fs.writeSync(fd, data, null, 'latin1');
  },
  read: (fd, buf, offset, length, position) => new Promise<number>((res, rej) => fs.read(fd, buf, offset, length, position, (e, n) => (e ? rej(e) : res(n)))),
  fsync: (fd) => new Promise<void>((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res()))),
  fdatasync: (fd) => new Promise<void>((res, rej) => fs.fdatasync(fd, (e) => (e ? rej(e) : res()))),
  close: (fd) => new Promise<void>((res, rej) => fs.close(fd, (e) => (e ? rej(e) : res()))),
  closeSync: (fd) => fs.closeSync(fd),
  rename: (a, b) => new Promise<void>((res, rej) => fs.rename(a, b, (e) => (e ? rej(e) : res()))),
  renameSync: (a, b) => fs.renameSync(a, b),
  unlink: (f) => new Promise<void>((res, rej) => fs.unlink(f, (e) => (!e || e.code === 'ENOENT' ? res() : rej(e)))),
};

async function writeRest(fd: number, bufs: Buffer[], written: number): Promise<void> {
  // A short writev is rare (disk full, signals); finish with plain writes.
  const all = Buffer.concat(bufs).subarray(written);
  let off = 0;
  while (off < all.length) {
    off += await new Promise<number>((res, rej) => fs.write(fd, all, off, all.length - off, null, (e, n) => (e ? rej(e) : res(n))));
  }
}

/** What an OpenFile's operations reject with once it is closed (never a call on the old number). */
export class ClosedFileError extends Error {
  readonly code = 'ETERNCLOSED';
  constructor(file: string, op: string) {
    super(`${op} on closed file ${file}`);
  }
}

/**
 * The only owner of one file descriptor. A descriptor number is reused by
 * the kernel as soon as it is closed (for the next socket accepted, the
 * next file opened), so a second close, or a write after the close, hits
 * whatever got the number meanwhile: another client's socket or spool
 * file (issue 11: SIGABRT, and mail written into the wrong file). Hence:
 *
 * - close() marks the file closed at once, waits for the operations
 *   already started, then closes the descriptor exactly once; every caller
 *   gets the same promise, whoever calls first.
 * - Every operation after close() rejects (or throws) ClosedFileError
 *   without making a system call.
 */
export class OpenFile {
  readonly path: string;
  readonly #fd: number;
  readonly #io: FsIo;
  #busy = 0;
  #idle: (() => void) | null = null;
  #closing: Promise<void> | null = null;

  constructor(file: string, fd: number, io: FsIo = p) {
    this.path = file;
    this.#fd = fd;
    this.#io = io;
  }

  static async open(file: string, flags: string, io: FsIo = p): Promise<OpenFile> {
    return new OpenFile(file, await io.open(file, flags), io);
  }

  static openSync(file: string, flags: string, io: FsIo = p): OpenFile {
    return new OpenFile(file, io.openSync(file, flags), io);
  }

  /** True from the moment close() is first called. */
  get closed(): boolean {
    return this.#closing !== null;
  }

  writev(bufs: Buffer[]): Promise<void> {
    return this.#use('writev', (fd) => this.#io.writev(fd, bufs));
  }

  /** A small synchronous append (the journal's done marks): no thread-pool round trip. */
  writeSync(data: string): void {
    if (this.#closing) throw new ClosedFileError(this.path, 'writeSync');
    this.#io.writeSync(this.#fd, data);
  }

  /**
   * A small write on the calling thread (a Maildir copy of up to 256 KiB):
   * it only copies into the page cache, so it is quicker than the thread
   * pool's round trip, which on a server pinned to one core costs two
   * context switches and several futex calls (bench/profile.ts --syscalls).
   */
  writevSync(bufs: Buffer[]): void {
    if (this.#closing) throw new ClosedFileError(this.path, 'writevSync');
    this.#io.writevSync(this.#fd, bufs);
  }

  read(buf: Buffer, offset: number, length: number, position: number): Promise<number> {
    return this.#use('read', (fd) => this.#io.read(fd, buf, offset, length, position));
  }

  fsync(): Promise<void> {
    return this.#use('fsync', (fd) => this.#io.fsync(fd));
  }

  fdatasync(): Promise<void> {
    return this.#use('fdatasync', (fd) => this.#io.fdatasync(fd));
  }

  /** Closes the descriptor once, after the operations in flight; the same promise for every caller. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#busy > 0) await new Promise<void>((res) => (this.#idle = res));
      await this.#io.close(this.#fd);
    })();
    return this.#closing;
  }

  /**
   * Closes the descriptor now, on the calling thread. Only with nothing in
   * flight (an operation still running would then act on a reused number):
   * that is a bug in the caller, and throws without closing.
   */
  closeSync(): void {
    if (this.#closing) return;
    if (this.#busy > 0) throw new Error(`closeSync of ${this.path} with ${this.#busy} operation(s) in flight`);
    // Marked first: even a failing close (EIO) releases the descriptor on Linux, so it is never closed twice.
    this.#closing = Promise.resolve();
    this.#io.closeSync(this.#fd);
  }

  #use<T>(op: string, run: (fd: number) => Promise<T>): Promise<T> {
    if (this.#closing) return Promise.reject(new ClosedFileError(this.path, op));
    this.#busy++;
    return run(this.#fd).finally(() => {
      if (--this.#busy === 0 && this.#idle) {
        const idle = this.#idle;
        this.#idle = null;
        idle();
      }
    });
  }
}

/** Shares one fsync of a directory among all callers waiting at the same time. */
export class DirSync {
  readonly #dir: string;
  readonly #enabled: boolean;
  readonly #io: FsIo;
  #running: Promise<void> | null = null;
  #next: Promise<void> | null = null;
  constructor(dir: string, enabled: boolean, io: FsIo = p) {
    this.#dir = dir;
    this.#enabled = enabled;
    this.#io = io;
  }
  /** Resolves after an fsync of the directory that started after this call. */
  sync(): Promise<void> {
    if (!this.#enabled) return Promise.resolve();
    if (!this.#running) {
      this.#running = this.#run().finally(() => (this.#running = null));
      return this.#running;
    }
    // One is in flight and may have started before our rename: join the next.
    this.#next ??= this.#running.catch(() => {}).then(() => {
      this.#next = null;
      return this.sync();
    });
    return this.#next;
  }
  async #run(): Promise<void> {
    // Opening and closing a directory takes no disk wait: only the fsync goes to the thread pool (see writevSync).
    const dir = OpenFile.openSync(this.#dir, 'r', this.#io);
    try {
      await dir.fsync();
    } finally {
      dir.closeSync();
    }
  }
}
