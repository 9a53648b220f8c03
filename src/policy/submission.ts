// The rules for mail from our own users (RFC 6409, message submission), as
// stage checks: who must authenticate, which sender addresses a user may
// use, and the per-user limits. They run first in their stages, before the
// edge checks and the plugins.
//
//   mail  530 5.7.0  the submission ports need AUTH (RFC 6409 §4.3, RFC 4954 §6),
//                    except for a trusted network
//         550 5.7.1  MAIL FROM that is not the user's (RFC 6409 §8.1, senders.ts)
//         450 4.7.1  the user's hourly message limit
//   rcpt  450 4.7.1  the user's recipients-per-message limit
//   data  550 5.7.1 / 554 5.6.0 / 552 5.3.4  the originator fields (senders.ts)

import { SmtpError } from '../smtp/reply.ts';
import { formatAddress, type Address } from '../smtp/address.ts';
import { MAX_ORIGINATOR_BYTES } from '../smtp/address-list.ts';
import { mayUseAddress, originatorError } from './senders.ts';
import type { SendRate } from './rate-limit.ts';
import type { Check, DataStep, SessionInfo, Transaction } from './policy.ts';
import type { MessageView } from './data.ts';

export interface SubmissionCheckOptions {
  /** AUTH is configured: without it the submission ports cannot ask for it. */
  authConfigured: boolean;
  isTrusted: (ip: string) => boolean;
  /** Defaults for accounts that set no limit of their own (submission.messagesPerHour: 0 is none). */
  messagesPerHour: number;
  recipientsPerMessage: number;
  /** Per-user message counts; absent: no hourly limit is kept. */
  rate?: SendRate | undefined;
}

export class SubmissionCheck implements Check {
  readonly name = 'submission';
  readonly #o: SubmissionCheckOptions;

  constructor(opts: SubmissionCheckOptions) {
    this.#o = opts;
  }

  mail(s: SessionInfo, from: Address | null, _params: unknown, t: Transaction): void {
    const account = t.account;
    if (s.role !== 'smtp' && this.#o.authConfigured && !account && !this.#o.isTrusted(s.remoteAddress)) {
      throw new SmtpError(530, '5.7.0', 'Authentication required');
    }
    if (!account) return;
    if (from && !mayUseAddress(formatAddress(from), account.sendAs)) {
      throw new SmtpError(550, '5.7.1', `Sender address <${formatAddress(from)}> is not yours to use`);
    }
    const rate = this.#o.rate;
    const limit = account.messagesPerHour ?? this.#o.messagesPerHour;
    if (limit > 0 && (rate?.count(account.address) ?? 0) >= limit) {
      throw new SmtpError(450, '4.7.1', `Message rate limit exceeded (${limit} per hour); try again later`);
    }
    if (rate) {
      // Counted now, not at the end: sessions in parallel must not all pass
      // the check. A transaction that queues nothing gives its place back.
      rate.record(account.address);
      t.onAbandon(() => rate.unrecord(account.address));
    }
  }

  rcpt(_s: SessionInfo, _to: Address, _params: unknown, _from: Address | null, t: Transaction): void {
    const account = t.account;
    if (!account) return;
    const limit = account.recipientsPerMessage ?? this.#o.recipientsPerMessage;
    if (t.rcptCount >= limit) throw new SmtpError(450, '4.7.1', `Too many recipients for this user (limit ${limit} per message)`);
  }
}

/**
 * The sender check of an authenticated user's message (RFC 6409 §8.1,
 * §6.1): every mailbox of From:, Sender:, Resent-From: and Resent-Sender:
 * must be one the user may use (senders.ts: originatorError). Every address
 * is checked, so fields cut at intake's capture limit cannot be checked:
 * refused.
 */
export const senderFieldsCheck: DataStep = {
  name: 'sender-fields',
  data(_s: SessionInfo, msg: MessageView, t: Transaction): void {
    const sendAs = t.account?.sendAs;
    if (!sendAs) return;
    if (msg.originatorsTruncated) {
      throw new SmtpError(552, '5.3.4', `From:, Sender: and Resent- fields too long (limit ${MAX_ORIGINATOR_BYTES} octets together)`);
    }
    const refused = originatorError((field) => msg.originators(field), sendAs);
    if (refused) throw refused;
  },
};
