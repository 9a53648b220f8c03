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
  /**
   * Set only on mail from outside (port 25, not authenticated, not from a
   * trusted network): whether its reverse-path was verified, which decides
   * whether DSNs may go to it (src/bounce/backscatter.ts). Absent: our own
   * users' or locally generated mail, or a queue file written before this
   * field existed; those get DSNs as the sender asked.
   */
  outside?: SenderCheck | undefined;
}

/** How the reverse-path of mail from outside was verified, as recorded at acceptance. */
export interface SenderCheck {
  /**
   * 'spf': SPF pass for the MAIL FROM domain itself (RFC 7208 §2.4);
   * 'dkim': a DKIM pass whose d= shares the MAIL FROM domain's
   * organizational domain (relaxed alignment, RFC 7489 §3.1.1);
   * null: not verified, so no DSN goes to it.
   */
  verified: 'spf' | 'dkim' | null;
  /** The domain that passed: the MAIL FROM domain (spf) or the signature's d= (dkim). */
  domain?: string | undefined;
  /** For logs and `tern queue show`, e.g. "spf=pass example.org", "spf=fail, no aligned dkim pass", "inbound checks disabled". */
  detail: string;
}

/** A DSN that was asked for (or due by default) but not sent. */
export interface SuppressedDsn {
  kind: 'failed' | 'delayed' | 'delivered' | 'relayed';
  /** Ms since the epoch. */
  at: number;
  /** The recipients it would have reported on. */
  recipients: string[];
  /** e.g. "sender not verified (spf=fail, no aligned dkim pass)". */
  reason: string;
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
  /** DSNs not sent to an unverified sender (backscatter, RFC 5321 §6.2), for `tern queue show`. */
  dsnSuppressed?: SuppressedDsn[] | undefined;
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
