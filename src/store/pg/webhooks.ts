// PostgreSQL implementation of WebhookStore (src/store/webhooks.ts). Placeholder: being built (issue 17).
import type { SyncPgClient } from './sync-client.ts';
import type { Transaction } from './tx.ts';
import type { WebhookStore } from '../webhooks.ts';

export function pgWebhookStore(_db: SyncPgClient, _tx: Transaction): WebhookStore {
  throw new Error('the PostgreSQL webhook store is not built yet');
}
