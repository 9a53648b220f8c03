// `tern user …`: the accounts that may log in to submission (RFC 6409, AUTH
// per RFC 4954), and with --admin to the dashboard (src/dashboard/). Works on the store directly: it is shared in WAL mode with a
// running server, which reads each login afresh, so no restart is needed.
// Passwords come from standard input or a no-echo prompt, never from argv,
// where `ps` and shell history would show them.

import type { TernConfig } from '../config/types.ts';
import { isDomain, parseMailbox } from '../smtp/address.ts';
import type { UserRecord, UserStore } from '../store/store.ts';
import { openConfiguredStore } from '../store/open.ts';
import { hashPassword, preparePassword } from '../store/passwords.ts';
import { MAX_FIELD } from '../server/sasl.ts';

export const USER_USAGE = `  tern user add ADDRESS [--admin] [--send-as LIST] [--messages-per-hour N] [--recipients-per-message N]
                                    add a submission login; LIST is addresses and @domains
                                    it may also send as (a@x.test,@y.test); --admin: it may
                                    also log in to the dashboard (http listener, /);
                                    --messages-per-hour 0: no hourly limit
  tern user passwd ADDRESS          set a new password
  tern user del ADDRESS             remove a login
  tern user list [--json]           logins, dashboard admins, what they may send as, their limits
                                    (passwords: first line of stdin, or prompted twice)
`;

type Out = { write(s: string): unknown };

export interface UserIo {
  stdin: NodeJS.ReadableStream & { setRawMode?: (raw: boolean) => unknown };
  stdout: Out;
  stderr: Out;
  /** True: prompt without echo; false: read the first line of stdin. */
  isTTY: boolean;
}

interface Parsed {
  positional: string[];
  json: boolean;
  admin: boolean;
  sendAs?: string | undefined;
  messagesPerHour?: string | undefined;
  recipientsPerMessage?: string | undefined;
}

class UsageError extends Error {}
class UserError extends Error {}

/** `argv` is everything after `user`; --config/-c (already used by the caller) is skipped. */
export async function runUser(config: TernConfig, argv: string[], io: Partial<UserIo> = {}): Promise<number> {
  const stdin = io.stdin ?? process.stdin;
  const full: UserIo = { stdin, stdout: io.stdout ?? process.stdout, stderr: io.stderr ?? process.stderr, isTTY: io.isTTY ?? Boolean((stdin as { isTTY?: boolean }).isTTY) };
  let store: UserStore | undefined;
  try {
    const args = parseArgv(argv);
    const [sub, address, extra] = args.positional;
    if (!sub || extra !== undefined || (sub === 'list') === (address !== undefined)) throw new UsageError();
    if (!['add', 'passwd', 'del', 'list'].includes(sub)) throw new UsageError();
    if (sub !== 'add' && (args.admin || args.sendAs !== undefined || args.messagesPerHour !== undefined || args.recipientsPerMessage !== undefined)) throw new UsageError();
    if (sub !== 'list' && args.json) throw new UsageError();
    store = openConfiguredStore(config);
    if (sub === 'list') return list(store, args.json, full.stdout);
    const addr = normalizeAddress(address!);
    if (!addr) throw new UserError(`invalid address ${JSON.stringify(address)}`);
    const existing = store.getUser(addr);
    switch (sub) {
      case 'add': {
        if (existing) throw new UserError(`${addr} already exists (tern user passwd changes the password)`);
        const domain = addr.slice(addr.lastIndexOf('@') + 1);
        if (!config.domains.some((d) => d.name === domain)) full.stderr.write(`tern user: note: ${domain} is not one of the configured domains\n`);
        const record: UserRecord = {
          address: addr,
          passwordHash: '',
          sendAs: parseSendAs(args.sendAs, addr),
          messagesPerHour: wholeInt(args.messagesPerHour, '--messages-per-hour'),
          recipientsPerMessage: positiveInt(args.recipientsPerMessage, '--recipients-per-message'),
          admin: args.admin ? true : undefined,
          createdAt: Date.now(),
        };
        record.passwordHash = await hashPassword(await readPassword(full, addr, config.submission.minPasswordLength));
        if (store.getUser(addr)) throw new UserError(`${addr} already exists`);
        store.putUser(record);
        full.stdout.write(`${addr}: added${record.admin ? ' (dashboard admin)' : ''}\n`);
        return 0;
      }
      case 'passwd': {
        if (!existing) throw new UserError(`no user ${addr}`);
        const passwordHash = await hashPassword(await readPassword(full, addr, config.submission.minPasswordLength));
        store.putUser({ ...(store.getUser(addr) ?? existing), passwordHash });
        full.stdout.write(`${addr}: password changed\n`);
        return 0;
      }
      case 'del': {
        if (!store.deleteUser(addr)) throw new UserError(`no user ${addr}`);
        full.stdout.write(`${addr}: deleted\n`);
        return 0;
      }
    }
    throw new UsageError();
  } catch (e) {
    if (e instanceof UsageError) {
      full.stderr.write(`${e.message ? `tern user: ${e.message}\n` : ''}Usage:\n${USER_USAGE}`);
      return 2;
    }
    full.stderr.write(`tern user: ${(e as Error).message}\n`);
    return 1;
  } finally {
    store?.close();
  }
}

