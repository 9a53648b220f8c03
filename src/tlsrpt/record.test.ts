import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTlsRptRecord, MAX_RUA } from './record.ts';

const uris = (txt: (string | string[])[]) => parseTlsRptRecord(txt.map((t) => (Array.isArray(t) ? t : [t])))?.map((d) => (d.kind === 'mailto' ? `${d.uri} -> ${d.addresses.join(',')}` : `${d.uri} -> ${d.url.href}`)) ?? null;

test('valid records (RFC 8460 §3)', () => {
  assert.deepEqual(uris(['v=TLSRPTv1; rua=mailto:tlsrpt@example.org']), ['mailto:tlsrpt@example.org -> tlsrpt@example.org']);
  assert.deepEqual(uris(['v=TLSRPTv1;rua=mailto:a@example.org,https://reports.example.org/v1/tlsrpt']), [
    'mailto:a@example.org -> a@example.org',
    'https://reports.example.org/v1/tlsrpt -> https://reports.example.org/v1/tlsrpt',
  ]);
  // WSP around delimiters and commas, a trailing delimiter, an extension.
  assert.deepEqual(uris(['v=TLSRPTv1 ;  rua=mailto:a@example.org ,\thttps://r.example.org ; ext_1=yes;']), ['mailto:a@example.org -> a@example.org', 'https://r.example.org -> https://r.example.org/']);
  // Split into several character-strings: joined with nothing between.
  assert.deepEqual(uris([['v=TLSRPTv1; rua=mailto:tls', 'rpt@example.org']]), ['mailto:tlsrpt@example.org -> tlsrpt@example.org']);
  // Other TXT records at the name are not TLSRPT records.
  assert.deepEqual(uris(['google-site-verification=abc', 'v=TLSRPTv1; rua=mailto:x@example.org']), ['mailto:x@example.org -> x@example.org']);
  // Percent-encoding, hfields ignored, two addresses in one mailto (a comma must be encoded there).
  assert.deepEqual(uris(['v=TLSRPTv1; rua=mailto:tls%2Brpt@example.org?subject=hi']), ['mailto:tls%2Brpt@example.org?subject=hi -> tls+rpt@example.org']);
  assert.deepEqual(uris(['v=TLSRPTv1; rua=mailto:a@example.org%2Cb@example.org']), ['mailto:a@example.org%2Cb@example.org -> a@example.org,b@example.org']);
  // The scheme is case-insensitive; duplicates count once.
  assert.deepEqual(uris(['v=TLSRPTv1; rua=MAILTO:a@example.org,MAILTO:a@example.org']), ['MAILTO:a@example.org -> a@example.org']);
});

test('no usable record: none, several, or malformed', () => {
  assert.equal(uris([]), null);
  assert.equal(uris(['v=spf1 -all']), null);
  assert.equal(uris(['v=TLSRPTv1; rua=mailto:a@example.org', 'v=TLSRPTv1; rua=mailto:b@example.org']), null, 'two records');
  assert.equal(uris(['v=TLSRPTv1']), null, 'no rua');
  assert.equal(uris(['v=TLSRPTv1;']), null, 'no rua');
  assert.equal(uris(['v=tlsrptv1; rua=mailto:a@example.org']), null, 'the version is case-sensitive');
  assert.equal(uris(['v=TLSRPTv10; rua=mailto:a@example.org']), null);
  assert.equal(uris(['v=TLSRPTv1; rua=mailto:a@example.org; rua=mailto:b@example.org']), null, 'two rua fields');
  assert.equal(uris(['v=TLSRPTv1; rua=']), null);
  assert.equal(uris(['v=TLSRPTv1; rua=mailto:a@example.org,']), null, 'an empty URI');
  assert.equal(uris(['v=TLSRPTv1;; rua=mailto:a@example.org']), null, 'an empty field');
  assert.equal(uris(['v=TLSRPTv1; rua=mailto:a@example.org; bad ext=1']), null, 'a malformed extension');
  assert.equal(uris(['v=TLSRPTv1; rua=mailto:a@example.org; x=a;b']), null);
  assert.equal(uris(['v=TLSRPTv1; rua=http://r.example.org/']), null, 'http: is not a TLSRPT scheme');
  assert.equal(uris(['v=TLSRPTv1; rua=mailto:not-an-address']), null);
  assert.equal(uris(['v=TLSRPTv1; rua=https://user:pw@r.example.org/']), null, 'credentials in a URI');
});

test('unusable destinations are skipped; at most MAX_RUA are kept', () => {
  assert.deepEqual(uris(['v=TLSRPTv1; rua=ftp://x.example.org/,mailto:a@example.org']), ['mailto:a@example.org -> a@example.org']);
  const many = Array.from({ length: MAX_RUA + 3 }, (_, i) => `mailto:r${i}@example.org`).join(',');
  assert.equal(uris([`v=TLSRPTv1; rua=${many}`])!.length, MAX_RUA);
});
