// `tern dns DOMAIN`: every DNS record a domain served by Tern should publish,
// as zone file lines (RFC 1035 §5.1) ready to paste. Read-only: it reads the
// config and the DKIM keys under the data directory, and changes nothing.
//
// The choices, each a safe default an operator may loosen or tighten:
// - MX: the server's hostname, preference 10.
// - SPF (RFC 7208): `v=spf1 mx -all`: only the domain's MX hosts send its
//   mail. A domain that also sends through other services adds them.
// - DKIM (RFC 6376): one TXT per key in <dataDir>/dkim/<domain>/, as
//   `tern dkim list` prints it.
// - DMARC (RFC 7489): `p=quarantine` with aggregate reports to postmaster@:
//   strict enough to matter, and a mistake sends mail to Junk, not away.
// - MTA-STS (RFC 8461): `_mta-sts` TXT with an id derived from the policy
//   text the http listener serves (src/api/mta-sts.ts), so editing `mtaSts`
//   changes the id; the `mta-sts` host is a CNAME to the hostname, where the
//   http listener answers.
// - TLS-RPT (RFC 8460): reports to tlsrpt@ the domain.

import type { TernConfig } from '../config/types.ts';
import { DkimKeys, dnsNameFor, dnsRecordFor, normalizeDomain, type DkimKeySource } from '../intake/dkim.ts';
import { dkimKeySource, openConfiguredStore } from '../store/open.ts';
import { policyId, policyText } from '../api/mta-sts.ts';
import { MTA_STS_HOST_LABEL, mxMatches } from '../smtp/mta-sts.ts';

export const DNS_USAGE = `  tern dns DOMAIN                   the DNS records DOMAIN should publish (MX, SPF, DKIM, DMARC,
                                    MTA-STS, TLS-RPT), as zone file lines
`;

type Out = { write(s: string): unknown };

/** The MX preference printed (RFC 5321 §5.1: lower is tried first; one MX, so any value). */
export const MX_PREFERENCE = 10;

/** One DNS record: owner name and type, and the RDATA as it goes into a zone file. */
export interface DnsRecord {
  name: string;
  type: 'MX' | 'TXT' | 'CNAME';
  /** RDATA in zone file syntax: TXT values quoted (and split, see txt()), names absolute. */
  data: string;
  /** Why the record is there, printed as a comment line above it. */
  comment: string;
}

/** A TXT RDATA: quoted, split into character-strings of at most 255 octets (RFC 1035 §3.3). */
function txt(value: string): string {
  const parts: string[] = [];
  for (let i = 0; i < value.length; i += 255) parts.push(`"${value.slice(i, i + 255).replace(/["\\]/g, '\\$&')}"`);
  return parts.join(' ');
}

/** The records of `domain` (already normalized) under `config`. */
export function recordsFor(config: TernConfig, domain: string, keys: DkimKeySource = new DkimKeys(config.dataDir)): DnsRecord[] {
  const host = config.hostname.toLowerCase();
  const records: DnsRecord[] = [
    { name: domain, type: 'MX', data: `${MX_PREFERENCE} ${host}.`, comment: 'Mail for the domain goes to this server.' },
    { name: domain, type: 'TXT', data: txt('v=spf1 mx -all'), comment: 'SPF: only the MX hosts send the domain\'s mail; add other senders (e.g. include:) if there are any.' },
  ];
  for (const k of keys.forDomain(domain)) {
    // The same record (and the same 255-octet split) `tern dkim keygen` printed.
    records.push({ name: dnsNameFor(k), type: 'TXT', data: txt(dnsRecordFor(k)), comment: `DKIM key ${k.selector} (${k.algorithm}).` });
  }
  records.push(
    { name: `_dmarc.${domain}`, type: 'TXT', data: txt(`v=DMARC1; p=quarantine; rua=mailto:postmaster@${domain}`), comment: 'DMARC: mail failing SPF and DKIM alignment goes to Junk; aggregate reports to postmaster@.' },
    { name: `_mta-sts.${domain}`, type: 'TXT', data: txt(`v=STSv1; id=${policyId(policyText(config.mtaSts))}`), comment: `MTA-STS: a policy is published (mode ${config.mtaSts.mode}); the id changes whenever the policy (config mtaSts) does.` },
    { name: `${MTA_STS_HOST_LABEL}.${domain}`, type: 'CNAME', data: `${host}.`, comment: `The MTA-STS policy host: Tern's http listener serves https://${MTA_STS_HOST_LABEL}.${domain}/.well-known/mta-sts.txt (on port 443, with a certificate valid for that name).` },
    { name: `_smtp._tls.${domain}`, type: 'TXT', data: txt(`v=TLSRPTv1; rua=mailto:tlsrpt@${domain}`), comment: 'TLS-RPT: senders\' daily reports of TLS failures go to tlsrpt@ (make it an alias).' },
  );
  return records;
}

/** A zone file line: `NAME. IN TYPE RDATA`. */
export function zoneLine(r: DnsRecord): string {
  return `${r.name}. IN ${r.type} ${r.data}`;
}

/** `argv` is everything after "dns"; --config/-c (already used by the caller) is skipped. */
export function runDns(config: TernConfig, argv: string[], out: Out = process.stdout, err: Out = process.stderr): number {
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a === '-c') i++;
    else if (a.startsWith('--config=')) continue;
    else if (a.startsWith('-')) return usage(err, `unknown option ${a}`);
    else positional.push(a);
  }
  const [given, extra] = positional;
  if (given === undefined || extra !== undefined) return usage(err);
  const domain = normalizeDomain(given);
  if (!domain) {
    err.write(`tern dns: not a domain name: ${given}\n`);
    return 1;
  }
  const served = config.domains.map((d) => d.name);
  if (!served.includes(domain)) {
    // Likely a typo or the wrong --config; the records are still printed (a domain may be prepared before it is added).
    err.write(`tern dns: warning: ${domain} is not one of the configured domains (${served.join(', ') || 'none'}); the MTA-STS policy is not served for it\n`);
  }
  const host = config.hostname.toLowerCase();
  if (!config.mtaSts.mx.some((p) => mxMatches(p, host))) {
    err.write(`tern dns: warning: mtaSts.mx (${config.mtaSts.mx.join(', ')}) does not match the hostname ${host}, the MX printed: senders enforcing the policy would refuse it\n`);
  }
  let records: DnsRecord[];
  if (config.store.postgres) {
    // Keys in the shared store (issue 17): read them there.
    const store = openConfiguredStore(config);
    try {
      records = recordsFor(config, domain, dkimKeySource(config, store));
    } finally {
      store.close();
    }
  } else records = recordsFor(config, domain);
  const lines = [`; DNS records for ${domain}, from tern dns (Tern at ${host}).`];
  if (!records.some((r) => r.name.includes('._domainkey.'))) lines.push(`; No DKIM key for ${domain} yet: make one with \`tern dkim keygen ${domain}\` and run this again.`);
  for (const r of records) lines.push('', `; ${r.comment}`, zoneLine(r));
  out.write(lines.join('\n') + '\n');
  return 0;
}

function usage(err: Out, problem?: string): number {
  err.write(`${problem ? `tern dns: ${problem}\n` : ''}Usage:\n${DNS_USAGE}`);
  return 2;
}
