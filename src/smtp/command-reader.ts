// Splits the client's byte stream into command lines (RFC 5321 §2.3.8,
// §4.1.1). Socket-free; it keeps leftover bytes between chunks, and hands
// the unread rest back when the session switches to DATA/BDAT/TLS.
//
// Cost: linear in the input however it is cut. Each octet is searched for
// LF once; a line that arrives in pieces is joined once, when its LF comes;
// chunks that arrive while the session is busy wait in a queue instead of
// being appended to the unread rest (a client trickling one octet per
// packet must not make every packet copy what is already buffered).

export type CommandLine =
  | { kind: 'line'; text: string }
  /** The line broke a rule; it was consumed and must get an error reply. */
  | { kind: 'error'; error: 'bare-lf' | 'bare-cr' | 'too-long' | 'bad-utf8' };

import { isUtf8 } from 'node:buffer';

const CR = 0x0d;
const LF = 0x0a;
const EMPTY = Buffer.alloc(0);

export class CommandReader {
  /** The chunk being read from; #buf[#pos, end) is unconsumed and not yet searched. */
  #buf: Buffer = EMPTY;
  #pos = 0;
  /** The start of the current line from earlier chunks (copies: no LF in them). */
  #partial: Buffer[] = [];
  #partialLength = 0;
  /** Chunks received after #buf, not looked at yet (#queue[#queueHead] is next). */
  #queue: Buffer[] = [];
  #queueHead = 0;
  #queuedLength = 0;
  /** Inside an over-long line: drop bytes until its LF. */
  #discarding = false;
  readonly #maxLength: number;

  /** @param maxLength longest command line in octets, CRLF included (§4.5.3.1.4: 512). */
  constructor(maxLength: number) {
    this.#maxLength = maxLength;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.#pos >= this.#buf.length && this.#queueHead === this.#queue.length) {
      this.#buf = chunk;
      this.#pos = 0;
    } else {
      this.#queue.push(chunk);
      this.#queuedLength += chunk.length;
    }
  }

  /** Bytes received but not yet consumed. */
  get buffered(): number {
    return this.#partialLength + (this.#buf.length - this.#pos) + this.#queuedLength;
  }

  /** Next complete line, or null when more input is needed. */
  next(): CommandLine | null {
    for (;;) {
      const buf = this.#buf;
      const start = this.#pos;
      const lf = buf.indexOf(LF, start);
      if (lf >= 0) return this.#line(buf, start, lf);
      // All of #buf[start, end) belongs to the current line: it is never searched again.
      if (!this.#discarding && buf.length > start) {
        this.#partialLength += buf.length - start;
        if (this.#partialLength > this.#maxLength) {
          // Keep memory bounded: forget the line, remember to skip its rest.
          this.#discarding = true;
          this.#partial = [];
          this.#partialLength = 0;
        } else {
          // A copy, so that a few octets do not hold a whole chunk in memory.
          this.#partial.push(Buffer.from(buf.subarray(start)));
        }
      }
      if (this.#queueHead === this.#queue.length) {
        this.#buf = EMPTY;
        this.#pos = 0;
        return null;
      }
      const chunk = this.#queue[this.#queueHead]!;
      this.#queue[this.#queueHead++] = EMPTY;
      this.#queuedLength -= chunk.length;
      if (this.#queueHead === this.#queue.length) {
        this.#queue = [];
        this.#queueHead = 0;
      }
      this.#buf = chunk;
      this.#pos = 0;
    }
  }

  /** The line ending at #buf[lf] (with #partial before #buf[start, lf]): consume and judge it. */
  #line(buf: Buffer, start: number, lf: number): CommandLine {
    this.#pos = lf + 1;
    if (this.#pos === buf.length && this.#queueHead === this.#queue.length) {
      // All consumed: drop the chunk now, not at the next push (an idle
      // session then holds no input buffer at all).
      this.#buf = EMPTY;
      this.#pos = 0;
    }
    const length = this.#partialLength + lf + 1 - start;
    const partial = this.#partial;
    if (partial.length > 0) {
      this.#partial = [];
      this.#partialLength = 0;
    }
    if (this.#discarding) {
      this.#discarding = false;
      return { kind: 'error', error: 'too-long' };
    }
    if (length > this.#maxLength) return { kind: 'error', error: 'too-long' };
    // Joined once, at its end: at most maxLength octets.
    const whole = partial.length === 0 ? buf.subarray(start, lf + 1) : Buffer.concat([...partial, buf.subarray(start, lf + 1)], length);
    return judge(whole);
  }

  /** Hand over everything not yet consumed (for DATA, BDAT) and forget it. */
  takeRest(): Buffer {
    const rest = this.#pos < this.#buf.length ? this.#buf.subarray(this.#pos) : EMPTY;
    const queued = this.#queue.slice(this.#queueHead);
    const all = this.#partial.length + queued.length === 0 ? rest : Buffer.concat([...this.#partial, rest, ...queued]);
    this.#buf = EMPTY;
    this.#pos = 0;
    this.#partial = [];
    this.#partialLength = 0;
    this.#queue = [];
    this.#queueHead = 0;
    this.#queuedLength = 0;
    return all;
  }
}

/** A whole line, its LF included, at most maxLength octets. */
function judge(line: Buffer): CommandLine {
  const lf = line.length - 1;
  if (lf === 0 || line[lf - 1] !== CR) return { kind: 'error', error: 'bare-lf' };
  const end = lf - 1;
  const cr = line.indexOf(CR);
  if (cr < end) return { kind: 'error', error: 'bare-cr' };
  const text = line.subarray(0, end);
  // Commands are ASCII except SMTPUTF8 addresses (RFC 6531), which must be UTF-8.
  if (!isAscii(text)) {
    if (!isUtf8(text)) return { kind: 'error', error: 'bad-utf8' };
    return { kind: 'line', text: text.toString('utf8') };
  }
  return { kind: 'line', text: text.toString('latin1') };
}

function isAscii(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! > 0x7f) return false;
  return true;
}
