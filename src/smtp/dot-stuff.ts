// The DATA encoder (RFC 5321 §4.5.2): a "." at the start of a line is sent
// as "..", and the content ends with CRLF "." CRLF. Streaming and copy-free:
// the output is subarrays of the input with a shared one-octet "." buffer
// in between, so a message costs no more memory than the chunk in hand.
//
// The input is the queued message, which intake guarantees to be CRLF-only.
// A line start is taken to be any position after LF, so even a stray bare LF
// cannot leave an unstuffed "." behind it (a receiver that treats LF alone
// as a line end must never see "<LF>.<CR><LF>" from us: SMTP smuggling).

const LF = 0x0a;
const CR = 0x0d;
const DOT_BYTE = 0x2e;

/** Shared and never written to: emitted wherever an extra "." goes. */
const DOT = Buffer.from('.');
const END_AFTER_LF = Buffer.from('.\r\n');
const END_AFTER_CR = Buffer.from('\n.\r\n');
const END_IN_LINE = Buffer.from('\r\n.\r\n');

export class DotStuffer {
  /** The last input octet; LF at first, as the message starts at a line start. */
  #last = LF;

  /** Encode one chunk; `emit` gets the parts in order (views of `chunk`, or the shared "."). */
  push(chunk: Buffer, emit: (part: Buffer) => void): void {
    const len = chunk.length;
    if (len === 0) return;
    let start = 0;
    let i: number;
    if (this.#last === LF) i = 0;
    else {
      const lf = chunk.indexOf(LF);
      i = lf < 0 ? len : lf + 1;
    }
    while (i < len) {
      if (chunk[i] === DOT_BYTE) {
        if (i > start) emit(chunk.subarray(start, i));
        emit(DOT);
        start = i; // the original "." goes out with the next part
      }
      const lf = chunk.indexOf(LF, i);
      if (lf < 0) break;
      i = lf + 1;
    }
    emit(start === 0 ? chunk : chunk.subarray(start));
    this.#last = chunk[len - 1]!;
  }

  /**
   * The end of the content: CRLF "." CRLF, without doubling the CRLF the
   * message already ends with. An empty message is just ".\r\n" (the DATA
   * line's CRLF comes before it). A message ending in a lone CR (which
   * intake does not produce) gets the LF that completes it.
   */
  end(): Buffer {
    return this.#last === LF ? END_AFTER_LF : this.#last === CR ? END_AFTER_CR : END_IN_LINE;
  }
}
