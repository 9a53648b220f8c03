// What a queued message is: its envelope (fixed at acceptance) and its
// delivery state (changes with every attempt).

import type { Body, Notify } from '../smtp/params.ts';

/**
 * A reply as delivery saw it: the next hop's SMTP reply (RFC 5321 §4.2),
 * or one of ours in the same form. Carried as is from the transport to the
 * queue state, DSNs, events, logs and `tern queue`; nobody parses a status
 * back out of the text.
 */
export interface DeliveryReply {
  /** 2xx, 4xx or 5xx. */
  code: number;
  /** RFC 3463 status (e.g. "5.1.1") as given (RFC 2034); null when the next hop gave none. */
  enhanced: string | null;
  /** The reply's text, lines joined with a space (code and enhanced code removed). */
  text: string;
}

/** Where a message came from: the listener role, the HTTP API, or a DSN we made. */
export type MessageSource = 'smtp' | 'submission' | 'api' | 'bounce';

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
  /** MAIL FROM … REQUIRETLS (RFC 8689): relay only over TLS a policy authenticates, to servers that offer REQUIRETLS. */
  requireTls?: boolean | undefined;
  /** The message carries `TLS-Required: No` (RFC 8689 §3): recipient TLS policies are reported, not enforced. */
  tlsOptional?: boolean | undefined;
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
  /**
   * How the message entered (events, metrics). Absent in queue files written
   * before this field existed, and where intake does not set it: then it is
   * inferred from `client` (src/events/source.ts).
   */
  source?: MessageSource | undefined;
  /**
   * The sender's own labels (`tags` of POST /v1/messages), carried into
   * every event of the message. Metadata only: never written into the
   * message. Absent on mail from SMTP and in older queue files.
   */
  tags?: Record<string, string> | undefined;
  /**
   * The message's Subject and Message-ID as intake read them (unfolded,
   * UTF-8; the Subject's RFC 2047 words left encoded), cut at 1 KiB: for
   * display and search only (the events store, the dashboard). Absent
   * when the message has none, and in older queue files.
   */
  subject?: string | undefined;
  messageId?: string | undefined;
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
  /** Last reply per recipient (null: not tried yet), for `tern queue`, DSNs and events. */
  lastReply: (DeliveryReply | null)[];
  held?: boolean | undefined;
  /** A delay DSN was sent (only one per message). */
  warned?: boolean | undefined;
  /** Of `attempts`, the rounds `tern queue retry` brought forward: the backoff leaves them out (src/queue/scheduler.ts). */
  manualAttempts?: number | undefined;
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

/**
 * The state as read from a state file. Files written before replies were
 * structured hold `lastError: (string | null)[]` ("451 4.4.1 text"): each
 * string is parsed once, here, at load; from then on only the structure
 * exists (and the next write stores it).
 */
export function upgradeState(raw: DeliveryState & { lastError?: (string | null)[] }): DeliveryState {
  if (Array.isArray(raw.lastReply) || !Array.isArray(raw.lastError)) {
    raw.lastReply ??= raw.status.map(() => null);
    return raw;
  }
  const { lastError, ...state } = raw;
  return { ...state, lastReply: lastError.map((s, i) => (s === null ? null : legacyReply(s, state.status[i] === 'failed'))) };
}

/** RFC 5321 §4.2 code, then RFC 3463 enhanced code when it agrees in class (RFC 2034 §4), then the text. */
const LEGACY = /^([245]\d\d)(?: ([245]\.\d{1,3}\.\d{1,3})(?= |$))? ?(.*)$/s;

function legacyReply(s: string, failed: boolean): DeliveryReply {
  const m = LEGACY.exec(s);
  if (!m) return { code: failed ? 550 : 451, enhanced: null, text: s }; // e.g. "expired after …": ours, no code
  const enhanced = m[2] !== undefined && m[2][0] === m[1]![0] ? m[2] : null;
  return { code: Number(m[1]), enhanced, text: enhanced ? m[3]! : s.slice(3).trimStart() };
}
