// Structured replies (src/spool/types.ts DeliveryReply): made here, shown
// here. Nothing in Tern turns reply text back into a status.

import type { DeliveryReply } from '../spool/types.ts';
import type { ClientReply } from '../smtp/client.ts';

export function reply(code: number, enhanced: string | null, text: string): DeliveryReply {
  return { code, enhanced, text };
}

/** The SMTP client's parsed reply: its code and enhanced code as the parser read them (RFC 2034 §4). */
export function fromClientReply(r: ClientReply): DeliveryReply {
  return { code: r.code, enhanced: r.enhanced ?? null, text: r.lines.join(' ') };
}

/** "550 5.1.1 no such user", as the reply was on the wire (for logs, tables and DSN diagnostics). */
export function replyLine(r: DeliveryReply): string {
  return `${r.code}${r.enhanced ? ' ' + r.enhanced : ''}${r.text ? ' ' + r.text : ''}`;
}

/**
 * The RFC 3463 status of a reply: its enhanced code, or, when the next hop
 * gave none, the generic code of its class (RFC 3463 §3.1: X.0.0).
 */
export function replyStatus(r: DeliveryReply): string {
  return r.enhanced ?? `${Math.floor(r.code / 100)}.0.0`;
}
