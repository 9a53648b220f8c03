// An FsIo for tests: the real calls, plus a ledger of which descriptors are
// open, a hook before every call (to pause it, or to act at that moment) and
// injected failures. A second close of a descriptor, or any call on one that
// is not open, is recorded as a violation instead of reaching the kernel
// (where it would hit whatever reused the number).

import { p, type FsIo } from '../../src/util/fsio.ts';

export interface IoCall {
  op: 'open' | 'openSync' | 'writev' | 'writevSync' | 'writeSync' | 'read' | 'fsync' | 'fdatasync' | 'close' | 'closeSync' | 'rename' | 'renameSync' | 'unlink';
  /** The file the call is about (for descriptor calls: the file it was opened as). */
  path: string;
}

export class FaultIo {
  /** Open descriptors and the file each was opened as. */
  readonly open = new Map<number, string>();
  readonly calls: IoCall[] = [];
  readonly violations: string[] = [];
  opens = 0;
  closes = 0;
  /** Runs before each call; a promise it returns holds the call until it settles. */
  before: ((call: IoCall) => Promise<void> | void) | null = null;
  /** An error to fail the call with (the real call is not made), or undefined. */
  fail: ((call: IoCall) => Error | undefined) | null = null;
  readonly io: FsIo;

  constructor() {
    const fdCall = <T>(op: IoCall['op'], fd: number, run: () => Promise<T>): Promise<T> => {
      const file = this.open.get(fd);
      if (file === undefined) {
        this.violations.push(`${op} on descriptor ${fd}, which is not open`);
        return Promise.reject(Object.assign(new Error(`EBADF: ${op} on a descriptor that is not open`), { code: 'EBADF' }));
      }
      return this.#call({ op, path: file }, run);
    };
    // Synchronous calls on a descriptor: no `before` hook (nothing can wait inside them), but recorded and failable.
    const fdSync = (op: IoCall['op'], fd: number, run: () => void): void => {
      const file = this.open.get(fd);
      if (file === undefined) {
        this.violations.push(`${op} on descriptor ${fd}, which is not open`);
        throw Object.assign(new Error(`EBADF: ${op}`), { code: 'EBADF' });
      }
      this.#record({ op, path: file });
      const err = this.fail?.({ op, path: file });
      if (err) throw err;
      run();
    };
    this.io = {
      open: (file, flags) =>
        this.#call({ op: 'open', path: file }, async () => {
          const fd = await p.open(file, flags);
          this.#opened(fd, file);
          return fd;
        }),
      openSync: (file, flags) => {
        this.#record({ op: 'openSync', path: file });
        const err = this.fail?.({ op: 'openSync', path: file });
        if (err) throw err;
        const fd = p.openSync(file, flags);
        this.#opened(fd, file);
        return fd;
      },
      writev: (fd, bufs) => fdCall('writev', fd, () => p.writev(fd, bufs)),
      writeSync: (fd, data) => fdSync('writeSync', fd, () => p.writeSync(fd, data)),
      writevSync: (fd, bufs) => fdSync('writevSync', fd, () => p.writevSync(fd, bufs)),
      closeSync: (fd) => {
        const file = this.open.get(fd);
        if (file === undefined) {
          this.violations.push(`closeSync of descriptor ${fd}, which is not open`);
          throw Object.assign(new Error('EBADF: closeSync'), { code: 'EBADF' });
        }
        this.open.delete(fd);
        this.closes++;
        this.#record({ op: 'closeSync', path: file });
        // As close: the descriptor is released even when the close fails.
        p.closeSync(fd);
        const err = this.fail?.({ op: 'closeSync', path: file });
        if (err) throw err;
      },
      renameSync: (a, b) => {
        this.#record({ op: 'renameSync', path: a });
        const err = this.fail?.({ op: 'renameSync', path: a });
        if (err) throw err;
        p.renameSync(a, b);
      },
      read: (fd, buf, offset, length, position) => fdCall('read', fd, () => p.read(fd, buf, offset, length, position)),
      fsync: (fd) => fdCall('fsync', fd, () => p.fsync(fd)),
      fdatasync: (fd) => fdCall('fdatasync', fd, () => p.fdatasync(fd)),
      close: (fd) => {
        const file = this.open.get(fd);
        if (file === undefined) {
          this.violations.push(`close of descriptor ${fd}, which is not open`);
          return Promise.reject(Object.assign(new Error('EBADF: close'), { code: 'EBADF' }));
        }
        // Forgotten at once, as the kernel does: the number may be reused from here on.
        this.open.delete(fd);
        this.closes++;
        const call: IoCall = { op: 'close', path: file };
        this.#record(call);
        // A failed close (EIO) still releases the descriptor on Linux: close first, then fail.
        return Promise.resolve(this.before?.(call))
          .then(() => p.close(fd))
          .then(() => {
            const err = this.fail?.(call);
            if (err) throw err;
          });
      },
      rename: (a, b) => this.#call({ op: 'rename', path: a }, () => p.rename(a, b)),
      unlink: (file) => this.#call({ op: 'unlink', path: file }, () => p.unlink(file)),
    };
  }

  #opened(fd: number, file: string): void {
    if (this.open.has(fd)) this.violations.push(`descriptor ${fd} opened while the ledger has it open`);
    this.open.set(fd, file);
    this.opens++;
  }

  #record(call: IoCall): void {
    this.calls.push(call);
  }

  async #call<T>(call: IoCall, run: () => Promise<T>): Promise<T> {
    this.#record(call);
    await this.before?.(call);
    const err = this.fail?.(call);
    if (err) throw err;
    return run();
  }
}

export function errno(code: string, syscall: string): Error {
  return Object.assign(new Error(`${code}: injected, ${syscall}`), { code, syscall });
}
