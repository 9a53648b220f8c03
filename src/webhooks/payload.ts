// The body of a webhook POST (CONTRACT.md, "Webhooks"): {"type",
// "timestamp", "data": <event>}, where <event> is the event exactly as
// GET /v1/events shows it. That route serializes through eventSchema, which
// keeps only the fields the schema names (fast-json-stringify drops the
// rest, such as tls.peer), so the payload is projected through the same
// schema: a receiver sees one shape of event wherever it reads it.

import type { MessageEvent } from '../events/events.ts';
import { eventSchema } from '../api/schemas.ts';

type Schema = { type?: string | readonly string[]; properties?: Record<string, Schema>; additionalProperties?: boolean | Schema };

/** `value` with only what `schema` names, in the schema's order (as the route's serializer writes it). */
function project(value: unknown, schema: Schema): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !schema.properties) return value;
  const v = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, s] of Object.entries(schema.properties)) if (v[k] !== undefined) out[k] = project(v[k], s);
  return out;
}

/** The event as the API shows it. */
export function publicEvent(event: MessageEvent): unknown {
  return project(event, eventSchema as unknown as Schema);
}

/** The bytes every attempt of this event POSTs (to every webhook): built once, stored in the outbox. */
export function webhookPayload(event: MessageEvent): string {
  return JSON.stringify({ type: event.type, timestamp: event.timestamp, data: publicEvent(event) });
}
