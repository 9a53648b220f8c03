// `tern apikey …`: keys for the HTTP API. Like `tern user`, it works on the
// store directly (WAL mode, shared with a running server, which looks each
// request's key up afresh: a new or revoked key counts at once). The key is
// printed once, on create; only its SHA-256 is stored (src/api/keys.ts).

import type { TernConfig } from '../config/types.ts';
import { isDomain } from '../smtp/address.ts';
import type { ApiKeyRecord, Store } from '../store/store.ts';
import { openConfiguredStore } from '../store/open.ts';
import { apiKeyNameProblem, hashApiKey, newApiKey } from '../api/keys.ts';
import { normalizeAddress } from './user.ts';

export const APIKEY_USAGE = `  tern apikey create NAME [--send-as ADDRESS|@DOMAIN ...] [--admin] [--messages-per-hour N]
                                    make an HTTP API key and print it (once); it may send
                                    as (and read the mail of) the --send-as addresses and
                                    domains; --admin reads every message and event;
                                    --messages-per-hour: its own send limit (0: none;
                                    default submission.messagesPerHour)
  tern apikey list [--json]         the keys: name, send-as, admin, limit, created (never the key)
  tern apikey revoke NAME           delete a key; requests with it get 401 at once
`;

type Out = { write(s: string): unknown };

class UsageError extends Error {}
class KeyError extends Error {}

/** `argv` is everything after `apikey`; --config/-c (already used by the caller) is skipped. */
export function runApiKey(config: TernConfig, argv: string[], stdout: Out = process.stdout, stderr: Out = process.stderr): number {
  let store: Store | undefined;
  try {
    const positional: string[] = [];
    const sendAs: string[] = [];
    let admin = false;
    let json = false;
    let perHour: number | undefined;
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]!;
      if (a === '--config' || a === '-c') i++;
      else if (a.startsWith('--config=')) continue;
      else if (a === '--send-as' || a.startsWith('--send-as=')) {
        const v = a === '--send-as' ? argv[++i] : a.slice('--send-as='.length);
        if (v === undefined) throw new UsageError('--send-as needs a value');
        // Several flags, or one comma-separated list as `tern user add` takes.
        sendAs.push(...v.split(',').map((s) => s.trim()).filter(Boolean));
      } else if (a === '--admin') admin = true;
      else if (a === '--json') json = true;
      else if (a === '--messages-per-hour' || a.startsWith('--messages-per-hour=')) {
        const v = a === '--messages-per-hour' ? argv[++i] : a.slice('--messages-per-hour='.length);
        if (v === undefined || !/^\d{1,9}$/.test(v)) throw new UsageError('--messages-per-hour needs a whole number (0: no limit)');
        perHour = Number(v);
      }
      else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
      else positional.push(a);
    }
    const [sub, name, extra] = positional;
    if (!sub || extra !== undefined || !['create', 'list', 'revoke'].includes(sub) || (sub === 'list') === (name !== undefined)) throw new UsageError();
    if (sub !== 'create' && (sendAs.length > 0 || admin || perHour !== undefined)) throw new UsageError();
    if (sub !== 'list' && json) throw new UsageError();
    store = openConfiguredStore(config);
    if (sub === 'list') {
      const keys = store.listApiKeys().map(({ hash: _hash, ...k }) => ({ ...k, createdAt: new Date(k.createdAt).toISOString() }));
      if (json) stdout.write(JSON.stringify(keys) + '\n');
      else for (const k of keys) stdout.write(`${k.name}\t${k.admin ? 'admin' : '-'}\t${k.sendAs.join(',') || '-'}\t${k.messagesPerHour === undefined ? 'default' : k.messagesPerHour === 0 ? 'unlimited' : `${k.messagesPerHour}/h`}\t${k.createdAt}\n`);
      return 0;
    }
    const problem = apiKeyNameProblem(name!);
    if (problem) throw new KeyError(`${JSON.stringify(name)}: ${problem}`);
    if (sub === 'revoke') {
      if (!store.revokeApiKey(name!)) throw new KeyError(`no key ${name}`);
      stdout.write(`${name}: revoked\n`);
      return 0;
    }
    const patterns = sendAs.map((raw) => {
      const item = raw.toLowerCase();
      const norm = item.startsWith('@') ? (isDomain(item.slice(1)) ? item : null) : normalizeAddress(item);
      if (!norm) throw new KeyError(`--send-as: invalid address or @domain ${JSON.stringify(raw)}`);
      return norm;
    });
    if (patterns.length === 0 && !admin) stderr.write('tern apikey: note: without --send-as the key can send nothing and read nothing\n');
    const key = newApiKey();
    const record: ApiKeyRecord = { name: name!, hash: hashApiKey(key), sendAs: [...new Set(patterns)], admin, messagesPerHour: perHour, createdAt: Date.now() };
    if (!store.addApiKey(record)) throw new KeyError(`a key named ${name} exists (revoke it first)`);
    stdout.write(`${key}\n`);
    stderr.write(`tern apikey: ${name} created; the key is shown only this once\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      stderr.write(`${e.message ? `tern apikey: ${e.message}\n` : ''}Usage:\n${APIKEY_USAGE}`);
      return 2;
    }
    if (e instanceof KeyError) {
      stderr.write(`tern apikey: ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    store?.close();
  }
}
