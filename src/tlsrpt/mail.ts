// A TLS-RPT report as an email message (RFC 8460 §5.3): multipart/report
// (RFC 6522) with report-type "tlsrpt", a short text part for humans and
// the gzipped report as an application/tlsrpt+gzip attachment named as
// §5.1 says. Composed with nodemailer's MailComposer (as the HTTP API's
// built messages are); the caller hands it to intake, which adds Received
// and signs it with DKIM when the From domain is ours (§5.3 wants the
// report signed).

import { randomUUID } from 'node:crypto';
import MailComposer from 'nodemailer/lib/mail-composer';

export interface ReportMailInput {
  /** The report's contact-info: From (and, for the caller, the envelope sender). */
  from: string;
  /** The rua's addresses. */
  to: string[];
  policyDomain: string;
  /** The submitter's domain (Subject, TLS-Report-Submitter, the file name's sender). */
  submitter: string;
  reportId: string;
  /** The §5.1 file name. */
  filename: string;
  /** The gzipped report. */
  report: Buffer;
  /** The day reported, `YYYY-MM-DD`, and its totals, for the text part. */
  day: string;
  successful: number;
  failed: number;
  date: Date;
}

/** Header names MailComposer would re-case ("Tls-Report-Domain"): names are case-insensitive, but we write them as the RFCs do. */
const NAMES: Record<string, string> = {
  'tls-report-domain': 'TLS-Report-Domain',
  'tls-report-submitter': 'TLS-Report-Submitter',
  'tls-required': 'TLS-Required',
};

/**
 * The complete message, CRLF line ends. Header fields beyond RFC 8460 §5.3's:
 * - `TLS-Required: No` (RFC 8689 §5): §5.3 says a report must get through
 *   despite the TLS failures it may be about, so MTA-STS and DANE must not
 *   hold it back;
 * - `Auto-Submitted: auto-generated` (RFC 3834 §5): no vacation replies.
 */
export async function composeReportMail(m: ReportMailInput): Promise<Buffer> {
  const text = [
    `This is an aggregate TLS report (RFC 8460) from ${m.submitter} about mail sent to ${m.policyDomain}`,
    `on ${m.day}, 00:00 to 24:00 UTC: ${m.successful} successful and ${m.failed} failed TLS sessions.`,
    '',
    `The report is attached as ${m.filename} (gzipped JSON).`,
    `Report-ID: ${m.reportId}`,
    `Questions about it: ${m.from}`,
    '',
  ].join('\r\n'); // CRLF already: a 7bit part is written as given
  const composer = new MailComposer({
    from: m.from,
    to: m.to,
    // RFC 8460 §5.3: "Report Domain:" domain "Submitter:" domain "Report-ID:" msg-id.
    subject: `Report Domain: ${m.policyDomain} Submitter: ${m.submitter} Report-ID: <${m.reportId}>`,
    date: m.date,
    messageId: `<${randomUUID()}@${m.submitter}>`,
    headers: {
      'TLS-Report-Domain': m.policyDomain,
      'TLS-Report-Submitter': m.submitter,
      'TLS-Required': 'No',
      'Auto-Submitted': 'auto-generated',
    },
    text,
    attachments: [{ filename: m.filename, content: m.report, contentType: 'application/tlsrpt+gzip' }],
    normalizeHeaderKey: (key: string) => NAMES[key.toLowerCase()] ?? key,
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  const root = composer.compile();
  // A text part and an attachment make the composer's multipart/mixed; the
  // report is that same structure under RFC 6522's type. The composer keeps
  // its boundary, and writes the parameter as the token report-type=tlsrpt,
  // the same value as the quoted form (RFC 2045 §5.1).
  root.setHeader('Content-Type', 'multipart/report; report-type="tlsrpt"');
  return root.build();
}
