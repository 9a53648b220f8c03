// `domains[].delivery: discard`: the message was durably queued, and that is
// all (Postfix's discard(8)): sink-hole domains and load tests. Reported as
// a final delivery, so a sender who asked for success notices gets one.

import type { DeliveryJob, DeliveryResult, Transport } from './types.ts';
import { reply } from './reply.ts';

const DISCARDED: DeliveryResult = Object.freeze({ status: 'ok', reply: Object.freeze(reply(250, '2.0.0', 'discarded')), relay: null, tls: null, successDsn: 'delivered' });

export class DiscardTransport implements Transport {
  readonly name = 'discard';

  deliver(job: DeliveryJob): Promise<DeliveryResult[]> {
    // One shared, frozen result: this runs once per message under load.
    return Promise.resolve(job.indices.map(() => DISCARDED));
  }
}
