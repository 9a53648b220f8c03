// Hard bounces put the recipient on the suppression list: a 'bounced' event
// whose reply says the address itself is bad. The subscriber runs on the
// delivery path (src/events/), so it does a few comparisons and hands the
// rest to the list, which writes a turn's worth of additions at once.

import type { EventStream } from '../events/events.ts';
import type { DeliveryReply } from '../spool/types.ts';
import { replyLine } from '../delivery/reply.ts';
import type { SuppressionList } from './list.ts';

/**
 * RFC 3463 §3.2 (address status) and §3.3 (mailbox status), permanent
 * class only (a 4.x.x may heal):
 * - 5.1.x: the destination address is bad (unknown mailbox 5.1.1, domain
 *   that does not exist 5.1.2, bad syntax 5.1.3, moved 5.1.6, null MX
 *   5.1.10 of RFC 7505), except 5.1.7 and 5.1.8, which are about the
 *   *sender's* address and say nothing about the recipient;
 * - 5.2.1: the mailbox is disabled, not accepting messages.
 * A full mailbox (5.2.2) or a refusal by policy (5.7.x) is not a hard bounce.
 */
export function isHardBounce(reply: DeliveryReply): boolean {
  const e = reply.enhanced;
  if (e === null || reply.code < 500 || !e.startsWith('5.')) return false;
  if (e === '5.2.1') return true;
  return e.startsWith('5.1.') && e !== '5.1.7' && e !== '5.1.8';
}

/**
 * Subscribes the rule to the event stream; returns the unsubscribe
 * function. Only remote recipients count: a local mailbox is ours to
 * judge (a Maildir failure is our fault, not the address's), and local
 * mail is never suppressed anyway.
 */
export function suppressHardBounces(events: EventStream, list: SuppressionList): () => void {
  return events.subscribe((event, msg, index) => {
    if (event.type !== 'bounced') return;
    const reply = event.data.reply;
    if (reply === null || !isHardBounce(reply) || msg.envelope.recipients[index]!.mailbox) return;
    const from = event.data.relay ? ` (from ${event.data.relay.host})` : '';
    list.suppress({ address: event.recipient, reason: 'hard-bounce', source: 'bounce', detail: replyLine(reply) + from, createdAt: Date.parse(event.timestamp) });
  });
}
