// The message's sender checks, composed from mailauth's own steps in the
// order and with the options of its authenticate() (mailauth 7.1.0,
// lib/mailauth.js, the reference): DKIM of every signature as the message
// streams (RFC 6376), SPF of MAIL FROM (RFC 7208), the ARC chain (RFC 8617),
// then DMARC (RFC 7489) over those, and the ARC seal when one is asked for.
//
// Why not call authenticate(): it starts the SPF check only after the last
// byte of the message, and checks it again for every message. The SPF check
// of MAIL FROM needs only the client's IP, its HELO name and the MAIL FROM
// address (RFC 7208 §4.1 check_host()), so the caller (authenticate.ts)
// starts it at once, runs it while the message streams in, and shares its
// result among the messages of the same client, and it is handed in here
// as a promise. Nothing else changes: the same steps with the same inputs,
// the same rows in the same order, the same seal.
//
// Left out, because Tern never asks for them: trustReceived (the client is
// who the session says, never what a Received field claims), the parsed
// Received chain (only trustReceived uses it), BIMI, and the switches that
// turn ARC or DMARC off.

import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import os from 'node:os';
import type { Readable } from 'node:stream';
import type {
  ARCData,
  ARCOptions,
  ARCResult,
  ARCSealError,
  ARCSealOptions,
  AuthenticateResult,
  DKIMVerifyOptions,
  DKIMVerifyResult,
  DMARCOptions,
  DMARCResult,
  DNSResolver,
  SPFResult,
} from 'mailauth';

/**
 * dkimVerify()'s result also carries, as hidden properties, what the ARC
 * check and the seal need (lib/dkim/verify.js): the chain as found, always
 * set (the declarations call it optional and signing data), and the seal.
 */
interface DkimStepResult extends Omit<DKIMVerifyResult, 'arc' | 'seal'> {
  readonly arc: ARCData;
  /** The seal options, with the body hash of the message added (only when a seal was asked for). */
  readonly seal?: ARCSealOptions & { bodyHash?: string };
}

const requireCjs = createRequire(import.meta.url);
// mailauth is CommonJS; its steps are loaded once, typed from its declarations where they exist.
const { dkimVerify, arc, createSeal } = requireCjs('mailauth') as {
  dkimVerify(input: Readable, options: DKIMVerifyOptions): Promise<DkimStepResult>;
  arc(data: ARCData, opts: ARCOptions): Promise<ARCResult>;
  createSeal(input: false, data: { headers: DKIMVerifyResult['headers']; arc: ARCData; seal: ARCSealOptions & { bodyHash?: string }; strict: boolean }): Promise<{ headers?: string[]; errors?: ARCSealError[] }>;
};
const { evaluateDmarc } = requireCjs('mailauth/lib/dmarc/index.js') as {
  evaluateDmarc(opts: DMARCOptions & { fromFields: number; strict: boolean }): Promise<{
    response: DMARCResult | false;
    dkimAligned?: Set<string>;
    reason?: AuthenticateResult['dmarcSkipReason'];
  }>;
};
const { formatAuthservId, formatDomain, getAlignment } = requireCjs('mailauth/lib/tools.js') as {
  formatAuthservId(authservId: string, strict: boolean): string;
  formatDomain(domain: string): string;
  getAlignment(fromDomain: string, domains: string[], strict: boolean): { domain: string } | false;
};
// mailauth's own libmime, which folds its Authentication-Results rows (and so the ARC-Authentication-Results it seals).
const { foldLines } = createRequire(requireCjs.resolve('mailauth'))('libmime') as { foldLines(text: string, lineLength: number): string };

/** authenticate() folds every row at 160 characters. */
const ROW_FOLD_AT = 160;

export interface MessageCheckOptions {
  /** The client's IP (from the session). */
  ip: string;
  /** MAIL FROM; undefined for the null reverse-path. */
  sender?: string | undefined;
  /** RFC 8601 §2.5: the authserv-id. */
  mta: string;
  resolver: DNSResolver;
  strict: boolean;
  /** Also ARC-seal the message (RFC 8617 §5.1) with this key. dkimVerify() adds the body hash to this object. */
  seal?: ARCSealOptions | undefined;
}

/**
 * The HELO name authenticate() hands its SPF check: the client's IP when it
 * gave none, and an IP written as an address literal (RFC 5321 §4.1.3), so
 * the null-sender check of RFC 7208 §2.4 has a well-formed identity.
 */
export function spfHelo(ip: string, helo: string | undefined): string | undefined {
  let name = helo;
  if (!name && ip) name = ip;
  return name && isIP(name) ? `[${name}]` : name;
}

/**
 * authenticate() over `input` (the message as it streams), with `spf` the
 * result of the SPF check of MAIL FROM (of HELO when MAIL FROM is null)
 * started by the caller with the same options authenticate() would use.
 * Rejects as authenticate() does: the stream failed, or the authserv-id is
 * not a token in strict mode.
 */
