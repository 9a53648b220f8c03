// Reads the header section of a message as it streams past, without
// holding it: counts Received fields (loop detection, RFC 5321 §6.3), notes
// which fields are present (submission fix-ups, RFC 6409 §8) and keeps the
// whole value of the originator fields (RFC 5322 §3.6.2, §3.6.6: From,
// Sender, Resent-From, Resent-Sender) for the sender check and the DKIM
// signing domain. What is kept is bounded per message
// (MAX_ORIGINATOR_BYTES); past it the scanner says so (`truncated`), and a
// check that needs every address refuses the message rather than read part
// of a field (issue 11: a From: padded past a per-field cut hid a second
// mailbox).

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
/** Field names longer than this are not ones we look for; the rest of the line is skipped. */
const NAME_BYTES = 64;
import { MAX_ORIGINATOR_BYTES } from '../smtp/address-list.ts';

export { MAX_ORIGINATOR_BYTES };
/** Fields whose values are kept: who wrote and who sent the message, also when resent. */
export const ORIGINATOR_FIELDS: readonly string[] = ['from', 'sender', 'resent-from', 'resent-sender'];
const CAPTURE = new Set(ORIGINATOR_FIELDS);
/**
 * Fields kept for display and search (the events store, the dashboard), and
 * TLS-Required (RFC 8689 §3, read by delivery): the first of each, cut
 * silently at DISPLAY_BYTES, and apart from the originators' budget, so a
 * long Subject never makes a message uncheckable.
 */
export const DISPLAY_FIELDS: readonly string[] = ['subject', 'message-id', 'tls-required'];
const DISPLAY = new Set(DISPLAY_FIELDS);
/** Per display field: RFC 5322 §2.1.1's 998-octet line, with room for a fold or two. */
export const DISPLAY_BYTES = 1024;

/** Where the scanner is in the current line. */
const State = {
  /** Nothing of the line seen yet. */
  START: 0,
  /** Only a CR so far: the blank line that ends the header section, if LF follows. */
  START_CR: 1,
  /** Reading the field name. */
  NAME: 2,
  /** White space after the name, before the colon (obs-optional, RFC 5322 §4.5). */
  NAME_WSP: 3,
  /** In the value of a captured field. */
  VALUE: 4,
  /** Not interesting: wait for the end of the line. */
  SKIP: 5,
} as const;
type State = (typeof State)[keyof typeof State];

export class HeaderScanner {
  /** Number of Received fields in the header section. */
  received = 0;
  /** Lower-cased names of the fields seen. */
  readonly fields = new Set<string>();
  /** Values of captured fields as received (latin1, folds kept), in order: a message may carry several From fields. */
  readonly values = new Map<string, string[]>();
  /** The blank line ending the header section has been seen. */
  done = false;
  /** Captured values went over MAX_ORIGINATOR_BYTES and were cut: they cannot be checked whole. */
  truncated = false;
  #state: State = State.START;
  #name = '';
  /** The captured field the current line (or its continuation) belongs to. */
  #capturing: string[] | null = null;
  /** The current capture is a display field: its own budget, cut without `truncated`. */
  #display = false;
  #capturedBytes = 0;

  push(chunk: Buffer): void {
    let pos = 0;
    while (!this.done && pos < chunk.length) {
      const lf = chunk.indexOf(LF, pos);
      const end = lf === -1 ? chunk.length : lf;
      // Only the start of a line is looked at byte by byte; a value is taken (or skipped) whole.
      while (pos < end && this.#state < State.VALUE) this.#lineByte(chunk[pos++]!);
      if (this.#state === State.VALUE && pos < end) this.#append(chunk, pos, end);
      if (lf === -1) return;
      if (this.#state <= State.START_CR) this.done = true;
      this.#state = State.START;
      pos = lf + 1;
    }
  }

  #lineByte(c: number): void {
    switch (this.#state) {
      case State.START:
        if (c === SP || c === HTAB) {
          // Folded continuation (RFC 5322 §2.2.3): part of the previous field, leading white space included.
          this.#state = this.#capturing ? State.VALUE : State.SKIP;
          if (this.#capturing) this.#appendText(String.fromCharCode(c));
          return;
        }
        this.#capturing = null;
        if (c === CR) {
          this.#state = State.START_CR;
          return;
        }
        this.#name = '';
        this.#state = State.NAME;
        this.#nameByte(c);
        return;
      case State.START_CR:
        this.#state = State.SKIP; // a line starting with a lone CR: not a field
        return;
      case State.NAME:
        this.#nameByte(c);
        return;
      case State.NAME_WSP:
        if (c === COLON) this.#fieldStart();
        else if (c !== SP && c !== HTAB) this.#state = State.SKIP;
        return;
    }
  }

  /** ftext = %d33-57 / %d59-126 (RFC 5322 §3.6.8). */
  #nameByte(c: number): void {
    if (c === COLON) {
      this.#fieldStart();
    } else if (c === SP || c === HTAB) {
      this.#state = this.#name ? State.NAME_WSP : State.SKIP;
    } else if (c > 32 && c < 127 && this.#name.length < NAME_BYTES) {
      this.#name += String.fromCharCode(c);
    } else {
      // Not ftext, or a name longer than any we look for.
      this.#state = State.SKIP;
    }
  }

  #fieldStart(): void {
    const name = this.#name.toLowerCase();
    this.#state = State.SKIP;
    if (name === '') return;
    this.fields.add(name);
    if (name === 'received') this.received++;
    if (CAPTURE.has(name)) {
      const list = this.values.get(name) ?? [];
      list.push('');
      this.values.set(name, list);
      this.#capturing = list;
      this.#display = false;
      this.#state = State.VALUE;
    } else if (DISPLAY.has(name) && !this.values.has(name)) {
      const list = [''];
      this.values.set(name, list);
      this.#capturing = list;
      this.#display = true;
      this.#state = State.VALUE;
    }
  }

  #append(chunk: Buffer, from: number, end: number): void {
    if (this.#display) {
      const list = this.#capturing!;
      const room = DISPLAY_BYTES - list[0]!.length;
      if (room > 0) list[0] += chunk.toString('latin1', from, Math.min(end, from + room));
      return;
    }
    const room = MAX_ORIGINATOR_BYTES - this.#capturedBytes;
    if (end - from > room) {
      this.truncated = true;
      end = from + room;
    }
    if (end > from) this.#appendText(chunk.toString('latin1', from, end));
  }

  #appendText(s: string): void {
    if (this.#display) {
      const list = this.#capturing!;
      if (list[0]!.length + s.length <= DISPLAY_BYTES) list[0] += s;
      return;
    }
    if (this.#capturedBytes + s.length > MAX_ORIGINATOR_BYTES) {
      this.truncated = true;
      return;
    }
    this.#capturedBytes += s.length;
    const list = this.#capturing!;
    list[list.length - 1] += s;
  }

  /** A captured field's values: unfolded (RFC 5322 §2.2.3), read as UTF-8 (RFC 6532), trimmed. */
  get(name: string): string[] {
    return (this.values.get(name) ?? []).map((v) => Buffer.from(v.replace(/\r/g, ''), 'latin1').toString('utf8').trim());
  }
}
