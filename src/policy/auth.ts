// Checking credentials for AUTH (RFC 4954): accounts from the user database
// and the config file, failed attempts throttled per IP and per account,
// and the same reply and the same cost for a wrong password and an unknown
// account (no user enumeration by reply or by timing).

import { setTimeout as sleep } from 'node:timers/promises';
import { SmtpError } from '../smtp/reply.ts';
import { dummyVerify, verifyPassword } from '../store/passwords.ts';
import type { UserStore } from '../store/store.ts';
import type { AuthThrottle } from './auth-throttle.ts';
import type { ConfigUser } from '../config/types.ts';
import type { Logger } from '../util/log.ts';
import { CounterFamily } from '../metrics/counter.ts';
import { VerifiedLogins } from './verified-logins.ts';

export interface Account {
  address: string;
  /** Addresses and '@domain' patterns this account may send as, its own address included. */
  sendAs: string[];
  messagesPerHour?: number | undefined;
  recipientsPerMessage?: number | undefined;
}

const BAD_CREDENTIALS = new SmtpError(535, '5.7.8', 'Authentication credentials invalid');
const LOCKED = new SmtpError(454, '4.7.0', 'Too many failed authentication attempts; try again later');

/**
 * Both kinds of refusal count: a wrong password or unknown account, and an
 * attempt turned away while locked out (the throttle at work). A steady
 * rate is password guessing; alert on it rather than on the log. The
 * dashboard's login counts here too (countAuthFailure): it shares the
 * throttle, so guesses over SMTP and HTTP are one series.
 */
const failures = new CounterFamily({
  name: 'tern_auth_failures_total',
  help: 'Failed logins: SMTP AUTH (RFC 4954) and the dashboard; wrong credentials, and attempts refused while the client or account was locked out.',
  labelNames: [],
}).child({});

/** One failed login elsewhere than SMTP AUTH (the dashboard), for tern_auth_failures_total. */
export function countAuthFailure(): void {
  failures.inc();
}

export class Authenticator {
  readonly #store: UserStore | null;
  readonly #config: Map<string, ConfigUser>;
  readonly #throttle: AuthThrottle;
  readonly #log: Logger;
  readonly #verified: VerifiedLogins;

  /** `verified` is shared across reloads (tern.ts), so a new config does not make every client pay the derivation again. */
  constructor(opts: { store: UserStore | null; configUsers: ConfigUser[]; throttle: AuthThrottle; log: Logger; verified?: VerifiedLogins }) {
    this.#verified = opts.verified ?? new VerifiedLogins();
    this.#store = opts.store;
    this.#config = new Map(opts.configUsers.map((u) => [u.address.toLowerCase(), u]));
    this.#throttle = opts.throttle;
    this.#log = opts.log;
  }

  /** Resolves with the account, or throws SmtpError 535 5.7.8 / 454 4.7.0. */
  async authenticate(ip: string, user: string, password: string, conn: string): Promise<Account> {
    const login = user.toLowerCase();
    const { locked, delayMs } = this.#throttle.check(ip, login);
    let delay = delayMs;
    if (locked) {
      await sleep(delayMs);
      this.#log.warn('auth refused: locked out', { conn, ip, user: login });
      failures.inc();
      throw LOCKED;
    }
    const record = this.#store?.getUser(login) ?? this.#config.get(login) ?? null;
    const tag = record ? this.#verified.tag(record.passwordHash, password) : null;
    let ok: boolean;
    let counted = false;
    if (tag !== null && this.#verified.known(tag)) {
      ok = true; // checked within the last minutes (verified-logins.ts)
    } else if (tag !== null && this.#verified.inflight(tag)) {
      // The same attempt, already being derived and counted: it gets that one's answer, and no
      // delay of its own (the first attempt's pending count must not slow its own duplicates).
      ok = await this.#verified.inflight(tag)!;
      delay = 0;
    } else {
      // Count the attempt as a failure before checking it: guesses sent in
      // parallel then see each other, so they cannot slip past the lockout.
      this.#throttle.failure(ip, login);
      counted = true;
      ok = record && tag !== null ? await this.#verified.verify(tag, () => verifyPassword(password, record.passwordHash)) : await dummyVerify(password);
    }
    // The delay applies whatever the outcome, so its presence says nothing about the password.
    await sleep(delay);
    if (!ok || !record) {
      // The password is never logged; the user name is (it is what admins search for).
      this.#log.warn('auth failed', { conn, ip, user: login });
      failures.inc();
      throw BAD_CREDENTIALS;
    }
    this.#throttle.success(ip, login);
    if (counted) this.#throttle.forgive(ip);
    this.#log.info('auth', { conn, ip, user: login });
    return {
      address: record.address,
      sendAs: [record.address, ...record.sendAs],
      messagesPerHour: record.messagesPerHour,
      recipientsPerMessage: record.recipientsPerMessage,
    };
  }
}