function parseArgv(argv: string[]): Parsed {
  const out: Parsed = { positional: [], json: false, admin: false };
  const valued: Record<string, 'sendAs' | 'messagesPerHour' | 'recipientsPerMessage' | 'config'> = {
    '--send-as': 'sendAs',
    '--messages-per-hour': 'messagesPerHour',
    '--recipients-per-message': 'recipientsPerMessage',
    '--config': 'config',
    '-c': 'config',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const key = valued[name];
    if (key) {
      const value = name === a ? argv[++i] : a.slice(eq + 1);
      if (value === undefined) throw new UsageError(`${name} needs a value`);
      if (key !== 'config') out[key] = value;
    } else if (a === '--json') out.json = true;
    else if (a === '--admin') out.admin = true;
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else out.positional.push(a);
  }
  return out;
}

/** Lower-case dot-atom local@domain (RFC 5321 §4.1.2), no address literal; null when invalid. */
export function normalizeAddress(s: string): string | null {
  if (s.startsWith('"')) return null;
  try {
    const a = parseMailbox(s);
    return a.literal ? null : `${a.local}@${a.domain}`.toLowerCase();
  } catch {
    return null;
  }
}

function parseSendAs(list: string | undefined, own: string): string[] {
  if (list === undefined) return [];
  const out = new Set<string>();
  for (const raw of list.split(',')) {
    const item = raw.trim().toLowerCase();
    if (!item) continue;
    const norm = item.startsWith('@') ? (isDomain(item.slice(1)) ? item : null) : normalizeAddress(item);
    if (!norm) throw new UserError(`--send-as: invalid address or @domain ${JSON.stringify(raw.trim())}`);
    if (norm !== own) out.add(norm);
  }
  return [...out];
}

/** 0 included: for the hourly limit, 0 is "no limit" (submission.messagesPerHour's meaning). */
function wholeInt(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^(0|[1-9]\d{0,8})$/.test(v)) throw new UserError(`${flag}: expected a whole number (0: no limit), got ${JSON.stringify(v)}`);
  return Number(v);
}

function positiveInt(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[1-9]\d{0,8}$/.test(v)) throw new UserError(`${flag}: expected a positive whole number, got ${JSON.stringify(v)}`);
  return Number(v);
}

