// The body of a webhook POST (CONTRACT.md, "Webhooks"): {"type",
// "timestamp", "data": <event>}, where <event> is the event exactly as
// GET /v1/events shows it. That route serializes through eventSchema, which
// keeps only the fields the schema names (fast-json-stringify drops the
// rest, such as tls.peer), so the payload is projected through the same
// schema: a receiver sees one shape of event wherever it reads it.

import type { MessageEvent } from '../events/events.ts';
import { eventSchema } from '../api/schemas.ts';

type Schema = { type?: string | readonly string[]; properties?: Record<string, Schema>; additionalProperties?: boolean | Schema };

/** A function that keeps only what `schema` names of a value, in the schema's order (as the route's serializer writes it). */
type Projector = (value: unknown) => unknown;

/**
 * The projection of `schema`, made once: a walk of the schema's properties
 * for every event cost a few microseconds per event, which a webhook for
 * every event pays twice per message (docs/webhooks.md, "Cost").
 */
function projector(schema: Schema): Projector {
  if (!schema.properties) return (v) => v;
  const fields = Object.entries(schema.properties).map(([key, s]) => [key, projector(s)] as const);
  return (value) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
    const v = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [key, project] of fields) if (v[key] !== undefined) out[key] = project(v[key]);
    return out;
  };
}

const projectEvent = projector(eventSchema as unknown as Schema);

/** The event as the API shows it. */
export function publicEvent(event: MessageEvent): unknown {
  return projectEvent(event);
}

/**
 * The bytes every attempt of this event POSTs (to every webhook). Also made
 * from the event's stored JSON when an outbox row is claimed from the store
 * (a retry, or after a restart): the same bytes, since JSON keeps every
 * value the projection keeps and the projection fixes the order.
 */
export function webhookPayload(event: MessageEvent): string {
  return JSON.stringify({ type: event.type, timestamp: event.timestamp, data: publicEvent(event) });
}
