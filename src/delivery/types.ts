// The one transport interface (docs/architecture.md): Maildir, discard, remote MX,
// smarthost and LMTP all take a message and some of its recipients
// and return one structured result per recipient. Transports never decide
// retries; the scheduler does. The scheduler knows no transport by name: it
// asks a Router where each recipient goes and hands the job to that
// destination's transport.

import type { Readable } from 'node:stream';
import type { DeliveryReply, Envelope, QueuedMessage } from '../spool/types.ts';

export type { DeliveryReply } from '../spool/types.ts';

/** ok: done; tempfail: try again later (4xx, network, disk); permfail: give up on it (5xx), a bounce follows. */
export type DeliveryStatus = 'ok' | 'tempfail' | 'permfail';

/** The host whose reply a result carries (its name as routed, the address we connected to). */
export interface Relay {
  host: string;
  ip: string;
  port: number;
}

/** The TLS of the connection that carried the transaction. */
export interface TlsUsed {
  /** e.g. "TLSv1.3" */
  version: string;
  /** e.g. "TLS_AES_256_GCM_SHA384" (the standard name) */
  cipher: string;
  /** The certificate verified (chain and name), whether or not that was required (RFC 7435). */
  verified: boolean;
  /** The certificate's subject CN, when there is one. */
  peer?: string | undefined;
  /**
   * The recipient domain's policy that judged the session: 'dane' (RFC 7672),
   * 'mta-sts' (RFC 8461 enforce), 'mta-sts-testing' (checked, only reported).
   * Absent: opportunistic TLS (RFC 7435).
   */
  policy?: 'dane' | 'mta-sts' | 'mta-sts-testing' | undefined;
}

/**
 * Who tells a sender who asked for success notices (NOTIFY=SUCCESS, RFC 3461 §4.1):
 * - 'delivered': this was the final delivery (mailbox, discard, LMTP): we report it (§5.2.3);
 * - 'relayed': the next hop does not speak DSN: we report that we relayed it (§5.2.2);
 * - 'none': the next hop took our DSN parameters and reports from now on (§5.2.1); also every failure.
 */
export type SuccessDsn = 'delivered' | 'relayed' | 'none';

/** What a transport reports for one recipient. */
export interface DeliveryResult {
  status: DeliveryStatus;
  reply: DeliveryReply;
  /** The host that gave this reply; null when the reply is our own (local delivery, no host reachable, DNS). */
  relay: Relay | null;
  tls: TlsUsed | null;
  successDsn: SuccessDsn;
}

/** One delivery by one transport: some recipients of one message. */
export interface DeliveryJob {
  msg: QueuedMessage;
  /** Indexes into msg.envelope.recipients; all routed to the same destination. */
  indices: number[];
  /** The message bytes as delivered (prepended fields, then what is stored: our Received header first). */
  open(): Readable;
}

export interface Transport {
  /** For logs, events and metrics: 'maildir', 'discard', 'mx', 'smarthost', 'lmtp'. */
  readonly name: string;
  /** One result per job index, in order. Never throws: trouble is a tempfail. */
  deliver(job: DeliveryJob): Promise<DeliveryResult[]>;
}

/**
 * Where recipients go. Recipients of one message with the same key travel
 * in one job (one SMTP transaction for remote ones); jobs with the same key
 * share a queue and a concurrency limit in the scheduler.
 */
export interface Destination {
  /** e.g. "local", "discard", "mx:example.org", "smarthost". */
  key: string;
  /** Jobs to this destination in flight at once. */
  limit: number;
  transport: Transport;
}

export interface Router {
  /** Where recipient `index` goes, or null: nothing can deliver it (yet), so it stays queued. */
  route(envelope: Envelope, index: number): Destination | null;
  /** Close idle connections (shutdown). */
  close(): Promise<void>;
}
