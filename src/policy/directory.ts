// Who lives here: local domains, mailboxes, aliases, plus-addressing and
// catch-alls, resolved into final delivery targets. Pure; built from config.

import type { DomainConfig } from '../config/types.ts';
import type { Recipient } from '../spool/types.ts';

export type Target =
  | { kind: 'local'; domain: string; localPart: string; address: string }
  | { kind: 'remote'; address: string };

/** Alias chains deeper than this are a configuration loop (Postfix: 1000 expansions; we stop far earlier). */
export const MAX_ALIAS_DEPTH = 10;
/** One RCPT may not fan out to more than this many targets. */
export const MAX_ALIAS_TARGETS = 1000;

/** The separator for plus-addressing, as Postfix's recipient_delimiter. */
export const RECIPIENT_DELIMITER = '+';

interface Domain {
  name: string;
  mailboxes: Set<string> | '*';
  aliases: Map<string, string[]>;
  catchAll?: string | undefined;
}

export class Directory {
  #domains = new Map<string, Domain>();
  #isSink: (localPart: string, domain: string) => boolean = () => false;

  constructor(domains: DomainConfig[]) {
    this.reload(domains);
  }

  /**
   * A config reload: the new domains replace the old ones in one assignment,
   * so a lookup sees either set whole, never a mix. Everyone holding this
   * Directory (policy, bouncer, greylisting) sees the new set at once.
   */
  reload(domains: DomainConfig[]): void {
    const next = new Map<string, Domain>();
    for (const d of domains) {
      next.set(d.name.toLowerCase(), {
        name: d.name.toLowerCase(),
        mailboxes: d.mailboxes === '*' ? '*' : new Set(d.mailboxes.map((m) => m.toLowerCase())),
        aliases: new Map(Object.entries(d.aliases).map(([k, v]) => [k.toLowerCase(), v])),
        // Not lower-cased: a remote catch-all keeps its local part's case (local ones fold in #resolve).
        catchAll: d.catchAll,
      });
    }
    this.#domains = next;
  }

  isLocalDomain(domain: string): boolean {
    return this.#domains.has(domain.toLowerCase());
  }

  get domains(): string[] {
    return [...this.#domains.keys()];
  }

  /**
   * Resolve local@domain (domain must be local) to its final targets, or
   * null when nobody by that name lives here. Local parts match without
   * regard to case (what users expect, though RFC 5321 §2.4 lets the
   * receiver decide); "user+tag" falls back to "user".
   */
  resolve(localPart: string, domain: string): Target[] | null {
    const out: Target[] = [];
    const seen = new Set<string>();
    const d = domain.toLowerCase();
    const ok = this.#resolve(localPart, d, 0, out, seen);
    if (ok) return out;
    if (!this.#domains.has(d)) return null;
    const base = candidates(localPart.toLowerCase()).at(-1)!;
    return this.#isSink(base, d) ? [{ kind: 'local', domain: d, localPart: base, address: `${base}@${d}` }] : null;
  }

  /**
   * The envelope recipients for mail Tern writes itself (DSNs, TLS-RPT
   * reports) to `address`: as it is when remote; resolved like any RCPT
   * when local (null: nobody by that name lives here).
   */
  recipientsFor(address: string): Recipient[] | null {
    const at = address.lastIndexOf('@');
    const domain = address.slice(at + 1).toLowerCase();
    if (!this.isLocalDomain(domain)) return [{ address, original: address }];
    const targets = this.resolve(address.slice(0, at), domain);
    if (!targets || targets.length === 0) return null;
    return targets.map((t) => ({
      address: t.address,
      original: address,
      mailbox: t.kind === 'local' ? { domain: t.domain, localPart: t.localPart } : undefined,
    }));
  }

  /**
   * Addresses of local domains accepted although no mailbox, alias or
   * catch-all takes them (`isSink` gets the lower-cased local part without
   * its +tag): they resolve to a local target of their own name, whose mail
   * a reader consumes instead of a Maildir (the complaint addresses,
   * src/suppress/complaints.ts). Anyone who lives there wins.
   */
  setSinks(isSink: (localPart: string, domain: string) => boolean): void {
    this.#isSink = isSink;
  }

  /** Whether local@domain resolves only as a sink: nobody lives there, so its mail is not delivered. */
  isSinkOnly(localPart: string, domain: string): boolean {
    const d = domain.toLowerCase();
    if (!this.#domains.has(d) || !this.#isSink(candidates(localPart.toLowerCase()).at(-1)!, d)) return false;
    try {
      return !this.#resolve(localPart, d, 0, [], new Set());
    } catch {
      return false; // an alias loop: a configured name, not a sink
    }
  }

  #resolve(rawLocal: string, domainName: string, depth: number, out: Target[], seen: Set<string>): boolean {
    const domain = this.#domains.get(domainName);
    if (!domain) {
      // RFC 5321 §2.4: only the destination host may fold the case of a local
      // part, so a forward to another domain keeps it as configured.
      push(out, seen, { kind: 'remote', address: `${rawLocal}@${domainName}` });
      return true;
    }
    const local = rawLocal.toLowerCase();
    if (depth > MAX_ALIAS_DEPTH) throw new Error(`alias loop at ${local}@${domainName}`);
    for (const candidate of candidates(local)) {
      const alias = domain.aliases.get(candidate);
      if (alias) {
        for (const target of alias) {
          // An alias target that itself resolves to nothing is a config error; skip it rather than lose the rest.
          this.#resolveTarget(target, domainName, depth + 1, out, seen);
          if (out.length > MAX_ALIAS_TARGETS) throw new Error(`alias ${local}@${domainName} expands too far`);
        }
        return true;
      }
      if (domain.mailboxes !== '*' && domain.mailboxes.has(candidate)) {
        push(out, seen, { kind: 'local', domain: domainName, localPart: candidate, address: `${candidate}@${domainName}` });
        return true;
      }
    }
    if (domain.mailboxes === '*') {
      // Every name is a mailbox; "+tag" still folds into the base name.
      const base = candidates(local).at(-1)!;
      push(out, seen, { kind: 'local', domain: domainName, localPart: base, address: `${base}@${domainName}` });
      return true;
    }
    // The catch-all is a target like an alias's: a local part of this domain
    // or a full address (the config loader allows both), never a bare string
    // to look up here again (which looped until MAX_ALIAS_DEPTH → 451).
    if (domain.catchAll) return this.#resolveTarget(domain.catchAll, domainName, depth + 1, out, seen);
    return false;
  }

  /** An alias or catch-all target: "local" (in `own`) or "local@domain". */
  #resolveTarget(target: string, own: string, depth: number, out: Target[], seen: Set<string>): boolean {
    const at = target.lastIndexOf('@');
    if (at < 0) return this.#resolve(target, own, depth, out, seen);
    return this.#resolve(target.slice(0, at), target.slice(at + 1).toLowerCase(), depth, out, seen);
  }
}

/** "alice+tag" is tried as itself first (an alias may use "+"), then as "alice". */
function candidates(local: string): string[] {
  const plus = local.indexOf(RECIPIENT_DELIMITER);
  return plus > 0 ? [local, local.slice(0, plus)] : [local];
}

function push(out: Target[], seen: Set<string>, t: Target): void {
  if (seen.has(t.address)) return;
  seen.add(t.address);
  out.push(t);
}
