#!/usr/bin/env node
// Entry for the `tern` bin. In a checkout Tern runs its TypeScript directly
// on Node 24 (type stripping); an installed package (npm install -g
// tern-mta) runs the JavaScript that `npm pack` compiled into dist/, since
// Node refuses to strip types under node_modules. src/ wins when both are
// there, so a dist/ left in a checkout by `npm pack` is never run stale.
// An older `node` on PATH hands over to the Node 24 that `npm install` put
// in a checkout's node_modules (the pinned `node` dev dependency).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const checkout = existsSync(fileURLToPath(new URL('../src/cli/main.ts', import.meta.url)));
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  const local = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(local)) {
    const fix = checkout ? 'run npm install' : 'install Node.js 24 and put it first on PATH';
    process.stderr.write(`tern: needs Node.js 24 or later (this is ${process.version}); ${fix}\n`);
    process.exitCode = 1;
  } else {
    // The child writes straight to our stdout/stderr (inherited), so nothing is buffered here to lose.
    const r = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
    process.exitCode = r.status ?? 1;
  }
} else {
  // run() ends the process once stdout and stderr are flushed.
  const { run } = checkout ? await import('../src/cli/main.ts') : await import('../dist/cli/main.js');
  await run(process.argv.slice(2));
}
