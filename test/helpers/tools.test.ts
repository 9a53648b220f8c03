// The guard for tests that need a system tool: a skip reason naming the
// package, or under CI an error (a skip there is a failure).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findExecutable, requireFile, requireTool, skipsForbidden } from './tools.ts';

function withCi<T>(value: string | undefined, f: () => T): T {
  const before = process.env.CI;
  if (value === undefined) delete process.env.CI;
  else process.env.CI = value;
  try {
    return f();
  } finally {
    if (before === undefined) delete process.env.CI;
    else process.env.CI = before;
  }
}

test('CI set (and not false or 0) forbids skips', () => {
  assert.equal(skipsForbidden({ CI: 'true' }), true);
  assert.equal(skipsForbidden({ CI: '1' }), true);
  assert.equal(skipsForbidden({ CI: 'false' }), false);
  assert.equal(skipsForbidden({ CI: '0' }), false);
  assert.equal(skipsForbidden({ CI: '' }), false);
  assert.equal(skipsForbidden({}), false);
});

test('findExecutable looks in PATH as spawn does', () => {
  assert.equal(findExecutable('sh', '/nonexistent:/bin'), '/bin/sh');
  assert.equal(findExecutable('sh', '/nonexistent'), null);
  assert.equal(findExecutable('/bin/sh', ''), '/bin/sh');
});

test('a missing tool: a skip reason naming the package and the install command; under CI an error', () => {
  assert.equal(withCi(undefined, () => requireTool('sh', 'dash')), false);
  const reason = withCi(undefined, () => requireTool('tern-no-such-tool', 'tern-no-such-package'));
  assert.equal(reason, 'tern-no-such-tool missing (Debian package tern-no-such-package; sudo scripts/install-test-deps.sh installs every test dependency)');
  assert.throws(() => withCi('true', () => requireFile('/nonexistent/tern-suite.yml', 'tern-suite-package')), /tern-suite-package.*CI is set, where a skipped test is a failure/);
});
