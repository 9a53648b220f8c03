// ESMTP parameters on MAIL and RCPT (RFC 5321 §4.1.2 Mail-parameters):
// SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID (RFC 3461
// §4.3-4.4), REQUIRETLS (RFC 8689 §4.1) on MAIL; NOTIFY/ORCPT (RFC 3461 §4.1-4.2) on RCPT.

import { isUtf8 } from 'node:buffer';
import { SmtpError } from './reply.ts';

export type Body = '7BIT' | '8BITMIME';
export type Notify = 'SUCCESS' | 'FAILURE' | 'DELAY';

export interface MailParams {
  size?: number | undefined;
  body?: Body | undefined;
  smtputf8: boolean;
  ret?: 'FULL' | 'HDRS' | undefined;
  /** ENVID, decoded from xtext. */
  envid?: string | undefined;
  /** REQUIRETLS (RFC 8689): the session must be TLS; the session checks that. */
  requireTls?: boolean | undefined;
}

export interface RcptParams {
  /** undefined: not given (default behaviour); [] means NEVER. */
  notify?: Notify[] | undefined;
  /** ORCPT as addr-type and the decoded address, e.g. { type: 'rfc822', address: 'a@b' }. */
  orcpt?: { type: string; address: string } | undefined;
}

const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;

function split(rest: string): Map<string, string | true> {
  const out = new Map<string, string | true>();
  for (const token of rest.split(' ')) {
    if (token === '') continue;
    const eq = token.indexOf('=');
    const key = (eq < 0 ? token : token.slice(0, eq)).toUpperCase();
    if (!KEYWORD.test(key)) throw new SmtpError(501, '5.5.4', 'Bad parameter syntax');
    if (out.has(key)) throw new SmtpError(501, '5.5.4', `Duplicate ${key} parameter`);
    out.set(key, eq < 0 ? true : token.slice(eq + 1));
  }
  return out;
}

function value(key: string, v: string | true): string {
  if (v === true || v === '') throw new SmtpError(501, '5.5.4', `${key} needs a value`);
  return v;
}

/**
 * Decode xtext (RFC 3461 §4): "+" followed by two upper-case hex digits.
 * The octets are read as UTF-8, the inverse of encodeXtext; octets that are
 * not valid UTF-8 are refused rather than turned into latin1 characters
 * that encodeXtext would re-encode differently when relaying.
 */
export function decodeXtext(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) throw new SmtpError(501, '5.5.4', 'Bad xtext encoding');
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else if (c < 0x21 || c > 0x7e || c === 0x3d) {
      throw new SmtpError(501, '5.5.4', 'Bad xtext character');
    } else {
      bytes.push(c);
    }
  }
  const buf = Buffer.from(bytes);
  if (!isUtf8(buf)) throw new SmtpError(501, '5.5.4', 'Bad xtext encoding');
  return buf.toString('utf8');
}

export function encodeXtext(s: string): string {
  let out = '';
  for (const ch of Buffer.from(s, 'utf8')) {
    if (ch < 0x21 || ch > 0x7e || ch === 0x2b || ch === 0x3d) out += '+' + ch.toString(16).toUpperCase().padStart(2, '0');
    else out += String.fromCharCode(ch);
  }
  return out;
}

export interface Extensions {
  /** false after HELO: no parameters at all (RFC 5321 §4.1.1.1). */
  esmtp: boolean;
}

export function parseMailParams(rest: string, ext: Extensions): MailParams {
  const params: MailParams = { smtputf8: false };
  const map = split(rest);
  if (map.size > 0 && !ext.esmtp) throw new SmtpError(555, '5.5.4', 'Parameters not allowed after HELO');
  for (const [key, raw] of map) {
    switch (key) {
      case 'SIZE': {
        const v = value(key, raw);
        if (!/^\d{1,20}$/.test(v)) throw new SmtpError(501, '5.5.4', 'Bad SIZE value');
        params.size = Number(v);
        break;
      }
      case 'BODY': {
        const v = value(key, raw).toUpperCase();
        if (v !== '7BIT' && v !== '8BITMIME') throw new SmtpError(555, '5.5.4', `BODY=${v} not supported`);
        params.body = v;
        break;
      }
      case 'SMTPUTF8':
        if (raw !== true) throw new SmtpError(501, '5.5.4', 'SMTPUTF8 takes no value');
        params.smtputf8 = true;
        break;
      case 'REQUIRETLS':
        if (raw !== true) throw new SmtpError(501, '5.5.4', 'REQUIRETLS takes no value');
        params.requireTls = true;
        break;
      case 'RET': {
        const v = value(key, raw).toUpperCase();
        if (v !== 'FULL' && v !== 'HDRS') throw new SmtpError(501, '5.5.4', 'RET must be FULL or HDRS');
        params.ret = v;
        break;
      }
      case 'ENVID': {
        const v = decodeXtext(value(key, raw));
        // RFC 3461 §4.4: at most 100 characters.
        if (v.length > 100) throw new SmtpError(501, '5.5.4', 'ENVID too long');
        params.envid = v;
        break;
      }
      default:
        throw new SmtpError(555, '5.5.4', `Unsupported MAIL parameter ${key}`);
    }
  }
  return params;
}

export function parseRcptParams(rest: string, ext: Extensions): RcptParams {
  const params: RcptParams = {};
  const map = split(rest);
  if (map.size > 0 && !ext.esmtp) throw new SmtpError(555, '5.5.4', 'Parameters not allowed after HELO');
  for (const [key, raw] of map) {
    switch (key) {
      case 'NOTIFY': {
        const items = value(key, raw).toUpperCase().split(',');
        // RFC 3461 §4.1: NEVER alone, or any of SUCCESS, FAILURE, DELAY.
        if (items.length === 1 && items[0] === 'NEVER') {
          params.notify = [];
          break;
        }
        const set = new Set<Notify>();
        for (const item of items) {
          if (item !== 'SUCCESS' && item !== 'FAILURE' && item !== 'DELAY') throw new SmtpError(501, '5.5.4', 'Bad NOTIFY value');
          if (set.has(item)) throw new SmtpError(501, '5.5.4', 'Repeated NOTIFY value');
          set.add(item);
        }
        params.notify = [...set];
        break;
      }
      case 'ORCPT': {
        const v = value(key, raw);
        const semi = v.indexOf(';');
        const type = semi > 0 ? v.slice(0, semi) : '';
        if (!KEYWORD.test(type)) throw new SmtpError(501, '5.5.4', 'Bad ORCPT address type');
        const address = decodeXtext(v.slice(semi + 1));
        // RFC 3461 §4.2: at most 500 characters.
        if (address.length === 0 || address.length > 500) throw new SmtpError(501, '5.5.4', 'Bad ORCPT address');
        params.orcpt = { type: type.toLowerCase(), address };
        break;
      }
      default:
        throw new SmtpError(555, '5.5.4', `Unsupported RCPT parameter ${key}`);
    }
  }
  return params;
}
