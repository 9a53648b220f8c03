// Dashboard logins (docs/dashboard.md, "Sessions"), after the OWASP
// Session Management and CSRF Prevention cheat sheets:
//
// - The cookie holds 256 random bits and nothing else; the store keeps
//   only their SHA-256 (src/store/dashboard.ts), so a copy of tern.db logs
//   nobody in. Sessions live in the store: a restart keeps admins logged in.
// - Fixed lifetime (SESSION_LIFETIME_MS from login, not sliding): a stolen
//   cookie stops working at a known time whatever its thief does, and no
//   request has to write to the store to push its session's end along.
// - Every request checks that the account still exists and is still an
//   admin: `tern user del` or a demotion ends its sessions at once.
// - CSRF: the cookie is SameSite=Strict (a cross-site request carries no
//   cookie in current browsers), and every state change must also carry
//   the session's own token in X-CSRF-Token (a header a cross-site form
//   cannot set) and, when the browser sends one, an Origin equal to Host.
// - Login is checked by SMTP AUTH's Authenticator with the same throttle
//   (guesses over SMTP and over HTTP add up), and answers a wrong password,
//   an unknown account and a non-admin alike (the same status and text),
//   and sets a new session id (no fixation: an id is never reused).

import crypto from 'node:crypto';
import type { UserStore } from '../store/store.ts';
import type { DashboardStore, UiSession } from '../store/dashboard.ts';
import type { AuthThrottle } from '../policy/auth-throttle.ts';
import { countAuthFailure } from '../policy/auth.ts';
import { SmtpError } from '../smtp/reply.ts';

export const SESSION_COOKIE = 'tern_session';
/** How long a login lasts (OWASP suggests an absolute timeout of hours for an admin console). */
export const SESSION_LIFETIME_MS = 12 * 60 * 60_000;
/** Logins kept per account: a script that logs in in a loop cannot grow the table without bound. */
export const SESSIONS_PER_USER = 20;
/** Expired sessions deleted per login: the sweep is bounded, and logins outnumber the sessions that expire. */
export const EXPIRED_PER_LOGIN = 100;
/** 256 bits (OWASP: at least 64 bits of entropy for a session id). */
const TOKEN_BYTES = 32;

/** The one answer to a refused login, whatever the reason (no account enumeration). */
export const BAD_LOGIN = 'Unknown address, wrong password, or not a dashboard admin (tern user add ADDRESS --admin)';
export const LOCKED_LOGIN = 'Too many failed logins; try again later';

export class LoginRefused extends Error {
  readonly status: 401 | 429;
  constructor(status: 401 | 429) {
    super(status === 401 ? BAD_LOGIN : LOCKED_LOGIN);
    this.status = status;
  }
}

export function newToken(): string {
  return crypto.randomBytes(TOKEN_BYTES).toString('base64url');
}

export function tokenHash(token: string): string {
  return crypto.createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Equal strings, in time that depends on neither (both are hashed to the same length first). */
export function sameSecret(a: string, b: string): boolean {
  const h = (s: string): Buffer => crypto.createHash('sha256').update(s, 'utf8').digest();
  return crypto.timingSafeEqual(h(a), h(b));
}

/** The value of cookie `name` in a Cookie header (RFC 6265 §5.4), or null. */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    const v = part.slice(eq + 1).trim();
    return v.startsWith('"') && v.endsWith('"') && v.length >= 2 ? v.slice(1, -1) : v;
  }
  return null;
}

/** Set-Cookie for a new session (RFC 6265 §4.1; SameSite: RFC 6265bis). Secure whenever the listener speaks TLS. */
export function sessionCookie(token: string, secure: boolean, maxAgeMs = SESSION_LIFETIME_MS): string {
  return `${SESSION_COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.floor(maxAgeMs / 1000)}${secure ? '; Secure' : ''}`;
}

