// GET /v1/suppressions, GET|PUT|DELETE /v1/suppressions/{address} (CONTRACT.md, "Suppressions").

import type { Route } from './server.ts';

/** What the suppression routes need. */
export interface SuppressionApi {}

export function suppressionRoutes(_api: SuppressionApi): Route[] {
  return [];
}
