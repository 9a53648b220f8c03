// The message-content reader for DATA (dot-stuffed, RFC 5321 §4.5.2) and
// BDAT (raw chunks, RFC 3030). Socket-free: it is fed chunks and hands back
// the message bytes as views into those chunks, never copying them.
//
// Strictness, because of SMTP smuggling: only <CRLF>.<CRLF> ends DATA.
// A LF not preceded by CR, a CR not followed by LF and NUL (not allowed in
// 7bit or 8bitmime content, RFC 6152 §3) are errors. An error does not stop
// the reader: it keeps scanning for the real end of data so the dialogue
// stays in sync, and the session rejects the message after the final dot.

export type DataError = 'bare-lf' | 'bare-cr' | 'nul' | 'line-too-long' | 'too-big';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const NUL = 0x00;

// Reader states. A "line start" is only ever the position after CRLF (or the
// very start of the content), so a bare LF can never open an end-of-data dot.
const IN_LINE = 0;
const LINE_START = 1;
const AFTER_CR = 2; // saw CR, expecting LF
const AFTER_DOT = 3; // saw "." at line start (DATA only)
const AFTER_DOT_CR = 4; // saw ".\r" at line start (DATA only)

export interface DataReaderOptions {
  /** Largest message accepted, in octets (after dot-unstuffing). */
  maxSize: number;
  /** Longest text line, in octets including CRLF (RFC 5321 §4.5.3.1.6: 1000). */
  maxLineLength: number;
  /** true for DATA (dot-stuffing and the final dot), false for BDAT chunks. */
  dotStuffed: boolean;
}

export class DataReader {
  /** Octets of message content seen (counted even past maxSize). */
  size = 0;
  /** The first error seen; content from it on is not emitted. */
  error: DataError | null = null;
  /** DATA only: the terminating dot has been read. */
  done = false;

  readonly #maxSize: number;
  readonly #maxLine: number;
  readonly #dotStuffed: boolean;
  #state: number;
  #lineLength = 0;

  constructor(options: DataReaderOptions) {
    this.#maxSize = options.maxSize;
    this.#maxLine = options.maxLineLength;
    this.#dotStuffed = options.dotStuffed;
    this.#state = LINE_START;
  }

  /** True when the content so far ends with CRLF (or is empty). */
  get endsWithLineBreak(): boolean {
    return this.#state === LINE_START;
  }

  /**
   * Feed one chunk. `emit` receives the message content as subarrays of
   * `chunk`. Once an error has been seen nothing more is emitted; what was
   * emitted is exactly the content before the offending octet (for
   * 'too-big', the first maxSize octets), however the input was split into
   * chunks. Returns the number of bytes of `chunk` consumed: all of it,
   * unless the end of DATA was found, in which case the rest is the next
   * pipelined command.
   */
  push(chunk: Buffer, emit: (part: Buffer) => void): number {
    const len = chunk.length;
    let segStart = 0;
    let state = this.#state;
    let line = this.#lineLength;
    // Hand on chunk[segStart, end) as content (or, after an error, only count it).
    const flush = (end: number): void => {
      const n = end - segStart;
      if (n <= 0) return;
      if (this.error === null) {
        const room = this.#maxSize - this.size;
        if (n > room) {
          if (room > 0) emit(chunk.subarray(segStart, segStart + room));
          this.error = 'too-big';
        } else {
          emit(chunk.subarray(segStart, end));
        }
      }
      this.size += n;
      segStart = end;
    };
    // The first error wins, judged by position: content before the
    // offending octet is flushed first, and may itself be too big. Doing
    // this at the octet, not at the end of the chunk, keeps the outcome
    // independent of how the input was split.
    const fail = (at: number, error: DataError): void => {
      if (this.error !== null) return;
      flush(at);
      if (this.error === null) this.error = error;
    };
    // Next LF / NUL at or after a position (len: none), found with the
    // native indexOf and reused until passed: in valid content the LF is the
    // one right after each CR and there is no NUL at all, so each line costs
    // two memchr-speed scans instead of a JavaScript step per octet.
    let nextLf = -1;
    let nextNul = -1;
    let text: string | null = null;
    for (let i = 0; i < len; i++) {
      const b = chunk[i]!;
      switch (state) {
        case IN_LINE: {
          // Searched in the chunk's latin1 text (made once per chunk, one
          // character per octet): String#indexOf is a V8 builtin, far cheaper
          // to call once per line than Buffer#indexOf's C++ binding.
          text ??= chunk.toString('latin1');
          let cr = text.indexOf('\r', i);
          if (cr < 0) cr = len;
          if (nextLf < i) {
            nextLf = text.indexOf('\n', i);
            if (nextLf < 0) nextLf = len;
          }
          if (nextNul < i) {
            nextNul = text.indexOf('\0', i);
            if (nextNul < 0) nextNul = len;
          }
          const stop = Math.min(cr, nextLf, nextNul);
          // `line` counts octets before CRLF; the limit includes the CRLF.
          const allowed = this.#maxLine - 2 - line;
          if (stop - i > allowed) fail(i + allowed, 'line-too-long');
          line += stop - i;
          if (stop === len) {
            i = len;
            continue;
          }
          i = stop;
          const c = chunk[i]!;
          if (c === CR) state = AFTER_CR;
          else if (c === LF) fail(i, 'bare-lf');
          else fail(i, 'nul');
          continue;
        }
        case AFTER_CR:
          if (b === LF) {
            state = LINE_START;
            line = 0;
            continue;
          }
          // The CR (content, already counted or in the segment) was bare.
          fail(i, 'bare-cr');
          state = IN_LINE;
          i--; // re-examine this byte as ordinary content
          continue;
        case LINE_START:
          if (this.#dotStuffed && b === DOT) {
            // Drop the dot: either stuffing (§4.5.2) or the start of the end.
            flush(i);
            segStart = i + 1;
            state = AFTER_DOT;
            continue;
          }
          state = IN_LINE;
          i--;
          continue;
        case AFTER_DOT:
          if (b === CR) {
            state = AFTER_DOT_CR;
            continue;
          }
          // ".x" is a stuffed line; ".\n" is a bare LF, never an end.
          line = 0;
          state = IN_LINE;
          i--;
          continue;
        case AFTER_DOT_CR:
          if (b === LF) {
            // <CRLF>.<CRLF>: the content ends before the dot (already skipped).
            this.done = true;
            this.#state = LINE_START;
            this.#lineLength = 0;
            return i + 1; // nothing of ".\r\n" is content
          }
          // ".\rX": the CR was content after all, and a bare one. The error
          // is placed at the CR, which is never emitted: when it arrived in
          // the previous chunk it can no longer be handed on as a view.
          if (i > 0) {
            fail(i - 1, 'bare-cr'); // the CR stays in the segment, counted later
          } else {
            fail(0, 'bare-cr');
            this.size++; // the held CR
          }
          state = IN_LINE;
          line = 1;
          i--;
          continue;
      }
    }
    // A held ".\r" (at most the CR is in this chunk) is judged with the next
    // chunk; a content CR at the end of the chunk is emitted now and judged
    // with the next chunk.
    if (state !== AFTER_DOT_CR) flush(len);
    this.#state = state;
    this.#lineLength = line;
    return len;
  }

  /**
   * BDAT only: called after the LAST chunk. A message may not end in a
   * lone CR; a missing final CRLF is the session's to add.
   */
  finish(): void {
    if (this.#state === AFTER_CR) this.#fail('bare-cr');
  }

  #fail(error: DataError): void {
    if (this.error === null) this.error = error;
  }
}
