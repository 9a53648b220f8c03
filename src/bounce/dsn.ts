// Delivery Status Notifications (RFC 3464) as multipart/report (RFC 6522),
// with enhanced status codes (RFC 3463). This module only builds the message;
// the caller hands it to intake with the null reverse-path (RFC 3461 §6.2,
// RFC 5321 §4.5.5), so a DSN can itself never be bounced.
//
// The MIME is written by hand rather than with nodemailer's composer: the
// report is three fixed parts, message/delivery-status is header-like text
// that must go out verbatim (no transfer encoding), the original is already
// in memory (bounded) when we choose its part type, and hand-writing keeps
// nodemailer out of the runtime dependencies.
//
// Non-ASCII (RFC 6533): when any address, the ENVID or a diagnostic needs
// UTF-8, the report becomes a "global" one: message/global-delivery-status
// (8bit) with `utf-8;` address types in raw UTF-8 (the utf-8-address form,
// RFC 6533 §3) and an 8bit text part. Otherwise everything but the returned
// original is 7-bit ASCII. The returned original is message/global or
// message/global-headers when its header section holds 8-bit octets
// (RFC 6532 §3.7, RFC 6533 §6.3), else message/rfc822 or text/rfc822-headers.

import { randomBytes } from 'node:crypto';
import type { Body } from '../smtp/params.ts';
import type { DeliveryReply, Envelope, Recipient } from '../spool/types.ts';
import { rfc5322Date } from '../intake/intake.ts';
import { replyLine, replyStatus } from '../delivery/reply.ts';

export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed' | 'expanded';

export interface DsnRecipient {
  /** From the envelope (address, original, orcpt, notify). */
  recipient: Recipient;
  action: DsnAction;
  /**
   * The last reply: its enhanced code is the Status (RFC 3464 §2.3.4; the
   * class's X.0.0 when it has none), the reply the Diagnostic-Code (§2.3.6;
   * sanitised here). Absent: the action's generic status, no diagnostic.
   */
  reply?: DeliveryReply | null | undefined;
  /**
   * The host that gave the reply, e.g. 'mx.example.org' → Remote-MTA: dns;
   * mx.example.org, and the diagnostic is of type "smtp". Without it the
   * reply is our own: diagnostic type "X-Tern".
   */
  remoteMta?: string | undefined;
  lastAttempt?: Date | undefined;
  /** Delayed only. */
  willRetryUntil?: Date | undefined;
}

export interface DsnInput {
  /** Our hostname. */
  reportingMta: string;
  /** Of the original message. */
  envelope: Envelope;
  /** All of the same kind for one DSN; those whose NOTIFY does not ask for it are left out. */
  recipients: DsnRecipient[];
  /** Opens the original message. The builder reads at most what it needs, then destroys the stream. */
  original: () => NodeJS.ReadableStream;
  /** Octets of the original to return at most; beyond it (or with RET=HDRS) only the header section goes back. */
  maxOriginal?: number;
  /**
   * Whether a failure DSN may return the whole original. Default: unless
   * RET=HDRS (RFC 3461 §4.3 leaves RET absent to us). The bouncer narrows it
   * for mail from outside (backscatter.ts).
   */
  returnFull?: boolean;
  now?: Date;
  /** From: address, default `MAILER-DAEMON@<reportingMta>`. */
  postmaster?: string;
}

export interface Dsn {
  /** The original envelope sender: the DSN's only recipient. */
  to: string;
  /** The complete RFC 5322 message, CRLF line ends. */
  message: Buffer;
  /** BODY= for the new message: 8BITMIME when any octet is 8-bit (RFC 6152). */
  body: Body;
  /** SMTPUTF8 needed: the To header and envelope recipient are UTF-8 (RFC 6531). */
  smtputf8: boolean;
}

export const DEFAULT_MAX_ORIGINAL = 256 * 1024;
/** Remote replies can be long multi-line texts; more than this is not useful to a human. */
const MAX_DIAGNOSTIC = 2000;
/** Other client- or config-supplied text (addresses, ENVID, host names). */
const MAX_TEXT = 512;
/** Soft line length, RFC 5322 §2.1.1. */
const LINE = 78;
/** Words longer than this are split so no line nears the 998-octet limit (RFC 5322 §2.1.1): 240 chars ≤ 960 octets of UTF-8. */
const MAX_WORD = 240;