export async function checkMessage(input: Readable, opts: MessageCheckOptions, spf: Promise<SPFResult>): Promise<AuthenticateResult> {
  // RFC 8601 §2.5: checked before any work is done, as authenticate() does.
  const authservId = formatAuthservId(opts.mta || os.hostname(), opts.strict);

  // The seal's body hash is computed here, as the message streams (dkim-verifier.js).
  const dkimResult = await dkimVerify(input, { resolver: opts.resolver, sender: opts.sender, seal: opts.seal, strict: opts.strict });
  const spfResult = await spf;
  // RFC 8617 §6: the client's IP is reported as smtp.remote-ip in strict mode.
  const arcResult = await arc(dkimResult.arc, { resolver: opts.resolver, strict: opts.strict, ip: opts.ip });

  const arHeader: string[] = [];
  for (const row of dkimResult.results ?? []) arHeader.push(foldLines(row.info, ROW_FOLD_AT));
  let receivedSpfHeader: string | false = false;
  if (spfResult) {
    arHeader.push(foldLines(spfResult.info, ROW_FOLD_AT));
    receivedSpfHeader = spfResult.header;
  }
  if (arcResult?.info) arHeader.push(foldLines(arcResult.info, ROW_FOLD_AT));

  let dmarcResult: DMARCResult | false = false;
  let dmarcSkipReason: AuthenticateResult['dmarcSkipReason'];
  if (dkimResult.headerFrom) {
    let dkimAligned: Set<string> | undefined;
    ({ response: dmarcResult, dkimAligned, reason: dmarcSkipReason } = await evaluateDmarc({
      headerFrom: dkimResult.headerFrom,
      fromFields: dkimResult.fromFields,
      spfDomains: spfResult && spfResult.status.result === 'pass' && spfResult.domain ? [spfResult.domain] : [],
      dkimDomains: (dkimResult.results ?? [])
        .filter((r) => r.status.result === 'pass')
        .map((r) => ({ id: r.id, domain: r.signingDomain, aligned: r.status.aligned, underSized: r.status.underSized })) as DMARCOptions['dkimDomains'],
      arcResult,
      resolver: opts.resolver,
      strict: opts.strict,
    }));
    if (dmarcResult && dmarcResult.info) arHeader.push(foldLines(dmarcResult.info, ROW_FOLD_AT));
    if (dkimAligned && dmarcResult) {
      // As in authenticate(): the DKIM verifier only guessed relaxed alignment before
      // the DMARC record was known. Passing signatures take DMARC's verdict, failing
      // ones the record's alignment mode (RFC 7489 §3.1.1).
      const fromDomain = dmarcResult.status.header?.from as string;
      for (const row of dkimResult.results ?? []) {
        if (row.status.result === 'pass') {
          row.status.aligned = dkimAligned.has(formatDomain(row.signingDomain as string)) ? row.signingDomain : false;
        } else if (dmarcResult.alignment.dkim.strict) {
          const strictly = row.status.aligned && getAlignment(fromDomain, [row.signingDomain as string], true);
          row.status.aligned = (strictly && strictly.domain) || false;
        }
      }
    }
  }

  const arValue = `${authservId};\r\n ` + arHeader.join(';\r\n ');
  const authResultsHeader = `Authentication-Results: ${arValue}`;
  const headers: string[] = [];
  // RFC 8601 §5: Authentication-Results above the other trace fields, Received-SPF (RFC 7208 §9.1) among them.
  if (opts.strict) headers.push(authResultsHeader, ...(receivedSpfHeader ? [receivedSpfHeader] : []));
  else headers.push(...(receivedSpfHeader ? [receivedSpfHeader] : []), authResultsHeader);
  arcResult.authResults = arValue;

  // RFC 8617 §5.1: seal only a message whose chain is absent or valid (or that mailauth says to seal anyway).
  const chain = arcResult.status as ARCResult['status'] & { shouldSeal?: boolean };
  if (dkimResult.seal && (['none', 'pass'].includes(chain.result) || chain.shouldSeal)) {
    const sealResult = await createSeal(false, {
      headers: dkimResult.headers,
      arc: dkimResult.arc,
      seal: Object.assign({ cv: chain.result, authResults: arcResult.authResults, signTime: new Date() }, dkimResult.seal),
      strict: opts.strict,
    });
    // Sealing failed (an unusable key, a full chain): the message goes out unsealed, and this says why.
    if (sealResult?.errors?.length) arcResult.sealErrors = sealResult.errors;
    headers.unshift(...(sealResult?.headers ?? []));
  }

  const result: AuthenticateResult = {
    dkim: dkimResult,
    spf: spfResult,
    dmarc: dmarcResult || false,
    arc: arcResult || false,
    bimi: false,
    headers: headers.join('\r\n') + '\r\n',
  };
  // RFC 7489 §6.6.1: no single author domain, so no DMARC; this says why.
  if (!dmarcResult && dmarcSkipReason) result.dmarcSkipReason = dmarcSkipReason;
  return result;
}
