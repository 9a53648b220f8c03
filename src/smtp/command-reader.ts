// Splits the client's byte stream into command lines (RFC 5321 §2.3.8,
// §4.1.1). Socket-free; it keeps leftover bytes between chunks, and hands
// the unread rest back when the session switches to DATA/BDAT/TLS.

export type CommandLine =
  | { kind: 'line'; text: string }
  /** The line broke a rule; it was consumed and must get an error reply. */
  | { kind: 'error'; error: 'bare-lf' | 'bare-cr' | 'too-long' | 'bad-utf8' };

import { isUtf8 } from 'node:buffer';

const CR = 0x0d;
const LF = 0x0a;
const EMPTY = Buffer.alloc(0);

export class CommandReader {
  #buf: Buffer = EMPTY;
  #pos = 0;
  /** Inside an over-long line: drop bytes until its LF. */
  #discarding = false;
  readonly #maxLength: number;

  /** @param maxLength longest command line in octets, CRLF included (§4.5.3.1.4: 512). */
  constructor(maxLength: number) {
    this.#maxLength = maxLength;
  }

  push(chunk: Buffer): void {
    if (this.#pos >= this.#buf.length) this.#buf = chunk;
    else this.#buf = Buffer.concat([this.#buf.subarray(this.#pos), chunk]);
    this.#pos = 0;
  }

  /** Bytes received but not yet consumed. */
  get buffered(): number {
    return this.#buf.length - this.#pos;
  }

  /** Next complete line, or null when more input is needed. */
  next(): CommandLine | null {
    const buf = this.#buf;
    const start = this.#pos;
    const lf = buf.indexOf(LF, start);
    if (lf === -1) {
      if (buf.length - start > this.#maxLength) {
        // Keep memory bounded: forget the line, remember to skip its rest.
        this.#discarding = true;
        this.#buf = EMPTY;
        this.#pos = 0;
      }
      return null;
    }
    this.#pos = lf + 1;
    if (this.#pos === buf.length) {
      // All consumed: drop the chunk now, not at the next push (an idle
      // session then holds no input buffer at all).
      this.#buf = EMPTY;
      this.#pos = 0;
    }
    if (this.#discarding) {
      this.#discarding = false;
      return { kind: 'error', error: 'too-long' };
    }
    if (lf + 1 - start > this.#maxLength) return { kind: 'error', error: 'too-long' };
    if (lf === start || buf[lf - 1] !== CR) return { kind: 'error', error: 'bare-lf' };
    const end = lf - 1;
    const cr = buf.indexOf(CR, start);
    if (cr < end) return { kind: 'error', error: 'bare-cr' };
    const line = buf.subarray(start, end);
    // Commands are ASCII except SMTPUTF8 addresses (RFC 6531), which must be UTF-8.
    if (!isAscii(line)) {
      if (!isUtf8(line)) return { kind: 'error', error: 'bad-utf8' };
      return { kind: 'line', text: line.toString('utf8') };
    }
    return { kind: 'line', text: line.toString('latin1') };
  }

  /** Hand over everything not yet consumed (for DATA, BDAT) and forget it. */
  takeRest(): Buffer {
    const rest = this.#pos < this.#buf.length ? this.#buf.subarray(this.#pos) : EMPTY;
    this.#buf = EMPTY;
    this.#pos = 0;
    return rest;
  }
}

function isAscii(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! > 0x7f) return false;
  return true;
}