/**
 * Whether a recipient wants a DSN of this kind (RFC 3461 §4.1). NOTIFY absent
 * behaves as FAILURE,DELAY; [] is NEVER. Relayed and expanded DSNs are
 * success notices (RFC 3461 §6.2.1-6.2.2).
 */
export function wantsNotice(r: Recipient, action: DsnAction): boolean {
  const n = r.notify;
  if (action === 'failed') return n === undefined || n.includes('FAILURE');
  if (action === 'delayed') return n === undefined || n.includes('DELAY');
  return n !== undefined && n.includes('SUCCESS');
}

/** Null when no DSN may be sent: null sender (RFC 5321 §6.1), or nobody asked for this kind. */
export async function buildDsn(input: DsnInput): Promise<Dsn | null> {
  const env = input.envelope;
  if (env.sender === '') return null;
  const rcpts = input.recipients.filter((r) => wantsNotice(r.recipient, r.action));
  if (rcpts.length === 0) return null;
  const now = input.now ?? new Date();
  const host = clean(input.reportingMta, MAX_TEXT, false);
  const failed = rcpts.some((r) => r.action === 'failed');
  const delayed = !failed && rcpts.some((r) => r.action === 'delayed');

  // RFC 6533: go global when any reported text needs UTF-8.
  const texts = [env.sender, env.envid ?? '', ...rcpts.flatMap((r) => [r.recipient.address, r.recipient.original, r.recipient.orcpt?.address ?? '', r.reply?.text ?? ''])];
  const diagnostic = (r: DsnRecipient) => (r.reply ? t(withoutPaths(replyLine(r.reply)), MAX_DIAGNOSTIC) : undefined);
  const global = texts.some(nonAscii);
  const t = (s: string, max = MAX_TEXT) => clean(s, max, global);

  // RFC 3461 §4.3: RET applies only to failure DSNs; others carry the header section.
  const maxOriginal = input.maxOriginal ?? DEFAULT_MAX_ORIGINAL;
  const wantFull = failed && (input.returnFull ?? env.ret !== 'HDRS');
  const orig = await readOriginal(input.original, maxOriginal, !wantFull);

  // Part 1: for humans.
  const text: string[] = [`This is the mail system at host ${host}.`, ''];
  const intro = failed
    ? 'Your message could not be delivered to one or more recipients.'
    : delayed
      ? 'Your message could not be delivered yet to the recipients below. The mail system will keep trying; you need not send it again.'
      : 'Your message was delivered to the recipients below (or passed on to where they will be reported no further).';
  text.push(...wrap(intro, LINE), '');
  for (const r of rcpts) {
    const rc = r.recipient;
    const expanded = rc.original !== rc.address ? ` (expanded from <${t(rc.original)}>)` : '';
    text.push(`<${t(rc.address)}>${expanded}: ${r.action}, status ${status(r)}`);
    if (r.remoteMta) text.push(...wrap(`remote server ${t(r.remoteMta)} said:`, LINE, '    '));
    const d = diagnostic(r);
    if (d) text.push(...wrap(d, LINE, '    '));
    if (r.action === 'delayed' && r.willRetryUntil) text.push(`    will retry until ${rfc5322Date(r.willRetryUntil)}`);
    text.push('');
  }
  if (orig.error) text.push('The original message could not be read to return it.');
  else if (wantFull && orig.complete) text.push('The original message is attached.');
  else if (wantFull) text.push(...wrap(`The original message is larger than ${maxOriginal} octets; only its header section is attached.`, LINE));
  else text.push('The header section of the original message is attached.');

  // Part 2: RFC 3464 §2.2 per-message fields, then §2.3 per-recipient groups.
  const addrType = global ? 'utf-8' : 'rfc822';
  const status2: string[] = [];
  if (env.envid) status2.push(field('Original-Envelope-Id', t(env.envid)));
  status2.push(field('Reporting-MTA', `dns; ${host}`));
  const from = env.client?.helo ?? (env.client ? `[${env.client.ip}]` : undefined);
  if (from) status2.push(field('Received-From-MTA', `dns; ${t(from)}`));
  status2.push(field('Arrival-Date', rfc5322Date(new Date(env.receivedAt))));
  for (const r of rcpts) {
    const rc = r.recipient;
    status2.push('');
    // §2.3.1: only when the sender gave it (ORCPT); the type is theirs, kept as given.
    if (rc.orcpt) status2.push(field('Original-Recipient', `${t(rc.orcpt.type, 32)}; ${t(rc.orcpt.address)}`));
    status2.push(field('Final-Recipient', `${addrType}; ${t(rc.address)}`));
    status2.push(`Action: ${r.action}`, `Status: ${status(r)}`);
    if (r.remoteMta) status2.push(field('Remote-MTA', `dns; ${t(r.remoteMta)}`));
    const d = diagnostic(r);
    if (d) {
      // §2.3.6: "smtp" only for a reply the remote MTA gave; our own (no connection, expiry) get a private type.
      status2.push(field('Diagnostic-Code', `${r.remoteMta ? 'smtp' : 'X-Tern'}; ${d}`));
    }
    if (r.lastAttempt) status2.push(field('Last-Attempt-Date', rfc5322Date(r.lastAttempt)));
    if (r.action === 'delayed' && r.willRetryUntil) status2.push(field('Will-Retry-Until', rfc5322Date(r.willRetryUntil)));
  }

  // Part 3 (RFC 6522 §3, optional): the original or its header section.
  let part3: { type: string; data: Buffer } | null = null;
  if (!orig.error) {
    const full = wantFull && orig.complete;
    const data = full ? orig.data : headerSection(orig.data, orig.complete);
    const utf8Headers = hasHigh(full ? headerSection(data, true) : data);
    const type = full ? (utf8Headers ? 'message/global' : 'message/rfc822') : utf8Headers ? 'message/global-headers' : 'text/rfc822-headers';
    part3 = { type, data };
  }

  const textBuf = Buffer.from(text.join('\r\n') + '\r\n', 'utf8');
  const statusBuf = Buffer.from(status2.join('\r\n') + '\r\n', 'utf8');
  let boundary: string;
  do boundary = `=_tern_${randomBytes(12).toString('hex')}`;
  while ([textBuf, statusBuf, part3?.data].some((b) => b?.includes(`--${boundary}`)));

  const eightBit = global || (part3 !== null && hasHigh(part3.data));
  const reportType = global ? 'global-delivery-status' : 'delivery-status';
  const postmaster = input.postmaster ?? `MAILER-DAEMON@${host}`;
  const subject = failed ? 'Undelivered Mail Returned to Sender' : delayed ? 'Delayed Mail (still being retried)' : 'Successful Mail Delivery Report';
  const head = [
    field('From', `Mail Delivery System <${clean(postmaster, MAX_TEXT, false)}>`),
    field('To', `<${t(env.sender)}>`),
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${now.getTime().toString(36)}.${randomBytes(8).toString('hex')}@${host}>`,
    'Auto-Submitted: auto-replied', // RFC 3834 §5
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=${reportType};\r\n\tboundary="${boundary}"`,
    ...(eightBit ? ['Content-Transfer-Encoding: 8bit'] : []),
    '',
    'This is a MIME-encapsulated message.',
    '',
  ];
  const cte = (b: Buffer) => (hasHigh(b) ? '\r\nContent-Transfer-Encoding: 8bit' : '');
  const parts: Buffer[] = [
    Buffer.from(head.join('\r\n') + `\r\n--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Description: Notification${cte(textBuf)}\r\n\r\n`, 'utf8'),
    textBuf,
    Buffer.from(`\r\n--${boundary}\r\nContent-Type: message/${reportType}\r\nContent-Description: Delivery report${cte(statusBuf)}\r\n\r\n`),
    statusBuf,
  ];
  if (part3) {
    const desc = part3.type.endsWith('headers') ? 'Undelivered Message Headers' : 'Undelivered Message';
    parts.push(Buffer.from(`\r\n--${boundary}\r\nContent-Type: ${part3.type}\r\nContent-Description: ${desc}${cte(part3.data)}\r\n\r\n`), part3.data);
  }
  parts.push(Buffer.from(`\r\n--${boundary}--\r\n`));
  const message = Buffer.concat(parts);
  return { to: env.sender, message, body: hasHigh(message) ? '8BITMIME' : '7BIT', smtputf8: nonAscii(env.sender) };
}

