// Promise wrappers over the callback fs API (cheaper than FileHandle on the
// hot path) and the shared directory fsync used for group commit.

import fs from 'node:fs';

export const p = {
  open: (f: string, flags: string) => new Promise<number>((res, rej) => fs.open(f, flags, 0o600, (e, fd) => (e ? rej(e) : res(fd)))),
  writev: (fd: number, bufs: Buffer[]) =>
    new Promise<void>((res, rej) => {
      const total = bufs.reduce((n, b) => n + b.length, 0);
      fs.writev(fd, bufs, (e, n) => (e ? rej(e) : n === total ? res() : writeRest(fd, bufs, n).then(res, rej)));
    }),
  fsync: (fd: number) => new Promise<void>((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res()))),
  /** Data and the size that reaches it (enough for an appended file), not other metadata. */
  fdatasync: (fd: number) => new Promise<void>((res, rej) => fs.fdatasync(fd, (e) => (e ? rej(e) : res()))),
  close: (fd: number) => new Promise<void>((res, rej) => fs.close(fd, (e) => (e ? rej(e) : res()))),
  rename: (a: string, b: string) => new Promise<void>((res, rej) => fs.rename(a, b, (e) => (e ? rej(e) : res()))),
  /** Remove a file; one that is already gone is not an error. */
  unlink: (f: string) => new Promise<void>((res, rej) => fs.unlink(f, (e) => (!e || e.code === 'ENOENT' ? res() : rej(e)))),
};

async function writeRest(fd: number, bufs: Buffer[], written: number): Promise<void> {
  // A short writev is rare (disk full, signals); finish with plain writes.
  const all = Buffer.concat(bufs).subarray(written);
  let off = 0;
  while (off < all.length) {
    off += await new Promise<number>((res, rej) => fs.write(fd, all, off, all.length - off, null, (e, n) => (e ? rej(e) : res(n))));
  }
}

/** Shares one fsync of a directory among all callers waiting at the same time. */
export class DirSync {
  readonly #dir: string;
  readonly #enabled: boolean;
  #running: Promise<void> | null = null;
  #next: Promise<void> | null = null;
  constructor(dir: string, enabled: boolean) {
    this.#dir = dir;
    this.#enabled = enabled;
  }
  /** Resolves after an fsync of the directory that started after this call. */
  sync(): Promise<void> {
    if (!this.#enabled) return Promise.resolve();
    if (!this.#running) {
      this.#running = this.#run().finally(() => (this.#running = null));
      return this.#running;
    }
    // One is in flight and may have started before our rename: join the next.
    this.#next ??= this.#running.then(() => {
      this.#next = null;
      return this.sync();
    });
    return this.#next;
  }
  async #run(): Promise<void> {
    const fd = await p.open(this.#dir, 'r');
    try {
      await p.fsync(fd);
    } finally {
      await p.close(fd);
    }
  }
}

