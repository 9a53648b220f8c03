// What a transport reports for one recipient (DESIGN.md: three outcomes).
// Transports never decide retries; the scheduler does.

import type { Readable } from 'node:stream';
import type { QueuedMessage } from '../spool/types.ts';

export type DeliveryResult =
  | {
      kind: 'ok';
      reply: string;
      /** The host that took it (remote delivery), for DSNs and logs. */
      remoteMta?: string | undefined;
      /** The next hop accepted our DSN parameters, so it reports from now on (RFC 3461 §5.2.2). */
      dsnPassed?: boolean | undefined;
      /** The TLS used to the next hop, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384 (unverified CN=mx.example)". */
      tls?: string | undefined;
    }
  /** Try again later (4xx, network, disk). */
  | { kind: 'tempfail'; reply: string; remoteMta?: string | undefined }
  /** Give up on this recipient (5xx); a bounce follows. */
  | { kind: 'permfail'; reply: string; remoteMta?: string | undefined };

/** One delivery to one destination: some recipients of one message. */
export interface RemoteJob {
  msg: QueuedMessage;
  /** The recipients' domain (all share it). */
  domain: string;
  /** Indexes into msg.envelope.recipients. */
  indices: number[];
  /** The message bytes, as stored (our Received header first). */
  open(): Readable;
}

export interface RemoteTransport {
  /** The key deliveries queue and are limited under: the domain, or the smarthost. */
  destinationOf(domain: string): string;
  /** One result per job index, in order. Never throws: trouble is a tempfail. */
  deliver(job: RemoteJob): Promise<DeliveryResult[]>;
  /** Close idle connections (shutdown). */
  close(): Promise<void>;
}
