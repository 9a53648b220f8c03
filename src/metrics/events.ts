// The metrics that the event stream already tells (docs/architecture.md,
// "Events"): messages received, delivery results, and how long delivery
// took. One more subscriber beside the log and the events store, so the
// figures agree with them by construction: a message counted here is one
// the log and the API report too.
//
// A subscriber runs synchronously on the delivery path (events.ts); this
// one does a switch, a comparison and a number increment per event, with
// the labelled children made up front.

import { CounterFamily, type Count } from './counter.ts';
import { HistogramFamily, type Timing } from './histogram.ts';
import type { EventStream, Subscriber } from '../events/events.ts';
import type { MessageSource } from '../spool/types.ts';

const received = new CounterFamily({
  name: 'tern_messages_received_total',
  help: 'Messages accepted and queued (one per message, not per recipient), by source: smtp (port 25), submission (587 and 465), api (HTTP), bounce (DSNs Tern made).',
  labelNames: ['source'],
});

const RECEIVED: Record<MessageSource, Count> = {
  smtp: received.child({ source: 'smtp' }),
  submission: received.child({ source: 'submission' }),
  api: received.child({ source: 'api' }),
  bounce: received.child({ source: 'bounce' }),
};

const deliveries = new CounterFamily({
  name: 'tern_deliveries_total',
  help: 'Delivery attempt results, one per recipient and attempt, by transport (maildir, discard, mx, smarthost) and result: delivered, deferred (4xx, tried again) or bounced (5xx).',
  labelNames: ['transport', 'result'],
});

/** The transports the router has (src/delivery/router.ts); made up front so every series exists from the start. */
export const TRANSPORTS = ['maildir', 'discard', 'lmtp', 'mx', 'smarthost'] as const;

/**
 * From acceptance to delivery: the buckets span a local delivery
 * (milliseconds), a remote one (about a second), and retries (minutes to
 * queue.maxLifetime, 5 days by default).
 */
export const DURATION_BUCKETS = [0.01, 0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86_400, 5 * 86_400];

/**
 * What an operator alerts on is how long mail waits: the time from our 250
 * (or the API's 202) to the recipient's successful delivery, retries
 * included, per transport (a local delivery and a remote one are different
 * distributions). Bounces are left out: a 5xx in a second and an expiry
 * after five days would mix two things in one quantile; they are counted
 * in tern_deliveries_total{result="bounced"}. An attempt's own duration is
 * not measured: a slow remote host shows here, and in the log.
 */
const duration = new HistogramFamily({
  name: 'tern_delivery_duration_seconds',
  help: 'Seconds from acceptance (the 250 or 202) to successful delivery, per recipient, retries included, by transport.',
  labelNames: ['transport'],
  buckets: DURATION_BUCKETS,
});

interface ByTransport {
  delivered: Count;
  deferred: Count;
  bounced: Count;
  duration: Timing;
}

const BY_TRANSPORT = new Map<string, ByTransport>();

/** The transport's children, made once per transport name (the router has four). */
function byTransport(transport: string): ByTransport {
  let t = BY_TRANSPORT.get(transport);
  if (!t) {
    t = {
      delivered: deliveries.child({ transport, result: 'delivered' }),
      deferred: deliveries.child({ transport, result: 'deferred' }),
      bounced: deliveries.child({ transport, result: 'bounced' }),
      duration: duration.child({ transport }),
    };
    BY_TRANSPORT.set(transport, t);
  }
  return t;
}

for (const t of TRANSPORTS) byTransport(t);

/**
 * The subscriber. `now` is the clock (tests pass their own); an event is
 * emitted at the moment it happens, so the clock at the call is its time
 * (reading event.timestamp would parse a string per event).
 */
export function metricsSubscriber(now: () => number = Date.now): Subscriber {
  // A message's 'queued' events (one per recipient) come one after another
  // from one emit loop (src/tern.ts, onQueued): the first of each id counts.
  let lastQueued = '';
  return (event, msg) => {
    switch (event.type) {
      case 'queued':
        if (event.queueId !== lastQueued) {
          lastQueued = event.queueId;
          RECEIVED[event.data.source].inc();
        }
        return;
      case 'delivered': {
        const t = byTransport(event.data.transport ?? 'unknown');
        t.delivered.inc();
        // A clock stepped back since acceptance would give a negative time.
        t.duration.observe(Math.max(0, now() - msg.envelope.receivedAt) / 1000);
        return;
      }
      case 'deferred':
        byTransport(event.data.transport ?? 'unknown').deferred.inc();
        return;
      case 'bounced':
        byTransport(event.data.transport ?? 'unknown').bounced.inc();
        return;
      default:
        // expired, delayed, suppressed, complained: no attempt was made; the log and the API have them.
        return;
    }
  };
}

/** Counts the stream's events from now on; returns the unsubscribe function. */
export function countEvents(events: EventStream): () => void {
  return events.subscribe(metricsSubscriber());
}
