import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArf, type ArfResult, type FeedbackReport } from './arf.ts';

/**
 * A report laid out as RFC 5965 §2 and its Appendix B example: the
 * human-readable part, message/feedback-report with the required fields
 * (§3.1) and optional ones (§3.2, §3.3), then the message complained about.
 */
const SAMPLE = [
  'Return-Path: <fbl@isp.test>',
  'From: Feedback Loop <fbl@isp.test>',
  'Date: Thu, 8 Mar 2024 17:40:36 +0000',
  'Subject: FW: Your order has shipped',
  'To: <abuse@tern.test>',
  'Message-ID: <report-1@isp.test>',
  'MIME-Version: 1.0',
  'Content-Type: multipart/report; report-type=feedback-report;',
  '\tboundary="part1_13d.2e68ed54_boundary"',
  '',
  'This is a multi-part message in MIME format.',
  '',
  '--part1_13d.2e68ed54_boundary',
  'Content-Type: text/plain; charset="US-ASCII"',
  'Content-Transfer-Encoding: 7bit',
  '',
  'This is an email abuse report for an email message received from IP',
  '192.0.2.1 on Thu, 8 Mar 2024 14:00:00 +0000.',
  '--part1_13d.2e68ed54_boundaryX is not a delimiter, nor is this line:',
  ' --part1_13d.2e68ed54_boundary',
  '',
  '--part1_13d.2e68ed54_boundary',
  'Content-Type: message/feedback-report',
  '',
  'Feedback-Type: abuse',
  'User-Agent: SomeGenerator/1.0',
  'Version: 1',
  'Original-Mail-From: <bounces@tern.test>',
  'Original-Rcpt-To: <Reader@Customers.test>',
  'Arrival-Date: Thu, 8 Mar 2024 14:00:00 +0000',
  'Reporting-MTA: dns; mx.isp.test',
  'Source-IP: 192.0.2.1',
  'Authentication-Results: mx.isp.test;',
  '  spf=pass smtp.mail=bounces@tern.test',
  'Reported-Domain: tern.test',
  '',
  '--part1_13d.2e68ed54_boundary',
  'Content-Type: message/rfc822',
  'Content-Disposition: inline',
  '',
  'Received: from mx.tern.test (mx.tern.test [192.0.2.1])',
  '        by mx.isp.test with ESMTPS id 4f3a; Thu, 8 Mar 2024 14:00:00 +0000',
  'From: Shop <shop@tern.test>',
  'To: Reader <reader@customers.test>',
  'Subject: Your order has shipped',
  'Message-ID: <5ed27b02-5c4b-48de-b631-045ac57ad1b7@mx.tern.test>',
  'Date: Thu, 8 Mar 2024 13:59:00 +0000',
  '',
  'Your order has shipped.',
  '--part1_13d.2e68ed54_boundary--',
  '',
].join('\r\n');

function report(r: ArfResult): FeedbackReport {
  assert.ok(r.ok, r.ok ? '' : r.problem);
  return r.report;
}

function problem(r: ArfResult): string {
  assert.ok(!r.ok, 'expected a refusal');
  return r.problem;
}

/** Builds a variant: the parts given, under a multipart/report header. */
function build(parts: string[], contentType = 'multipart/report; report-type=feedback-report; boundary="b1"', boundary = 'b1'): Buffer {
  const head = ['From: <fbl@isp.test>', 'To: <abuse@tern.test>', 'Subject: report', `Content-Type: ${contentType}`, '', ''].join('\r\n');
  return Buffer.from(head + parts.map((p) => `--${boundary}\r\n${p}\r\n`).join('') + `--${boundary}--\r\n`);
}

const FEEDBACK = 'Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: Gen/2\r\nVersion: 1\r\nOriginal-Rcpt-To: <x@customers.test>\r\n';

test('an RFC 5965 report: the feedback fields and the returned message\'s Message-ID and To', () => {
  const r = report(parseArf(Buffer.from(SAMPLE)));
  assert.deepEqual(r, {
    feedbackType: 'abuse',
    userAgent: 'SomeGenerator/1.0',
    version: '1',
    originalRcptTo: ['Reader@customers.test'],
    originalMailFrom: 'bounces@tern.test',
    reportingMta: 'dns; mx.isp.test',
    sourceIp: '192.0.2.1',
    arrivalDate: 'Thu, 8 Mar 2024 14:00:00 +0000',
    returned: { messageId: '<5ed27b02-5c4b-48de-b631-045ac57ad1b7@mx.tern.test>', to: ['reader@customers.test'] },
  });
});

test('bare LF line ends read the same', () => {
  assert.deepEqual(parseArf(Buffer.from(SAMPLE.replace(/\r\n/g, '\n'))), parseArf(Buffer.from(SAMPLE)));
});

test('text/rfc822-headers, a base64 feedback part, an unquoted boundary and upper-case names', () => {
  const fields = Buffer.from('Feedback-Type: Fraud\r\nUser-Agent: B64/1\r\nVersion: 1\r\nOriginal-Rcpt-To: rfc822; victim@customers.test\r\n').toString('base64').replace(/(.{40})/g, '$1\r\n');
  const msg = build(
    [
      'Content-Type: text/plain\r\n\r\nA human-readable part.',
      `Content-Type: MESSAGE/FEEDBACK-REPORT\r\nContent-Transfer-Encoding: base64\r\n\r\n${fields}`,
      'Content-Type: text/rfc822-headers\r\n\r\nFrom: shop@tern.test\r\nTo: victim@customers.test\r\nMessage-ID:\r\n <folded@mx.tern.test>\r\n',
    ],
    'Multipart/Report; Report-Type="Feedback-Report"; Boundary=b1',
  );
  const r = report(parseArf(msg));
  assert.equal(r.feedbackType, 'fraud');
  assert.equal(r.userAgent, 'B64/1');
  assert.deepEqual(r.originalRcptTo, ['victim@customers.test']);
  assert.deepEqual(r.returned, { messageId: '<folded@mx.tern.test>', to: ['victim@customers.test'] });
});

