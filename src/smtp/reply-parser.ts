// A socket-free parser for SMTP replies (RFC 5321 §4.2), the client's half
// of the dialogue. It is fed chunks as they arrive and queues complete
// replies; a multi-line reply ("250-…" lines, then "250 …") is one reply.
//
// Strictness, and where it bends:
// - Every line must start with a three-digit code whose first digit is 2-5
//   (§4.2: 1yz is not used in SMTP), followed by " ", "-" or the line end.
//   All lines of one reply must carry the same code (§4.2.1); a mismatch is
//   a protocol error, not a guess at which code counts.
// - Lines end in CRLF, but a bare LF is accepted as a line end too. Our
//   server refuses bare LF because of smuggling: a bare LF in a message it
//   passes on can be read as a line end by the next hop. A reply is only
//   read, never passed on, so there is no such risk, and refusing it would
//   only make mail to broken-but-working servers fail. A CR anywhere else
//   in the line, or a NUL, is still refused: reply text ends up in logs and
//   DSNs, and those octets there are garbage at best.
// - An enhanced status code (RFC 2034 §4, RFC 3463 §2) is recognised only
//   when its class equals the first digit of the reply code; otherwise it is
//   left in the text ("550 4.1.1 x" has no enhanced code and text "4.1.1 x").
// - A hostile server must not exhaust memory: lines are bounded (default
//   4096 octets with CRLF; §4.5.3.1.5 says 512 but long texts are common)
//   and so are the lines of one reply (default 1000; a big EHLO has ~30).
//   Only the unfinished line is held as bytes, so what one reply can take is
//   about maxLineLength × maxLines.

export interface ParsedReply {
  code: number;
  /** e.g. "5.1.1", only when its class matches the code. */
  enhanced?: string | undefined;
  /** The text of each line, without code, separator and enhanced code. */
  lines: string[];
}

export class ReplyError extends Error {
  override name = 'ReplyError';
}

export const MAX_REPLY_LINE = 4096;
export const MAX_REPLY_LINES = 1000;

const LF = 0x0a;
const CR = 0x0d;
/** RFC 3463 §2: class "." subject (1-3 digits) "." detail (1-3 digits), then a space or the end. */
const ENHANCED = /^([245])\.\d{1,3}\.\d{1,3}(?: |$)/;
const CODE = /^[2-5]\d\d(?:[ -]|$)/;
const BAD_OCTET = /[\0\r]/;

export class ReplyParser {
  readonly #maxLine: number;
  readonly #maxLines: number;
  /** The start of a line whose LF has not arrived yet. */
  #tail: Buffer | null = null;
  /** The reply being assembled (lines so far), or code 0 between replies. */
  #code = 0;
  #enhanced: string | undefined;
  #lines: string[] = [];
  readonly #ready: ParsedReply[] = [];
  #error: ReplyError | null = null;

  constructor(opts: { maxLineLength?: number; maxLines?: number } = {}) {
    this.#maxLine = opts.maxLineLength ?? MAX_REPLY_LINE;
    this.#maxLines = opts.maxLines ?? MAX_REPLY_LINES;
  }

  /** Complete replies waiting to be taken with next(). */
  get count(): number {
    return this.#ready.length;
  }

  /** Nothing received and not yet taken: no reply queued, none begun, no partial line. */
  get idle(): boolean {
    return this.#ready.length === 0 && this.#tail === null && this.#lines.length === 0;
  }

  /** The next complete reply, in order, or null. */
  next(): ParsedReply | null {
    return this.#ready.shift() ?? null;
  }

  /** Feed bytes. Throws ReplyError on a protocol error; the parser is then dead (so is the connection). */
  push(chunk: Buffer): void {
    if (this.#error) throw this.#error;
    let buf = chunk;
    if (this.#tail) {
      buf = Buffer.concat([this.#tail, chunk]);
      this.#tail = null;
    }
    let start = 0;
    for (let lf = buf.indexOf(LF); lf >= 0; lf = buf.indexOf(LF, start)) {
      if (lf + 1 - start > this.#maxLine) this.#fail(`reply line longer than ${this.#maxLine} octets`);
      const end = lf > start && buf[lf - 1] === CR ? lf - 1 : lf;
      this.#line(buf.toString('utf8', start, end));
      start = lf + 1;
    }
    if (start < buf.length) {
      // Without its LF the line is already at the limit: it can only grow past it.
      if (buf.length - start >= this.#maxLine) this.#fail(`reply line longer than ${this.#maxLine} octets`);
      // A copy of at most maxLine octets, so the (possibly large) chunk is not kept alive.
      this.#tail = Buffer.from(buf.subarray(start));
    }
  }

  #line(text: string): void {
    if (!CODE.test(text)) this.#fail(`malformed reply line ${JSON.stringify(text.slice(0, 40))}`);
    if (BAD_OCTET.test(text)) this.#fail('bare CR or NUL in reply line');
    const code = Number(text.slice(0, 3));
    const first = this.#lines.length === 0;
    if (!first && code !== this.#code) this.#fail(`reply code ${code} inside a multi-line ${this.#code} reply`);
    let rest = text.slice(4);
    const m = ENHANCED.exec(rest);
    // RFC 2034 §4: the enhanced code is on every line; the first line's is the reply's.
    if (m && m[1] === text[0] && (first || this.#enhanced !== undefined)) {
      if (first) this.#enhanced = m[0].trimEnd();
      rest = rest.slice(m[0].length);
    }
    if (this.#lines.length >= this.#maxLines) this.#fail(`reply longer than ${this.#maxLines} lines`);
    this.#code = code;
    this.#lines.push(rest);
    if (text[3] === '-') return;
    const reply: ParsedReply = { code, lines: this.#lines };
    if (this.#enhanced !== undefined) reply.enhanced = this.#enhanced;
    this.#ready.push(reply);
    this.#code = 0;
    this.#enhanced = undefined;
    this.#lines = [];
  }

  #fail(message: string): never {
    this.#error = new ReplyError(message);
    this.#tail = null;
    this.#lines = [];
    throw this.#error;
  }
}
