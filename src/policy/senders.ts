// Who may send as whom (RFC 6409 §8.1): an authenticated user may use their
// own address and the addresses or whole domains ('@domain') listed for
// them. Used for MAIL FROM (in the session) and for the originator header
// fields (in intake).

import { parseAddressList } from '../smtp/address-list.ts';
import { SmtpError } from '../smtp/reply.ts';

/** True when `address` matches one of `allowed` ("user@domain" exactly, or "@domain"). */
export function mayUseAddress(address: string, allowed: string[]): boolean {
  const a = address.toLowerCase();
  const at = a.lastIndexOf('@');
  const domain = at >= 0 ? a.slice(at) : '';
  // "user+tag@domain" is the user's own address too (plus-addressing).
  const base = at >= 0 ? a.slice(0, at).replace(/\+.*$/, '') + domain : a;
  return allowed.some((p) => {
    const q = p.toLowerCase();
    return q.startsWith('@') ? q === domain : q === a || q === base;
  });
}

/** The fields that say who wrote or sent a message (RFC 5322 §3.6.2, resent: §3.6.6), with their names as written in replies. */
const ORIGINATORS: readonly (readonly [field: string, label: string])[] = [
  ['from', 'From:'],
  ['sender', 'Sender:'],
  ['resent-from', 'Resent-From:'],
  ['resent-sender', 'Resent-Sender:'],
];

/**
 * The sender check of submitted mail (RFC 6409 §8.1, §6.1): every mailbox
 * of every From:, Sender:, Resent-From: and Resent-Sender: field — a group's
 * members included — must be one the user may use, and From: must name at
 * least one. A reader shows all of them as the author or sender, so checking
 * only the first, or only From:, lets a user sign as someone else.
 *
 * A value that does not parse is refused (554 5.6.0): what a reader makes
 * of it cannot be known, so it cannot be checked. Returns the error to
 * refuse with, or null. `values(field)` gives the unfolded values of a
 * lower-cased field name, one per field in the message.
 */
export function originatorError(values: (field: string) => string[], allowed: string[]): SmtpError | null {
  let fromMailboxes = 0;
  for (const [field, label] of ORIGINATORS) {
    for (const value of values(field)) {
      const list = parseAddressList(value);
      if (!list.ok) return new SmtpError(554, '5.6.0', `Cannot read the addresses in ${label} (${list.error} at offset ${list.offset})`);
      const bad = list.mailboxes.find((m) => !mayUseAddress(m.address, allowed));
      if (bad) return new SmtpError(550, '5.7.1', `Sender address <${printable(bad.address)}> in ${label} is not yours to use`);
      if (field === 'from') fromMailboxes += list.mailboxes.length;
    }
  }
  if (fromMailboxes === 0) return new SmtpError(550, '5.7.1', 'Message has no From: address');
  return null;
}

/** Reply text is ASCII without controls (RFC 5321 §4.2): anything else in a client's address shows as "?". */
function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 256);
}