test('a quoted-printable returned header section and a Message-ID written without angle brackets (as in RFC 5965 Appendix B)', () => {
  const msg = build([FEEDBACK, 'Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nTo: =3Cq@customers.test=3E\r\nMessage-ID: 8787KJKJ3K4J.mail@mx.tern.test\r\n']);
  assert.deepEqual(report(parseArf(msg)).returned, { messageId: '<8787KJKJ3K4J.mail@mx.tern.test>', to: ['q@customers.test'] });
});

test('redacted recipients (RFC 6590) are left out; several Original-Rcpt-To are all kept', () => {
  const redacted = build(['Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: A/1\r\nVersion: 1\r\nOriginal-Rcpt-To: redacted\r\nOriginal-Rcpt-To: <>\r\n', 'Content-Type: message/rfc822\r\n\r\nTo: Undisclosed recipients:;\r\nSubject: x\r\n\r\nbody']);
  const r = report(parseArf(redacted));
  assert.deepEqual(r.originalRcptTo, []);
  assert.deepEqual(r.returned, { messageId: null, to: [] });
  const several = build(['Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nOriginal-Rcpt-To: <a@c.test>\r\nOriginal-Rcpt-To: b@c.test\r\n']);
  assert.deepEqual(report(parseArf(several)).originalRcptTo, ['a@c.test', 'b@c.test']);
});

test('without a third part the report still reads, returned is null', () => {
  const r = report(parseArf(build([FEEDBACK])));
  assert.equal(r.returned, null);
  assert.deepEqual(r.originalRcptTo, ['x@customers.test']);
  assert.equal(r.version, '1');
});

test('a report cut short after the returned header section (no close delimiter) still reads', () => {
  const cut = SAMPLE.slice(0, SAMPLE.indexOf('Your order has shipped.'));
  assert.deepEqual(report(parseArf(Buffer.from(cut))), report(parseArf(Buffer.from(SAMPLE))));
});

test('what is not a feedback report is refused with the reason', () => {
  const cases: [string, Buffer, RegExp][] = [
    ['empty', Buffer.alloc(0), /not a multipart\/report/],
    ['plain mail', Buffer.from('From: a@b.test\r\nSubject: hi\r\n\r\nPlease stop mailing me.\r\n'), /not a multipart\/report/],
    ['a DSN', build([FEEDBACK], 'multipart/report; report-type=delivery-status; boundary=b1'), /report-type is delivery-status/],
    ['report-type missing', build([FEEDBACK], 'multipart/report; boundary=b1'), /report-type is missing/],
    ['multipart/mixed', build([FEEDBACK], 'multipart/mixed; boundary=b1'), /not a multipart\/report/],
    ['no boundary', build([FEEDBACK], 'multipart/report; report-type=feedback-report'), /boundary/],
    ['boundary over 70', build([FEEDBACK], `multipart/report; report-type=feedback-report; boundary=${'x'.repeat(71)}`, 'x'.repeat(71)), /boundary/],
    ['the boundary never appears', build([FEEDBACK], 'multipart/report; report-type=feedback-report; boundary=other'), /no message\/feedback-report part/],
    ['no feedback part', build(['Content-Type: text/plain\r\n\r\nhello', 'Content-Type: message/rfc822\r\n\r\nTo: a@b.test\r\n\r\nx']), /no message\/feedback-report part/],
    ['no Feedback-Type', build(['Content-Type: message/feedback-report\r\n\r\nUser-Agent: A/1\r\nVersion: 1\r\n']), /no Feedback-Type/],
    ['empty Feedback-Type', build(['Content-Type: message/feedback-report\r\n\r\nFeedback-Type:\r\n']), /no Feedback-Type/],
    ['binary', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)), /not a multipart\/report/],
  ];
  for (const [what, input, reason] of cases) assert.match(problem(parseArf(input)), reason, what);
});

test('every prefix of the sample parses without a throw; once the feedback part is complete, the report is the same', () => {
  const full = report(parseArf(Buffer.from(SAMPLE)));
  const feedbackEnd = SAMPLE.indexOf('\r\n--part1_13d.2e68ed54_boundary\r\nContent-Type: message/rfc822');
  for (let n = 0; n <= SAMPLE.length; n++) {
    const r = parseArf(Buffer.from(SAMPLE.slice(0, n)));
    if (n >= feedbackEnd) {
      assert.ok(r.ok, `prefix ${n}`);
      assert.equal(r.report.feedbackType, full.feedbackType);
      assert.deepEqual(r.report.originalRcptTo, full.originalRcptTo);
    }
  }
});

test('hostile input is read in linear time (many delimiter look-alikes, a huge header section, many parts)', () => {
  const lookalikes = build([FEEDBACK + '--b1x\r\n'.repeat(150_000)]);
  const longHeader = build([`Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nX: ${'a'.repeat(1_000_000)}\r\n`]);
  const manyParts = build(Array.from({ length: 50_000 }, () => 'Content-Type: text/plain\r\n\r\nx'));
  const start = performance.now();
  assert.equal(report(parseArf(lookalikes)).feedbackType, 'abuse');
  assert.equal(report(parseArf(longHeader)).feedbackType, 'abuse');
  assert.match(problem(parseArf(manyParts)), /no message\/feedback-report part/);
  // Linear work on ~2 MB is milliseconds; a quadratic reader would take minutes.
  assert.ok(performance.now() - start < 3000, `${Math.round(performance.now() - start)} ms`);
});
