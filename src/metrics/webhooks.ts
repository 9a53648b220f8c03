// tern_webhook_deliveries_total, declared here for the webhook sender
// (src/webhooks/) to bump: one per POST attempt, by how it went. Declared
// apart from that code only while it is being written; it moves next to
// the POST once that settles (the house rule: a counter lives beside the
// code that bumps it).

import { CounterFamily, type Count } from './counter.ts';

/** delivered: the endpoint answered 2xx; failed: any other status, a timeout or no connection (it is tried again). */
export type WebhookResult = 'delivered' | 'failed';

const attempts = new CounterFamily({
  name: 'tern_webhook_deliveries_total',
  help: 'Webhook POST attempts, by result: delivered (2xx) or failed (another status, a timeout or no connection; tried again).',
  labelNames: ['result'],
});

const BY_RESULT: Record<WebhookResult, Count> = {
  delivered: attempts.child({ result: 'delivered' }),
  failed: attempts.child({ result: 'failed' }),
};

/** One POST attempt's outcome. */
export function countWebhookDelivery(result: WebhookResult): void {
  BY_RESULT[result].inc();
}
