// Abuse Reporting Format (RFC 5965): the report a mailbox provider's
// feedback loop sends when one of its users marks our mail as spam. Socket-
// and store-free: bytes in, the report's facts out, never a throw.
//
// RFC 5965 §2: the report is a multipart/report (RFC 6522) with
// report-type=feedback-report, whose parts are
//   1. a human-readable text part (ignored here);
//   2. message/feedback-report: header-like fields (§3), Feedback-Type,
//      User-Agent and Version required (§3.1), Original-Mail-From and
//      friends at most once (§3.2), Original-Rcpt-To any number (§3.3);
//   3. the message complained about, whole (message/rfc822) or its header
//      section only (text/rfc822-headers); optional in practice.
// Providers often redact the complainer (RFC 6590): then Original-Rcpt-To
// is missing or a placeholder, and the returned message's To: may be too.
//
// Only header sections are parsed, and at most MAX_PARTS parts looked at,
// each found with indexOf: the work is linear in the input, whatever it
// holds. The caller bounds the input (complaints.ts reads at most
// MAX_REPORT_BYTES); a report cut short still parses when its first two
// parts and the returned message's header section are in.

import { formatAddress, parseMailbox } from '../smtp/address.ts';
import { parseAddressList } from '../smtp/address-list.ts';

export interface FeedbackReport {
  /** Lower case: abuse, fraud, virus, other (RFC 5965 §7.3), auth-failure (RFC 6591), not-spam (RFC 6430), or anything newer. */
  feedbackType: string;
  userAgent: string | null;
  version: string | null;
  /** Original-Rcpt-To values that are addresses (placeholders such as "redacted" are left out), as local@domain. */
  originalRcptTo: string[];
  originalMailFrom: string | null;
  reportingMta: string | null;
  sourceIp: string | null;
  arrivalDate: string | null;
  /** The third part, when there is one. */
  returned: ReturnedMessage | null;
}

/** What the returned message's header section says. */
export interface ReturnedMessage {
  /** The Message-ID field as written, angle brackets included, e.g. "<x@y>"; null when absent. */
  messageId: string | null;
  /** The To: field's mailboxes (local@domain); [] when absent or unreadable. */
  to: string[];
}

export type ArfResult = { ok: true; report: FeedbackReport } | { ok: false; problem: string };

/** Parts of the multipart/report looked at; a feedback report has three. */
export const MAX_PARTS = 8;
/** Header sections are read up to this many characters (the message's own, each part's, the returned message's). */
export const MAX_HEADER_SECTION = 64 * 1024;

export function parseArf(message: Buffer): ArfResult {
  const text = message.toString('utf8');
  const top = headerSection(text, 0);
  const type = contentType(top.fields);
  if (type === null || type.type !== 'multipart/report') return { ok: false, problem: 'not a multipart/report' };
  if ((type.params.get('report-type') ?? '').toLowerCase() !== 'feedback-report') return { ok: false, problem: `report-type is ${type.params.get('report-type') ?? 'missing'}, not feedback-report` };
  const boundary = type.params.get('boundary');
  // RFC 2046 §5.1.1: 1 to 70 characters.
  if (!boundary || boundary.length > 70) return { ok: false, problem: 'no usable MIME boundary' };
  const parts = splitMultipart(text, top.end, boundary);
  let feedback: Field[] | null = null;
  let returned: ReturnedMessage | null = null;
  for (const p of parts) {
    const head = headerSection(text, p.start, p.end);
    const t = contentType(head.fields)?.type ?? 'text/plain';
    if (t === 'message/feedback-report' && feedback === null) {
      feedback = headerSection(decodeBody(text, head.end, p.end, head.fields), 0).fields;
    } else if ((t === 'message/rfc822' || t === 'text/rfc822-headers') && returned === null) {
      returned = returnedMessage(headerSection(decodeBody(text, head.end, p.end, head.fields), 0).fields);
    }
  }
  if (feedback === null) return { ok: false, problem: 'no message/feedback-report part' };
  const one = (name: string): string | null => feedback.find((f) => f.name === name)?.value ?? null;
  const feedbackType = one('feedback-type')?.split(/[\s;(]/, 1)[0]?.toLowerCase() ?? '';
  if (feedbackType === '') return { ok: false, problem: 'no Feedback-Type' };
  return {
    ok: true,
    report: {
      feedbackType,
      userAgent: one('user-agent'),
      version: one('version'),
      originalRcptTo: feedback.filter((f) => f.name === 'original-rcpt-to').flatMap((f) => addressIn(f.value) ?? []),
      originalMailFrom: addressIn(one('original-mail-from') ?? ''),
      reportingMta: one('reporting-mta'),
      sourceIp: one('source-ip'),
      arrivalDate: one('arrival-date'),
      returned,
    },
  };
}

interface Field {
  /** Lower case. */
  name: string;
  /** Unfolded, trimmed. */
  value: string;
}

/**
 * The header section starting at `from` (up to `to`): its unfolded fields,
 * and where the body starts (after the empty line; `to` when there is none).
 * Lines without a colon are skipped, as a mail reader would.
 */
function headerSection(text: string, from: number, to = text.length): { fields: Field[]; end: number } {
  const fields: Field[] = [];
  const limit = Math.min(to, from + MAX_HEADER_SECTION);
  let pos = from;
  let end = to;
  while (pos < limit) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0 || nl >= to) nl = to;
    const line = text.slice(pos, nl).replace(/\r$/, '');
    const next = Math.min(nl + 1, to);
    if (line === '') {
      end = next;
      break;
    }
    const last = fields.at(-1);
    if ((line[0] === ' ' || line[0] === '\t') && last) {
      last.value = `${last.value} ${line.trim()}`;
    } else {
      const colon = line.indexOf(':');
      if (colon > 0) fields.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
    }
    pos = next;
    if (pos >= limit) end = Math.min(to, pos);
  }
  return { fields, end };
}

