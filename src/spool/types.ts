// What a queued message is: its envelope (fixed at acceptance) and its
// delivery state (changes with every attempt).

import type { Body, Notify } from '../smtp/params.ts';

export interface Recipient {
  /** Where this copy goes: local@domain after alias expansion. */
  address: string;
  /** The RCPT TO address the client gave (for DSNs, RFC 3464 §2.3.1). */
  original: string;
  /** RFC 3461 ORCPT, if given. */
  orcpt?: { type: string; address: string } | undefined;
  /** RFC 3461 NOTIFY; [] is NEVER; undefined is the default (FAILURE, DELAY). */
  notify?: Notify[] | undefined;
  /** Set when the recipient is delivered to a local mailbox. */
  mailbox?: { domain: string; localPart: string } | undefined;
  /** Local delivery into this Maildir subfolder (e.g. "Junk" for quarantined mail) instead of the inbox. */
  folder?: string | undefined;
}

export interface Envelope {
  id: string;
  /** Reverse-path; '' for the null sender (bounces). */
  sender: string;
  recipients: Recipient[];
  /** Milliseconds since the epoch when the message was accepted. */
  receivedAt: number;
  body?: Body | undefined;
  smtputf8: boolean;
  ret?: 'FULL' | 'HDRS' | undefined;
  envid?: string | undefined;
  /**
   * Header fields added at commit, delivered before the stored bytes (e.g.
   * DKIM-Signature, Authentication-Results: known only after the body).
   */
  prepend?: string | undefined;
  /** Who handed it to us, for logs and Received. */
  client?: { ip: string; helo?: string | undefined; role?: string | undefined; tls?: string | undefined } | undefined;
}

export type RecipientStatus = 'pending' | 'delivered' | 'failed';

export interface DeliveryState {
  attempts: number;
  /** When the scheduler may try again (ms since epoch). */
  nextAttempt: number;
  status: RecipientStatus[];
  /** Last reply per recipient, for `queue show` and DSNs. */
  lastError: (string | null)[];
  held?: boolean | undefined;
  /** A delay DSN was sent (only one per message). */
  warned?: boolean | undefined;
}

/** A committed message as the scheduler sees it. */
export interface QueuedMessage {
  envelope: Envelope;
  state: DeliveryState;
  /** Octets of the message stored in the queue file (before the envelope trailer). */
  bodyLength: number;
  /** Size of the message as delivered: prepended fields plus the stored bytes. */
  size: number;
  /** True when found by the start-up scan (a crash may have interrupted a delivery). */
  recovered: boolean;
}
