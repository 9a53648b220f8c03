// The message-content reader for DATA (dot-stuffed, RFC 5321 §4.5.2) and
// BDAT (raw chunks, RFC 3030). Socket-free: it is fed chunks and hands back
// the message bytes as views into those chunks (copying only the rest of a
// chunk crowded with stuffing dots, see MAX_VIEWS_PER_CHUNK).
//
// Strictness, because of SMTP smuggling: only <CRLF>.<CRLF> ends DATA.
// A LF not preceded by CR, a CR not followed by LF and NUL (not allowed in
// 7bit or 8bitmime content, RFC 6152 §3) are errors. An error does not stop
// the reader: it keeps scanning for the real end of data so the dialogue
// stays in sync, and the session rejects the message after the final dot.
//
// Cost: linear in the input whatever it holds (issue 11: 20 MB of bare LF
// took 5 s when each LF restarted a search for CR to the end of the chunk).
// Every native search starts where the last one of its kind stopped. Once
// the message is known bad the line checks stop (the reply will be an error
// whatever follows): DATA only looks for "<CRLF>." (a stuffing dot, to keep
// the size exact, or the start of the end) and BDAT only counts. Runs of
// short lines, the most work per octet valid content can ask for, are
// walked in tight loops rather than searched line by line.

export type DataError = 'bare-lf' | 'bare-cr' | 'nul' | 'line-too-long' | 'too-big';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const NUL = 0x00;

/**
 * Views handed on per chunk before the rest of the chunk is copied instead.
 * Each stuffing dot (RFC 5321 §4.5.2) splits the content, and a chunk of
 * "..<CRLF>" lines would otherwise become 16,000 views of 3 octets, each an
 * object for the spool path and the garbage collector (25x the cost of plain
 * text end to end). Ordinary mail has a few dot lines per chunk and stays
 * copy-free.
 */
const MAX_VIEWS_PER_CHUNK = 16;
/** Below this a segment is copied octet by octet (cheaper than a native call). */
const SHORT_COPY = 32;
/**
 * After a line shorter than this, the next line is first walked octet by
 * octet, up to this many octets: calling a native search costs more than
 * walking a short line, and a flood of one-octet lines cost 8x plain text
 * per octet with a search per line. Long lines keep the native search.
 */