/** Content-Type (RFC 2045 §5.1): the lower-cased type/subtype and its parameters (names lower-cased, values unquoted). */
function contentType(fields: Field[]): { type: string; params: Map<string, string> } | null {
  const value = fields.find((f) => f.name === 'content-type')?.value;
  if (value === undefined) return null;
  const [head = '', ...rest] = splitParams(value);
  const params = new Map<string, string>();
  for (const p of rest) {
    const eq = p.indexOf('=');
    if (eq <= 0) continue;
    let v = p.slice(eq + 1).trim();
    if (v.startsWith('"')) v = v.slice(1, v.endsWith('"') && v.length > 1 ? -1 : undefined).replace(/\\(.)/g, '$1');
    params.set(p.slice(0, eq).trim().toLowerCase(), v);
  }
  return { type: head.trim().toLowerCase(), params };
}

/** Splits at semicolons outside quoted strings. */
function splitParams(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (quoted && c === '\\' && i + 1 < value.length) {
      cur += c + value[++i];
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === ';' && !quoted) {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out;
}

/**
 * The body parts of a multipart entity (RFC 2046 §5.1.1): a delimiter is
 * "--" boundary at the start of a line, optionally followed by white
 * space; the line break before it belongs to it; "--" boundary "--" closes.
 * A body cut short (no close delimiter) ends its last part at the end.
 */
function splitMultipart(text: string, from: number, boundary: string): { start: number; end: number }[] {
  const delimiter = `--${boundary}`;
  const parts: { start: number; end: number }[] = [];
  let open = -1;
  let pos = from;
  while (parts.length < MAX_PARTS) {
    const at = text.indexOf(delimiter, pos);
    if (at < 0) break;
    pos = at + delimiter.length;
    if (at !== from && text[at - 1] !== '\n') continue;
    let eol = text.indexOf('\n', pos);
    if (eol < 0) eol = text.length;
    const after = text.slice(pos, eol).replace(/\r$/, '');
    const close = after.startsWith('--');
    if (!close && after.trim() !== '') continue; // a line that merely starts like the boundary
    if (open >= 0) parts.push({ start: open, end: lineBreakBefore(text, at) });
    if (close) return parts;
    open = Math.min(eol + 1, text.length);
    pos = open;
  }
  if (open >= 0 && parts.length < MAX_PARTS) parts.push({ start: open, end: text.length });
  return parts;
}

/** Where the CRLF (or LF) before position `at` starts. */
function lineBreakBefore(text: string, at: number): number {
  if (at > 0 && text[at - 1] === '\n') return at >= 2 && text[at - 2] === '\r' ? at - 2 : at - 1;
  return at;
}

/**
 * A part's body (text[start, end)) as text, its Content-Transfer-Encoding
 * undone (base64, quoted-printable). Only a header section is read out of
 * it, so an unencoded body is taken no further than MAX_HEADER_SECTION: a
 * returned message with large attachments is not copied.
 */
function decodeBody(text: string, start: number, end: number, fields: Field[]): string {
  const cte = fields.find((f) => f.name === 'content-transfer-encoding')?.value.toLowerCase() ?? '7bit';
  if (cte === 'base64') return Buffer.from(text.slice(start, end).replace(/[^A-Za-z0-9+/=]/g, ''), 'base64').toString('utf8');
  const body = text.slice(start, Math.min(end, start + MAX_HEADER_SECTION));
  if (cte === 'quoted-printable') {
    const latin1 = body.replace(/=\r?\n/g, '').replace(/=([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    return Buffer.from(latin1, 'latin1').toString('utf8');
  }
  return body;
}

function returnedMessage(fields: Field[]): ReturnedMessage {
  const value = fields.find((f) => f.name === 'message-id')?.value ?? '';
  // RFC 5322 §3.6.4 wants "<id-left@id-right>"; reports (RFC 5965's own example among them) sometimes drop the brackets.
  const bare = /^[^<>\s@]+@[^<>\s@]+$/.test(value) ? `<${value}>` : null;
  const messageId = /<[^<>\s]+>/.exec(value)?.[0] ?? bare;
  const to = fields.find((f) => f.name === 'to')?.value;
  const list = to === undefined ? null : parseAddressList(to);
  return { messageId, to: list?.ok ? list.mailboxes.map((m) => m.address) : [] };
}

/** An address in a field such as Original-Rcpt-To (an addr-spec, often in angle brackets, sometimes "rfc822;"-typed); null when it is none. */
function addressIn(value: string): string | null {
  const m = /<([^<>]*)>/.exec(value);
  const s = (m ? m[1]! : value.replace(/^rfc822\s*;/i, '')).trim();
  if (s === '') return null;
  try {
    return formatAddress(parseMailbox(s));
  } catch {
    return null;
  }
}
