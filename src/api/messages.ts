// GET /v1/messages/{id}: a message's state, derived from its stored events
// (so it is there for mail from every source, and after delivery is done).

import type { MessageEvent } from '../events/events.ts';
import type { DeliveryReply } from '../spool/types.ts';
import type { MessageRecord } from '../store/store.ts';

type RecipientStatus = 'queued' | 'deferred' | 'delivered' | 'bounced' | 'expired' | 'suppressed';

interface RecipientView {
  address: string;
  status: RecipientStatus;
  attempts: number;
  lastReply: DeliveryReply | null;
}

/** Events that change a recipient's status (a delay warning does not). */
const STATUS_OF: Partial<Record<MessageEvent['type'], RecipientStatus>> = {
  queued: 'queued',
  deferred: 'deferred',
  delivered: 'delivered',
  bounced: 'bounced',
  expired: 'expired',
  suppressed: 'suppressed',
};

export function messageView(message: MessageRecord, events: MessageEvent[]) {
  const recipients = new Map<string, RecipientView>();
  let tags: Record<string, string> | null = null;
  for (const e of events) {
    let r = recipients.get(e.recipient);
    if (!r) recipients.set(e.recipient, (r = { address: e.recipient, status: 'queued', attempts: 0, lastReply: null }));
    const status = STATUS_OF[e.type];
    if (status) r.status = status;
    if (e.data.attempt !== null) r.attempts = Math.max(r.attempts, e.data.attempt);
    if (e.data.reply) r.lastReply = e.data.reply;
    tags ??= e.data.tags;
  }
  return {
    id: message.id,
    messageId: message.messageId,
    subject: message.subject,
    from: message.sender,
    createdAt: new Date(events[0] ? Date.parse(events[0].timestamp) : message.createdAt).toISOString(),
    tags,
    recipients: [...recipients.values()],
    events,
  };
}