const WALK_LIMIT = 16;
/** In a message known bad, dots closer than this (on average) are walked to, not searched for. */
const NATIVE_MIN_STRIDE = 64;

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
   * Feed one chunk. `emit` receives the message content in order, as
   * subarrays of `chunk` (after MAX_VIEWS_PER_CHUNK of them, the rest of the
   * chunk's content as one copy, emitted before push returns). Once an error has been seen nothing more is emitted; what was
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
    let views = 0;
    let copy: Buffer | null = null;
    let copied = 0;
    // Hand on chunk[from, to): a view, or appended to the copy (see MAX_VIEWS_PER_CHUNK).
    const hand = (from: number, to: number): void => {
      if (copy === null) {
        if (++views <= MAX_VIEWS_PER_CHUNK) {
          emit(chunk.subarray(from, to));
          return;
        }
        copy = Buffer.allocUnsafe(len - from); // the rest of the chunk at most
      }
      if (to - from >= SHORT_COPY) copied += chunk.copy(copy, copied, from, to);
      else for (let k = from; k < to; k++) copy[copied++] = chunk[k]!;
    };
    const handCopy = (): void => {
      if (copy !== null && copied > 0) emit(copy.subarray(0, copied));
    };
    // Hand on chunk[segStart, end) as content (or, after an error, only count it).
    const flush = (end: number): void => {
      const n = end - segStart;
      if (n <= 0) return;
      if (this.error === null) {
        const room = this.#maxSize - this.size;
        if (n > room) {
          if (room > 0) hand(segStart, segStart + room);
          this.error = 'too-big';
        } else {
          hand(segStart, end);
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
    let walk = false;
    let denseDots = false;
    for (let i = 0; i < len; i++) {
      const b = chunk[i]!;
      switch (state) {
        case IN_LINE: {
          if (this.error !== null) {
            // Known bad: the rest is only counted and searched for the end.
            // State IN_LINE here means no part of "<CRLF>.<CRLF>" is pending,
            // so the next line-start dot is the next "<CRLF>." at or after i.
            if (this.#dotStuffed) {
              const dot = denseDots ? walkToLineStartDot(chunk, i) : findLineStartDot(chunk, i);
              // Line-start dots close together: a native search per line
              // would cost more than walking the rest of the chunk.
              if (dot >= 0 && dot - i < NATIVE_MIN_STRIDE) denseDots = true;
              if (dot >= 0) {
                // Let the states below drop the dot and judge what follows.
                i = dot - 2;
                state = AFTER_CR;
                continue;
              }
            }
            // No line-start dot in the rest of the chunk: only its last two
            // octets can carry a state into the next chunk (CR, or CRLF).
            const last = chunk[len - 1];
            state = last === CR ? AFTER_CR : last === LF && len - 2 >= i && chunk[len - 2] === CR ? LINE_START : IN_LINE;
            i = len;
            continue;
          }
          if (b === CR && line <= this.#maxLine - 2) {
            // The CR comes first (an empty line's CRLF, or the end of one
            // just cut by the chunk): nothing to search for.
            state = AFTER_CR;
            continue;
          }
          // Where the line's octets stop: its CR, or a LF or NUL (errors).
          let stop = -1;
          if (walk) {
            const end = Math.min(len, i + WALK_LIMIT);
            let j = i;
            while (j < end) {
              const c = chunk[j]!;
              if (c <= CR && (c === CR || c === LF || c === NUL)) break;
              j++;
            }
            if (j < end || j === len) stop = j;
            else walk = false; // a long line after all
          }
          if (stop < 0) {
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
            stop = Math.min(cr, nextLf, nextNul);
          }
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
            walk = line < WALK_LIMIT;
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
            const out = copy as Buffer | null;
            if (out !== null && walk && this.error === null) {
              // Already copying, amid short lines: copy a run of them at
              // once, stuffing dots dropped, instead of a state per octet and
              // a segment per dot. It stops before ".<CR>" (the end, or a bare
              // CR) and anything not short and clean, and where maxSize would
              // be passed: the states below judge those.
              const limit = Math.min(WALK_LIMIT, this.#maxLine - 1);
              let room = this.#maxSize - this.size;
              const before = copied;
              let at = i;
              while (at < len) {
                const first = chunk[at] === DOT ? at + 1 : at;
                if (first > at && (first >= len || chunk[first] === CR)) break;
                const stop = Math.min(len, first + limit);
                let k = first;
                while (k < stop) {
                  const c = chunk[k]!;
                  if (c <= CR && (c === CR || c === LF || c === NUL)) break;
                  k++;
                }
                if (k >= stop || k + 1 >= len || chunk[k] !== CR || chunk[k + 1] !== LF || k + 2 - first > room) break;
                room -= k + 2 - first;
                for (let m = first; m < k + 2; m++) out[copied++] = chunk[m]!;
                at = k + 2;
              }
              if (at > i) {
                this.size += copied - before;
                segStart = at;
                i = at - 1; // the loop's i++ lands on the next line start
                continue;
              }
            }
            segStart = i + 1;
            state = AFTER_DOT;
            continue;
          }
          if (walk && this.error === null) {
            // A run of short lines goes by in one tight loop (no state per octet).
            const next = skipShortLines(chunk, i, Math.min(WALK_LIMIT, this.#maxLine - 1), this.#dotStuffed);
            if (next > i) {
              i = next - 1; // the loop's i++ lands on the next line start
              continue;
            }
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
            handCopy();
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
    handCopy();
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

/**
 * From the line start `at`, past each line that is short (under `limit`
 * octets with its CR), clean (no CR, LF or NUL before its CRLF) and whole
 * in the chunk; with `dotStuffed`, not past a line that starts with ".".
 * Returns the line start where it stopped (`at` when none went by).
 */
function skipShortLines(chunk: Buffer, at: number, limit: number, dotStuffed: boolean): number {
  const len = chunk.length;
  let start = at;
  while (start < len) {
    if (dotStuffed && chunk[start] === DOT) return start;
    const end = Math.min(len, start + limit);
    let k = start;
    while (k < end) {
      const c = chunk[k]!;
      if (c <= CR && (c === CR || c === LF || c === NUL)) break;
      k++;
    }
    if (k >= end || k + 1 >= len || chunk[k] !== CR || chunk[k + 1] !== LF) return start;
    start = k + 2;
  }
  return start;
}

/**
 * Position of the first "." preceded by CRLF whose CR is at or after `from`
 * (-1: none), for a message already known bad. The dots are found with the
 * native memchr (a hundredth of a nanosecond per octet: floods of LF, CR or
 * NUL have no dot at all); once the dots come closer than NATIVE_MIN_STRIDE
 * on average, a call per dot (~20 ns) would cost more than a walk (~1 ns an
 * octet), so the rest is walked. Either way at most about one JavaScript
 * step per octet.
 */
function findLineStartDot(chunk: Buffer, from: number): number {
  const len = chunk.length;
  let j = from + 2;
  let calls = 0;
  while (j < len) {
    const dot = chunk.indexOf(DOT, j);
    if (dot < 0) return -1;
    if (chunk[dot - 1] === LF && chunk[dot - 2] === CR) return dot;
    if (++calls * NATIVE_MIN_STRIDE > dot - from) return walkToLineStartDot(chunk, dot - 1);
    j = dot + 1;
  }
  return -1;
}

/** findLineStartDot, one compare per octet: for chunks dense with dots. */
function walkToLineStartDot(chunk: Buffer, from: number): number {
  const len = chunk.length;
  for (let j = from + 2; j < len; j++) {
    if (chunk[j] === DOT && chunk[j - 1] === LF && chunk[j - 2] === CR) return j;
  }
  return -1;
}
