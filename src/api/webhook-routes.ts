// POST/GET /v1/webhooks, DELETE /v1/webhooks/{id} (CONTRACT.md, "Webhooks").

import type { Route } from './server.ts';

/** What the webhook routes need. */
export interface WebhookApi {}

export function webhookRoutes(_api: WebhookApi): Route[] {
  return [];
}