function list(store: UserStore, json: boolean, out: Out): number {
  // admin always present in JSON (false, not absent): scripts test it without a default.
  const users = store.listUsers().map(({ passwordHash: _, ...u }) => ({ ...u, admin: u.admin === true }));
  if (json) {
    out.write(JSON.stringify(users, null, 2) + '\n');
    return 0;
  }
  if (users.length === 0) {
    out.write('No users.\n');
    return 0;
  }
  const rows = users.map((u) => [
    u.address,
    u.admin ? 'yes' : '-',
    u.sendAs.join(',') || '-',
    [u.messagesPerHour && `${u.messagesPerHour} msg/h`, u.recipientsPerMessage && `${u.recipientsPerMessage} rcpt/msg`].filter(Boolean).join(', ') || '-',
    new Date(u.createdAt).toISOString().slice(0, 10),
  ]);
  const head = ['ADDRESS', 'ADMIN', 'SEND-AS', 'LIMITS', 'CREATED'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  out.write([fmt(head), ...rows.map(fmt)].join('\n') + `\n${users.length} user${users.length === 1 ? '' : 's'}\n`);
  return 0;
}

/** The new password: prompted twice on a terminal, else the first line of stdin; at least `minLength` characters. */
async function readPassword(io: UserIo, address: string, minLength: number): Promise<string> {
  // Characters as a person counts them (code points), not UTF-16 units or bytes.
  const tooShort = (pw: string): boolean => [...pw].length < minLength;
  const shortMessage = (pw: string): string => `the password is too short: ${[...pw].length} characters, at least ${minLength} needed (submission.minPasswordLength)`;
  let pw: string | null;
  if (io.isTTY) {
    pw = await promptHidden(io, `New password for ${address}: `);
    // Said before the retype, so nobody types a refused password twice.
    if (pw && tooShort(pw)) throw new UserError(shortMessage(pw));
    if (pw && (await promptHidden(io, 'Retype it: ')) !== pw) throw new UserError('the passwords do not match');
  } else {
    pw = await readLine(io.stdin);
  }
  if (!pw) throw new UserError('empty password refused (give it on standard input or at the prompt)');
  if (tooShort(pw)) throw new UserError(shortMessage(pw));
  // PLAIN carries it NUL-separated, at most 255 octets (RFC 4616 §2); control
  // characters are not allowed in passwords (RFC 8265 §4.2 OpaqueString).
  if (/[\x00-\x1f\x7f]/.test(pw)) throw new UserError('the password contains control characters');
  if (Buffer.byteLength(preparePassword(pw)) > MAX_FIELD) throw new UserError(`the password is longer than ${MAX_FIELD} bytes`);
  return pw;
}

/** First line (without CR LF) of a stream; null at end of input with nothing read. */
function readLine(stdin: NodeJS.ReadableStream): Promise<string | null> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const finish = (v: string | null): void => {
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.off('error', reject);
      stdin.pause();
      resolve(v === null ? null : v.replace(/\r$/, ''));
    };
    const onData = (d: string | Buffer): void => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish(buf.slice(0, nl));
    };
    const onEnd = (): void => finish(buf === '' ? null : buf);
    stdin.setEncoding('utf8');
    stdin.on('data', onData);
    stdin.once('end', onEnd);
    stdin.once('error', reject);
    stdin.resume();
  });
}

/** A no-echo prompt on a terminal, in raw mode (Ctrl-C aborts, Backspace and Ctrl-U edit). */
function promptHidden(io: UserIo, prompt: string): Promise<string> {
  const { stdin } = io;
  io.stderr.write(prompt);
  stdin.setRawMode?.(true);
  return new Promise<string>((resolve, reject) => {
    let pw = '';
    const finish = (err: Error | null): void => {
      stdin.off('data', onData);
      stdin.setRawMode?.(false);
      stdin.pause();
      io.stderr.write('\n');
      if (err) reject(err);
      else resolve(pw);
    };
    const onData = (d: string | Buffer): void => {
      const chars = [...d.toString()];
      for (let i = 0; i < chars.length; i++) {
        const ch = chars[i]!;
        if (ch === '\r' || ch === '\n') {
          // Typed ahead (or pasted) past Enter: leave it for the next prompt.
          const rest = chars.slice(i + 1).join('').replace(/^\n/, '');
          finish(null);
          if (rest) stdin.unshift(rest);
          return;
        }
        if (ch === '\u0003' || (ch === '\u0004' && pw === '')) return finish(new UserError('cancelled'));
        if (ch === '\u007f' || ch === '\b') pw = [...pw].slice(0, -1).join('');
        else if (ch === '\u0015') pw = '';
        else if (ch >= ' ') pw += ch;
      }
    };
    stdin.setEncoding('utf8');
    stdin.on('data', onData);
    stdin.resume();
  });
}
