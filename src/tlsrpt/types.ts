// What remote delivery tells TLS-RPT (RFC 8460) about each outbound TLS
// negotiation: the policy that applied to the recipient domain and how the
// negotiation with one MX host ended. Aggregated per day and sent as the
// daily report (src/tlsrpt/), counted in metrics.

/** RFC 8460 §4.4 "policy-type". */
export type TlsPolicyType = 'sts' | 'tlsa' | 'no-policy-found';

/** RFC 8460 §4.3 result types (negotiation failures and policy failures). */
export type TlsFailure =
  | 'starttls-not-supported'
  | 'certificate-host-mismatch'
  | 'certificate-expired'
  | 'certificate-not-trusted'
  | 'validation-failure'
  | 'tlsa-invalid'
  | 'dnssec-invalid'
  | 'dane-required'
  | 'sts-policy-fetch-error'
  | 'sts-policy-invalid'
  | 'sts-webpki-invalid';

export interface TlsAttempt {
  /** The recipient domain the policy belongs to (lower case). */
  policyDomain: string;
  policy: {
    type: TlsPolicyType;
    /** RFC 8460 §4.4 "policy-string": the MTA-STS policy's lines, or the TLSA records in presentation form; [] for no-policy-found. */
    strings: string[];
    /** RFC 8460 §4.4 "mx-host": the MTA-STS policy's mx patterns; [] otherwise. */
    mxHosts: string[];
  };
  result: 'success' | TlsFailure;
  /** The MX host we connected to (or meant to), and its address ('' when none was reached). */
  mxHost: string;
  receivingIp: string;
  /** Our side's address of the connection, when there was one. */
  sendingIp?: string | undefined;
  /** Human words for a failure ("additional-information" is a URI; this goes to failure-reason-code). */
  reason?: string | undefined;
}

/** Where remote delivery reports attempts; must be cheap and never throw (it is on the delivery path). */
export interface TlsResultSink {
  record(attempt: TlsAttempt): void;
}
