// SASL server mechanisms for SMTP AUTH (RFC 4954), without sockets: the
// session frames the exchange ("334 <challenge>", the client's reply line)
// and hands us the base64 payloads; we decode, run the mechanism, and say
// what to send next or which credentials to check.

export type SaslStep =
  | { kind: 'challenge'; /** base64; '' for an empty challenge ("334 "). */ challenge: string }
  | { kind: 'credentials'; user: string; password: string; authzid?: string }
  | { kind: 'error'; code: number; enhanced: string; text: string };

export interface SaslMechanism {
  /** `initialResponse` is the AUTH command's second argument, as sent ('=' = empty, RFC 4954 §4). */
  start(initialResponse: string | undefined): SaslStep;
  /** The client's reply to a challenge, as sent (base64, or "*" to cancel). */
  step(response: string): SaslStep;
}

export const MECHANISMS = ['PLAIN', 'LOGIN'];

/** RFC 4616 §2: authzid, authcid and passwd are each at most 255 octets. */
export const MAX_FIELD = 255;

// RFC 4648 §4 base64, padded, nothing else (no whitespace, no URL alphabet).
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

const cancelled = (): SaslStep => ({ kind: 'error', code: 501, enhanced: '5.0.0', text: 'Authentication cancelled' });
const badBase64 = (): SaslStep => ({ kind: 'error', code: 501, enhanced: '5.5.2', text: 'Invalid base64 data' });
const malformed = (what: string): SaslStep => ({ kind: 'error', code: 501, enhanced: '5.5.2', text: `Malformed ${what}` });
const finished = (): SaslStep => ({ kind: 'error', code: 503, enhanced: '5.5.1', text: 'Authentication exchange already finished' });

/** Decoded UTF-8 text of a base64 payload, or the error step to return. */
function decode(response: string, initial: boolean): string | SaslStep {
  // RFC 4954 §4: "*" cancels; an initial response of "=" is an empty one.
  if (response === '*' && !initial) return cancelled();
  if (initial && response === '=') return '';
  if (!BASE64.test(response)) return badBase64();
  try {
    return utf8.decode(Buffer.from(response, 'base64'));
  } catch {
    return malformed('UTF-8 in response');
  }
}

const encode = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const tooLong = (s: string): boolean => Buffer.byteLength(s) > MAX_FIELD;
const hasNul = (s: string): boolean => s.includes('\0');

export function createMechanism(name: string): SaslMechanism | null {
  switch (name.toUpperCase()) {
    case 'PLAIN':
      return plain();
    case 'LOGIN':
      return login();
  }
  return null;
}

/**
 * PLAIN, RFC 4616: one message `[authzid] NUL authcid NUL passwd`. Without an
 * initial response the server sends an empty challenge first (RFC 4954 §4).
 * Proxy authorization is not supported: an authzid naming someone other
 * than the authcid fails with 535 5.7.8.
 */
function plain(): SaslMechanism {
  let done = false;
  const message = (response: string, initial: boolean): SaslStep => {
    done = true;
    const text = decode(response, initial);
    if (typeof text !== 'string') return text;
    const parts = text.split('\0');
    if (parts.length !== 3) return malformed('PLAIN message');
    const [authzid, user, password] = parts as [string, string, string];
    if (!user || !password || tooLong(authzid) || tooLong(user) || tooLong(password)) return malformed('PLAIN message');
    if (authzid && authzid.toLowerCase() !== user.toLowerCase()) {
      return { kind: 'error', code: 535, enhanced: '5.7.8', text: 'Authorization identity must match authentication identity' };
    }
    return authzid ? { kind: 'credentials', user, password, authzid } : { kind: 'credentials', user, password };
  };
  return {
    start(initial) {
      if (initial === undefined) return { kind: 'challenge', challenge: '' };
      return message(initial, true);
    },
    step(response) {
      return done ? finished() : message(response, false);
    },
  };
}

/**
 * LOGIN, draft-murchison-sasl-login: challenges "Username:" and "Password:".
 * The draft has no initial response, but common clients send the user name
 * as one (AUTH LOGIN <b64 user>); we take it, as Postfix and Cyrus do.
 */
function login(): SaslMechanism {
  const USERNAME = encode('Username:'); // VXNlcm5hbWU6
  const PASSWORD = encode('Password:'); // UGFzc3dvcmQ6
  let user: string | undefined;
  let done = false;
  const field = (response: string, initial: boolean): string | SaslStep => {
    const text = decode(response, initial);
    if (typeof text !== 'string') return text;
    if (!text || hasNul(text) || tooLong(text)) return malformed('LOGIN response');
    return text;
  };
  const gotUser = (response: string, initial: boolean): SaslStep => {
    const u = field(response, initial);
    if (typeof u !== 'string') {
      done = true;
      return u;
    }
    user = u;
    return { kind: 'challenge', challenge: PASSWORD };
  };
  return {
    start(initial) {
      if (initial === undefined) return { kind: 'challenge', challenge: USERNAME };
      return gotUser(initial, true);
    },
    step(response) {
      if (done) return finished();
      if (user === undefined) return gotUser(response, false);
      done = true;
      const password = field(response, false);
      if (typeof password !== 'string') return password;
      return { kind: 'credentials', user, password };
    },
  };
}