/** Set-Cookie that makes the browser forget the session cookie. */
export function clearedCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0${secure ? '; Secure' : ''}`;
}

/**
 * Whether an Origin header (RFC 6454 §7) names the host the request was
 * sent to. Absent is fine (same-origin GETs carry none); "null" (sandboxed
 * frames, some redirects) is not.
 */
export function originMatches(origin: string | undefined, host: string | undefined): boolean {
  if (origin === undefined) return true;
  if (!host) return false;
  try {
    return new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false;
  }
}

export interface SessionsOptions {
  users: Pick<UserStore, 'getUser'>;
  store: DashboardStore;
  /** SMTP AUTH's credential check (Authenticator.authenticate): throttle, lockout, dummy derivation, remembered logins. */
  authenticate: (ip: string, login: string, password: string) => Promise<unknown>;
  /** The throttle behind it: a right password of a non-admin is counted as a failure here. */
  throttle: AuthThrottle;
  now?: () => number;
}

/** A session as a request sees it. */
export type CurrentSession = UiSession;

export class Sessions {
  readonly #users: Pick<UserStore, 'getUser'>;
  readonly #store: DashboardStore;
  readonly #throttle: AuthThrottle;
  readonly #authenticate: SessionsOptions['authenticate'];
  readonly #now: () => number;

  constructor(o: SessionsOptions) {
    this.#users = o.users;
    this.#store = o.store;
    this.#throttle = o.throttle;
    this.#authenticate = o.authenticate;
    this.#now = o.now ?? Date.now;
  }

  /**
   * Checks the password with SMTP AUTH's own check (src/policy/auth.ts:
   * the attempt counts before it is checked, the throttle's delay applies
   * whatever the outcome, an unknown account costs a dummy derivation),
   * then the admin flag. Resolves with the cookie's token and the new
   * session, or throws LoginRefused.
   */
  async login(ip: string, address: string, password: string): Promise<{ token: string; session: UiSession }> {
    const login = address.trim().toLowerCase();
    try {
      await this.#authenticate(ip, login, password);
    } catch (e) {
      if (e instanceof SmtpError) throw new LoginRefused(e.code === 454 ? 429 : 401);
      throw e;
    }
    const user = this.#users.getUser(login);
    if (!user?.admin) {
      // A right password of an account that is no admin (or a config-file user) is refused like a wrong one, and counted as one.
      this.#throttle.failure(ip, login);
      countAuthFailure();
      throw new LoginRefused(401);
    }
    const now = this.#now();
    const token = newToken();
    const session: UiSession = { tokenHash: tokenHash(token), csrf: newToken(), user: user.address, createdAt: now, expiresAt: now + SESSION_LIFETIME_MS };
    this.#store.addSession(session);
    this.#store.trimUserSessions(user.address, SESSIONS_PER_USER);
    this.#store.expireSessions(now, EXPIRED_PER_LOGIN);
    return { token, session };
  }

  /** The live session a Cookie header names, or null: none, unknown, expired, or its account is gone or no longer an admin. */
  current(cookieHeader: string | undefined): CurrentSession | null {
    const token = cookieValue(cookieHeader, SESSION_COOKIE);
    if (!token || token.length > 256) return null;
    const hash = tokenHash(token);
    const s = this.#store.getSession(hash);
    if (!s) return null;
    if (s.expiresAt <= this.#now() || !this.#users.getUser(s.user)?.admin) {
      // Found dead on use: deleted now (the rest go a bounded batch per login).
      this.#store.deleteSession(hash);
      return null;
    }
    return s;
  }

  /** Whether `s` still stands (the live stream asks now and then): not expired, not logged out. */
  stillValid(s: UiSession): boolean {
    return s.expiresAt > this.#now() && this.#store.getSession(s.tokenHash) !== null;
  }

  logout(s: UiSession): void {
    this.#store.deleteSession(s.tokenHash);
  }

  /** Ends every session of `user` (deleted); returns their token hashes. */
  endUser(user: string): string[] {
    return this.#store.deleteUserSessions(user.toLowerCase());
  }
}
