// `tern dkim …`: make signing keys and show the DNS records to publish.
// Keys are files under the data directory (a running server notices a new
// one by itself: DkimKeys re-reads a domain's directory when it changes), or,
// with `store.postgres`, rows of the shared store that every node reads
// (each is told of a new one by NOTIFY).

import type { TernConfig } from '../config/types.ts';
import {
  DkimKeyExistsError, defaultSelector, dnsNameFor, dnsRecordFor, generateKey, newKey, normalizeDomain, validSelector, zoneLineFor, type DkimKey,
} from '../intake/dkim.ts';
import { dkimKeySource, openConfiguredStore } from '../store/open.ts';
import type { Store } from '../store/store.ts';

export const DKIM_USAGE = `  tern dkim keygen DOMAIN [--selector S] [--algo rsa|ed25519]
                                    make a signing key (default rsa, selector rsa-YYYYMM / ed-YYYYMM)
                                    and print the DNS TXT record to publish
  tern dkim list [--json]           every key: domain, selector, algorithm, TXT record
`;

type Out = { write(s: string): unknown };

/** `argv` is everything after "dkim", raw (flags with their values); --config is skipped here. */
export async function runDkim(config: TernConfig, argv: string[], io: { out: Out; err: Out } = { out: process.stdout, err: process.stderr }): Promise<number> {
  const { out, err } = io;
  const positional: string[] = [];
  const opts = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    if (['--selector', '--algo', '--config', '-c'].includes(name)) {
      const value = name === a ? argv[++i] : a.slice(eq + 1);
      if (value === undefined) return usage(err, `${name} needs a value`);
      opts.set(name, value);
    } else if (a === '--json') opts.set(a, '');
    else if (a.startsWith('-')) return usage(err, `unknown option ${a}`);
    else positional.push(a);
  }
  const [sub, domain, extra] = positional;

  if (sub === 'keygen' && domain && !extra && !opts.has('--json')) {
    const algo = opts.get('--algo') ?? 'rsa';
    if (algo !== 'rsa' && algo !== 'ed25519') return usage(err, `--algo must be rsa or ed25519, not ${algo}`);
    try {
      const r = config.store.postgres ? await keygenShared(config, domain, opts.get('--selector'), algo) : await generateKey(config.dataDir, domain, { selector: opts.get('--selector'), algorithm: algo });
      // Likely a typo or the wrong --config; still made, as a key may be prepared before the domain is added (issue 18).
      const served = config.domains.map((d) => d.name);
      if (!served.includes(r.key.domain)) {
        err.write(`tern dkim keygen: warning: ${r.key.domain} is not one of the configured domains (${served.join(', ') || 'none'}); the key is made anyway\n`);
      }
      out.write(
        `New ${algo} key for ${r.key.domain}, selector ${r.key.selector}. Publish this DNS record:\n\n` +
          `${r.zoneLine}\n\n` +
          `Mail from ${r.key.domain} is signed with it from now on (a running server picks it up);\n` +
          `until the record is published, receivers treat the signature as absent.\n` +
          (algo === 'ed25519' ? `Not every receiver verifies ed25519 (RFC 8463) yet: keep an rsa key for the domain too.\n` : ''),
      );
      return 0;
    } catch (e) {
      err.write(`tern dkim keygen: ${(e as Error).message}\n`);
      return e instanceof DkimKeyExistsError ? 1 : 2;
    }
  }

  if (sub === 'list' && !domain && !opts.has('--selector') && !opts.has('--algo')) {
    const keys = withStore(config, (store) => dkimKeySource(config, store).all());
    if (opts.has('--json')) {
      const rows = keys.map((k) => ({ domain: k.domain, selector: k.selector, algorithm: k.algorithm, dnsName: dnsNameFor(k), dnsRecord: dnsRecordFor(k) }));
      out.write(JSON.stringify(rows, null, 2) + '\n');
    } else if (keys.length === 0) {
      out.write('No DKIM keys. Make one with: tern dkim keygen DOMAIN\n');
    } else {
      for (const k of keys) out.write(`${k.domain}  ${k.selector}  ${k.algorithm}\n  ${zoneLineFor(k)}\n`);
    }
    return 0;
  }

  return usage(err);
}

/** The configured store, open for `use` only (the embedded store is not opened: its keys are files). */
function withStore<T>(config: TernConfig, use: (store: Store | null) => T): T {
  if (!config.store.postgres) return use(null);
  const store = openConfiguredStore(config);
  try {
    return use(store);
  } finally {
    store.close();
  }
}

/** A new key in the shared store (never replacing one: the selector may already be published). */
async function keygenShared(config: TernConfig, domain: string, selectorOpt: string | undefined, algo: 'rsa' | 'ed25519'): Promise<{ key: DkimKey; zoneLine: string }> {
  const d = normalizeDomain(domain);
  if (!d) throw new Error(`not a domain name: ${domain}`);
  const selector = (selectorOpt ?? defaultSelector(algo)).toLowerCase();
  if (!validSelector(selector)) throw new Error(`not a valid selector: ${selectorOpt}`);
  const key = await newKey(d, selector, algo);
  const added = withStore(config, (store) => store!.dkimKeys!.add(key, Date.now()));
  if (!added) throw new DkimKeyExistsError(`${d} already has a key with selector ${selector} (in the shared store); choose another --selector`);
  return { key, zoneLine: zoneLineFor(key) };
}

function usage(err: Out, problem?: string): number {
  err.write(`${problem ? `tern dkim: ${problem}\n` : ''}Usage:\n${DKIM_USAGE}`);
  return 2;
}
