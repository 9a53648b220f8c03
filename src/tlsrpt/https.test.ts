import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isPrivateAddress } from './https.ts';

test('isPrivateAddress: loopback, private, link-local, CGNAT, multicast and mapped forms are refused; public ones are not', () => {
  for (const ip of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '::1', '::', 'fe80::1', 'fd00::1', 'ff02::1', '::ffff:127.0.0.1', '::ffff:10.0.0.1', 'not-an-ip']) {
    assert.equal(isPrivateAddress(ip), true, ip);
  }
  for (const ip of ['192.0.2.1', '8.8.8.8', '172.32.0.1', '2001:db8::1', '2a00:1450:4001::1', '::ffff:8.8.8.8']) assert.equal(isPrivateAddress(ip), false, ip);
});
