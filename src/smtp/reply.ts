// SMTP replies and the one error type that carries them.
//
// Every reply Tern sends has a basic code (RFC 5321 §4.2) and, because we
// advertise ENHANCEDSTATUSCODES, an enhanced status code (RFC 2034, RFC 3463)
// that agrees with it in class (2/4/5). The text is always safe to show the
// peer: internal details never reach the wire.

/** A reply to send: code, enhanced status (without the class check), lines. */
export interface Reply {
  code: number;
  /** e.g. "2.1.0"; omitted for the greeting, EHLO and replies before EHLO/HELO-less errors where RFC 2034 §3 says not to. */
  enhanced?: string | undefined;
  lines: string[];
}

/**
 * The one error type for everything that ends in an SMTP reply.
 * `code`/`enhanced`/`text` are public; `cause` is for logs only.
 */
export class SmtpError extends Error {
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
  constructor(code: number, enhanced: string, text: string, options?: { cause?: unknown }) {
    super(`${code} ${enhanced} ${text}`, options);
    this.name = 'SmtpError';
    this.code = code;
    this.enhanced = enhanced;
    this.text = text;
  }

  get temporary(): boolean {
    return this.code >= 400 && this.code < 500;
  }

  toReply(): Reply {
    return { code: this.code, enhanced: this.enhanced, lines: [this.text] };
  }

  /**
   * Anything that is not already an SmtpError becomes a temporary failure:
   * an unknown fault must never turn into a permanent rejection (or a bounce).
   */
  static from(err: unknown): SmtpError {
    if (err instanceof SmtpError) return err;
    return new SmtpError(451, '4.3.0', 'Local error in processing, try again later', { cause: err });
  }
}

/**
 * Format a reply for the wire: all lines joined into one string so the
 * caller writes a multi-line reply in a single socket write (RFC 5321 §4.2.1:
 * "250-" continuation lines, the last with "250 ").
 */
export function formatReply(reply: Reply): string {
  const { code, enhanced, lines } = reply;
  const body = lines.length === 0 ? [''] : lines;
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const sep = i === body.length - 1 ? ' ' : '-';
    const text = body[i]!;
    if (enhanced) out += `${code}${sep}${enhanced}${text ? ' ' + text : ''}\r\n`;
    else out += `${code}${sep}${text}\r\n`;
  }
  return out;
}

export function reply(code: number, enhanced: string | undefined, ...lines: string[]): Reply {
  return { code, enhanced, lines };
}
