// Removes forged Authentication-Results fields. RFC 8601 §5: a border MTA
// MUST remove (or rename) any Authentication-Results field that claims our
// authserv-id, because a reader trusts that name to mean "checked by us".
// Fields with other authserv-ids are left alone (another ADMD's results,
// and §5 says they can simply be ignored by our readers).
//
// A streaming filter over the header section, holding only the field being
// decided: a field is classified when its first line is complete, and an
// Authentication-Results field is held until its authserv-id (the first
// token of the value, after any CFWS, RFC 8601 §2.2) is known — normally
// within that first line. Everything after the header section passes
// through untouched. Memory is bounded by MAX_LINE_PREFIX and MAX_HELD.

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HT = 0x09;
/** Bytes of a line gathered before it is classified even without its end. */
const MAX_LINE_PREFIX = 1024;
/** An Authentication-Results field held longer than this is decided on what is known (and dropped if still unknown). */
const MAX_HELD = 16 * 1024;

const FIELD = 'authentication-results';

type Mode = 'pass' | 'drop' | 'hold';

export class AuthResultsFilter {
  readonly #id: string;
  /** The header section ended: the rest is body. */
  #done = false;
  /** Start of the current line while it is not classified yet. */
  #line: Buffer[] = [];
  #lineBytes = 0;
  /** The current line was classified: its remaining bytes follow #mode. */
  #classified = false;
  /** What happens to the current field's bytes. */
  #mode: Mode = 'pass';
  /** The Authentication-Results field being decided. */
  #held: Buffer[] = [];
  #heldBytes = 0;
  /** Fields removed so far. */
  removed = 0;

  /** `authservId`: ours; compared case-insensitively (it is normally a host name). */
  constructor(authservId: string) {
    this.#id = authservId.toLowerCase();
  }

  /** The bytes to keep from `chunk`, in order (views of it where possible). */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.#done) {
        emit(out, pos === 0 ? chunk : chunk.subarray(pos));
        break;
      }
      const lf = chunk.indexOf(LF, pos);
      const end = lf === -1 ? chunk.length : lf + 1;
      const piece = chunk.subarray(pos, end);
      pos = end;
      if (this.#classified) {
        this.#route(piece, out);
      } else {
        this.#line.push(piece);
        this.#lineBytes += piece.length;
        if (lf !== -1 || this.#lineBytes >= MAX_LINE_PREFIX) {
          const line = this.#line.length === 1 ? this.#line[0]! : Buffer.concat(this.#line);
          this.#line = [];
          this.#lineBytes = 0;
          this.#classified = true;
          this.#classify(line, lf !== -1, out);
        }
      }
      if (lf !== -1) this.#classified = false;
    }
    return out;
  }

  /** The message ended (perhaps without a header/body separator): what is still held. */
  end(): Buffer[] {
    const out: Buffer[] = [];
    if (this.#line.length) {
      const line = Buffer.concat(this.#line);
      this.#line = [];
      this.#classify(line, true, out);
    }
    this.#decide(out, true);
    this.#done = true;
    return out;
  }

  #classify(line: Buffer, complete: boolean, out: Buffer[]): void {
    const first = line[0]!;
    if (complete && (line.length === 1 || (line.length === 2 && first === CR)) && line[line.length - 1] === LF) {
      // The empty line: the header section is over (RFC 5322 §2.1).
      this.#decide(out, true);
      emit(out, line);
      this.#done = true;
      return;
    }
    if (first === SP || first === HT) {
      // A continuation line of the current field (RFC 5322 §2.2.3).
      this.#route(line, out);
      return;
    }
    this.#decide(out, true);
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.toString('latin1', 0, colon).trimEnd().toLowerCase() : '';
    this.#mode = name === FIELD ? 'hold' : 'pass';
    this.#route(line, out);
  }

  #route(piece: Buffer, out: Buffer[]): void {
    if (this.#mode === 'pass') return emit(out, piece);
    if (this.#mode === 'drop') return;
    this.#held.push(piece);
    this.#heldBytes += piece.length;
    this.#decide(out, this.#heldBytes > MAX_HELD);
  }

  /**
   * Decide the held field if its authserv-id is known, or `final` (the
   * field is over, or too long to keep holding): ours is dropped, another
   * is passed on; a field whose id never became clear is dropped when cut
   * short, kept when it simply has none (it claims nothing).
   */
  #decide(out: Buffer[], final: boolean): void {
    if (this.#mode !== 'hold') return;
    const text = Buffer.concat(this.#held).toString('latin1');
    const id = authservIdOf(text.slice(text.indexOf(':') + 1));
    if (id === undefined && !final) return;
    const complete = this.#heldBytes <= MAX_HELD;
    const ours = id === undefined ? !complete : id.toLowerCase() === this.#id;
    if (ours) {
      this.removed++;
      this.#mode = 'drop';
    } else {
      for (const b of this.#held) emit(out, b);
      this.#mode = 'pass';
    }
    this.#held = [];
    this.#heldBytes = 0;
  }
}

/**
 * The authserv-id at the start of a field value (RFC 8601 §2.2:
 * [CFWS] authserv-id, a token or a quoted-string); undefined while it is
 * not complete yet (the value may continue on the next line).
 */
export function authservIdOf(value: string): string | undefined {
  let i = 0;
  // Skip CFWS: whitespace, line breaks and (nested) comments with quoted-pairs.
  for (;;) {
    while (i < value.length && /[ \t\r\n]/.test(value[i]!)) i++;
    if (value[i] !== '(') break;
    let depth = 0;
    for (; i < value.length; i++) {
      const c = value[i];
      if (c === '\\') i++;
      else if (c === '(') depth++;
      else if (c === ')' && --depth === 0) break;
    }
    if (i >= value.length) return undefined; // the comment is not closed yet
    i++;
  }
  if (i >= value.length) return undefined;
  if (value[i] === '"') {
    let s = '';
    for (i++; i < value.length; i++) {
      const c = value[i]!;
      if (c === '\\') s += value[++i] ?? '';
      else if (c === '"') return s;
      else if (c !== '\r' && c !== '\n') s += c;
    }
    return undefined;
  }
  const m = /^[^\s;()"]+/.exec(value.slice(i));
  const token = m ? m[0] : '';
  // The token is complete once something follows it.
  return i + token.length < value.length ? token : undefined;
}

/** Appends a view, merged with the previous one when it continues it in memory (one write per run of kept bytes). */
function emit(out: Buffer[], b: Buffer): void {
  if (b.length === 0) return;
  const last = out[out.length - 1];
  if (last && last.buffer === b.buffer && last.byteOffset + last.length === b.byteOffset) {
    out[out.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + b.length);
  } else out.push(b);
}