/**
 * A DSN goes to someone outside: our file system is none of their business.
 * Transports do not put paths into replies (maildir.ts, remote.ts); this
 * catches any that slip in from an error message (e.g. "ENOENT: no such
 * file or directory, open '/var/lib/tern/…'"): an absolute path of two or
 * more segments becomes "[path]". URLs survive (their slashes follow ':' or '/').
 */
export function withoutPaths(s: string): string {
  return s.replace(/(?<![\w.:/~-])\/(?:[^\s/'"`()<>\[\],;]+\/)+[^\s/'"`()<>\[\],;]*/g, '[path]');
}

/**
 * The reply's status when it is RFC 3463 syntax and of the action's class
 * (a state file could hold anything), or the generic code of that class.
 */
function status(r: DsnRecipient): string {
  const cls = r.action === 'failed' ? /^[45]/ : r.action === 'delayed' ? /^4/ : /^2/;
  const s = r.reply ? replyStatus(r.reply) : '';
  if (/^[245]\.\d{1,3}\.\d{1,3}$/.test(s) && cls.test(s)) return s;
  return r.action === 'failed' ? '5.0.0' : r.action === 'delayed' ? '4.0.0' : '2.0.0';
}

/**
 * Make remote or client-supplied text safe for one header field or text line:
 * line breaks become spaces and other controls go (no CR/LF injection,
 * RFC 5322 §2.2); non-ASCII stays only in a global report (RFC 6533).
 */
function clean(s: string, max: number, utf8: boolean): string {
  let out = s.replace(/[\r\n\t]+/g, ' ').replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, '');
  if (!utf8) out = out.replace(/[^\x20-\x7e]/g, '?');
  out = out.replace(/ {2,}/g, ' ').trim();
  return (out.length > max ? out.slice(0, max) + '...' : out).toWellFormed();
}

/** Split at spaces into lines of at most `width` where words allow; longer words are cut at MAX_WORD. */
function wrap(s: string, width: number, indent = ''): string[] {
  const lines: string[] = [];
  let line = '';
  for (let w of s.split(' ')) {
    while (w.length > MAX_WORD) {
      if (line) lines.push(line);
      lines.push(indent + w.slice(0, MAX_WORD));
      line = '';
      w = w.slice(MAX_WORD);
    }
    if (w === '') continue;
    if (line && line.length + 1 + w.length > width) {
      lines.push(line);
      line = '';
    }
    line = line ? `${line} ${w}` : indent + w;
  }
  if (line) lines.push(line);
  return lines;
}

/** A header field folded at spaces (RFC 5322 §2.2.3); continuation lines start with a space. */
function field(name: string, value: string): string {
  const [first = '', ...rest] = wrap(`${name}: ${value}`, LINE - 1);
  return [first, ...rest.map((l) => ' ' + l)].join('\r\n');
}

function nonAscii(s: string): boolean {
  return /[^\x00-\x7f]/.test(s);
}

function hasHigh(b: Buffer): boolean {
  for (const c of b) if (c > 0x7f) return true;
  return false;
}

/**
 * The header section (RFC 5322 §2.1) up to and including the CRLF that ends
 * its last field. Without an empty line, a complete message is all header;
 * a cut one keeps its whole lines only.
 */
function headerSection(b: Buffer, complete: boolean): Buffer {
  const s = b.toString('latin1');
  if (s.startsWith('\r\n')) return Buffer.alloc(0);
  const end = s.indexOf('\r\n\r\n');
  if (end >= 0) return b.subarray(0, end + 2);
  if (complete) return s.endsWith('\r\n') ? b : Buffer.concat([b, Buffer.from('\r\n')]);
  return b.subarray(0, s.lastIndexOf('\r\n') + 2);
}

/**
 * Read the original no further than needed: past `limit` octets (then
 * `complete` is false), or, when only headers are wanted, to the end of the
 * header section. Holds at most limit + one chunk. The stream is destroyed
 * either way; a read error leaves the original out of the report.
 */
async function readOriginal(open: () => NodeJS.ReadableStream, limit: number, headersOnly: boolean): Promise<{ data: Buffer; complete: boolean; error: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  let complete = true;
  let tail = '';
  let stream: NodeJS.ReadableStream | undefined;
  try {
    stream = open();
    for await (const c of stream) {
      const b = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      chunks.push(b);
      size += b.length;
      if (size > limit) {
        complete = false;
        break;
      }
      if (headersOnly) {
        const win = tail + b.toString('latin1');
        if (win.includes('\r\n\r\n') || (size === b.length && win.startsWith('\r\n'))) {
          complete = false; // Enough: the body is not wanted.
          break;
        }
        tail = win.slice(-3);
      }
    }
  } catch {
    return { data: Buffer.alloc(0), complete: false, error: true };
  } finally {
    const d = (stream as { destroy?: unknown } | undefined)?.destroy;
    if (typeof d === 'function') d.call(stream);
  }
  return { data: Buffer.concat(chunks, Math.min(size, limit)), complete, error: false };
}
