// Reads the header section of a message as it streams past, without
// holding it: counts Received fields (loop detection, RFC 5321 §6.3) and
// notes which fields are present (for submission fix-ups, RFC 6409 §8).
// Only field names are looked at, so memory stays a few bytes per message.

const LF = 0x0a;
/** Field names longer than this are not ones we look for; the rest of the line is skipped. */
const NAME_BYTES = 64;

export class HeaderScanner {
  /** Number of Received fields in the header section. */
  received = 0;
  /** Lower-cased names of the fields seen. */
  readonly fields = new Set<string>();
  /** The blank line ending the header section has been seen. */
  done = false;
  #carry = '';
  #skipRest = false;

  push(chunk: Buffer): void {
    let pos = 0;
    while (!this.done && pos < chunk.length) {
      const lf = chunk.indexOf(LF, pos);
      const end = lf === -1 ? chunk.length : lf;
      if (!this.#skipRest) {
        this.#carry += chunk.toString('latin1', pos, Math.min(end, pos + NAME_BYTES - this.#carry.length));
        if (this.#carry.length >= NAME_BYTES || (lf === -1 && this.#carry.includes(':'))) this.#lineStart();
      }
      if (lf === -1) return;
      if (!this.#skipRest) this.#lineStart();
      if (this.#carry === '\r' || this.#carry === '') this.done = true;
      this.#carry = '';
      this.#skipRest = false;
      pos = lf + 1;
    }
  }

  /** Enough of the line is known to classify it; remember the field name and skip the rest. */
  #lineStart(): void {
    const line = this.#carry;
    if (line === '' || line === '\r') return; // the blank line; handled by the caller
    this.#skipRest = true;
    const c = line.charCodeAt(0);
    if (c === 0x20 || c === 0x09) return; // folded continuation (RFC 5322 §2.2.3)
    const colon = line.indexOf(':');
    if (colon <= 0) return;
    const name = line.slice(0, colon).trimEnd().toLowerCase();
    this.fields.add(name);
    if (name === 'received') this.received++;
  }
}
