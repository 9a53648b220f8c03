// Reads the header section of a message as it streams past, without
// holding it: counts Received fields (loop detection, RFC 5321 §6.3), notes
// which fields are present (submission fix-ups, RFC 6409 §8) and keeps the
// value of the few fields policy needs (From, for sender rules), each
// bounded, so memory stays small whatever the message.

const LF = 0x0a;
/** Field names longer than this are not ones we look for; the rest of the line is skipped. */
const NAME_BYTES = 64;
/** The longest captured value (RFC 5322 §2.1.1 line limit, folded lines joined). */
const VALUE_BYTES = 4096;
/** Fields whose values are kept. */
const CAPTURE = new Set(['from', 'sender']);

export class HeaderScanner {
  /** Number of Received fields in the header section. */
  received = 0;
  /** Lower-cased names of the fields seen. */
  readonly fields = new Set<string>();
  /** Unfolded values of captured fields, in order (a message may carry several From fields). */
  readonly values = new Map<string, string[]>();
  /** The blank line ending the header section has been seen. */
  done = false;
  #carry = '';
  #skipRest = false;
  /** The captured field the current line (or its continuation) belongs to. */
  #capturing: string | null = null;

  push(chunk: Buffer): void {
    let pos = 0;
    while (!this.done && pos < chunk.length) {
      const lf = chunk.indexOf(LF, pos);
      const end = lf === -1 ? chunk.length : lf;
      let from = pos;
      if (!this.#skipRest) {
        // Collect the start of the line until the field name is surely in it.
        const take = Math.min(end - pos, NAME_BYTES - this.#carry.length);
        this.#carry += chunk.toString('latin1', pos, pos + take);
        from = pos + take;
        if (this.#carry.length >= NAME_BYTES) this.#lineStart();
      }
      if (this.#skipRest && this.#capturing && from < end) this.#append(chunk.toString('latin1', from, end));
      if (lf === -1) return;
      if (!this.#skipRest) {
        if (this.#carry === '\r' || this.#carry === '') this.done = true;
        else this.#lineStart();
      }
      this.#carry = '';
      this.#skipRest = false;
      pos = lf + 1;
    }
  }

  #append(s: string): void {
    const list = this.values.get(this.#capturing!)!;
    const last = list.length - 1;
    if (list[last]!.length < VALUE_BYTES) list[last] = (list[last]! + s).slice(0, VALUE_BYTES);
  }

  /** Enough of the line is known to classify it; remember the field name and skip the rest. */
  #lineStart(): void {
    const line = this.#carry;
    if (line === '' || line === '\r') return; // the blank line; handled by the caller
    this.#skipRest = true;
    const c = line.charCodeAt(0);
    if (c === 0x20 || c === 0x09) {
      // Folded continuation (RFC 5322 §2.2.3): part of the previous field.
      if (this.#capturing) this.#append(line);
      return;
    }
    this.#capturing = null;
    const colon = line.indexOf(':');
    if (colon <= 0) return;
    const name = line.slice(0, colon).trimEnd().toLowerCase();
    this.fields.add(name);
    if (name === 'received') this.received++;
    if (CAPTURE.has(name)) {
      this.#capturing = name;
      const list = this.values.get(name) ?? [];
      list.push(line.slice(colon + 1));
      this.values.set(name, list);
    }
  }

  /** A captured field's values, unfolded and trimmed. */
  get(name: string): string[] {
    return (this.values.get(name) ?? []).map((v) => v.replace(/\r/g, '').trim());
  }
}
