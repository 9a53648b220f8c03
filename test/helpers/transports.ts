// Fake transports for scheduler tests (the transport interface of
// src/delivery/types.ts): results built in one line, a transport that asks
// a function for each recipient's result, and a router over them.

import type { DeliveryJob, DeliveryResult, Transport } from '../../src/delivery/types.ts';
import { DeliveryRouter, type RemoteTransports } from '../../src/delivery/router.ts';
import { DiscardTransport } from '../../src/delivery/discard.ts';

export const ok = (text = 'ok', successDsn: DeliveryResult['successDsn'] = 'delivered'): DeliveryResult => ({
  status: 'ok',
  reply: { code: 250, enhanced: '2.0.0', text },
  relay: null,
  tls: null,
  successDsn,
});

export const tempfail = (text: string, enhanced = '4.3.0', code = 451): DeliveryResult => ({ status: 'tempfail', reply: { code, enhanced, text }, relay: null, tls: null, successDsn: 'none' });

export const permfail = (text: string, enhanced = '5.1.1', code = 550): DeliveryResult => ({ status: 'permfail', reply: { code, enhanced, text }, relay: null, tls: null, successDsn: 'none' });

/** A transport that asks `each` for every recipient of a job, in order. */
export function perRecipient(name: string, each: (job: DeliveryJob, index: number) => DeliveryResult | Promise<DeliveryResult>): Transport {
  return {
    name,
    async deliver(job) {
      const out: DeliveryResult[] = [];
      for (const i of job.indices) out.push(await each(job, i));
      return out;
    },
  };
}

/** The real router over fakes: local recipients to `maildir` (or the real discard for `discard` domains), remote ones to `remote`. */
export function router(opts: { maildir: Transport; discard?: (domain: string) => boolean; remote?: Transport; perDestination?: number }): DeliveryRouter {
  const remote: RemoteTransports | undefined = opts.remote && { mx: opts.remote, smarthost: opts.remote, viaSmarthost: () => false, close: async () => {} };
  return new DeliveryRouter({
    maildir: opts.maildir,
    discard: new DiscardTransport(),
    localDelivery: (d) => (opts.discard?.(d) ? 'discard' : 'maildir'),
    remote,
    perDestination: opts.perDestination ?? 10,
  });
}
