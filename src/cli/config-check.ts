// `tern config check FILE`: every problem on its own line, compiler style,
// so editors and CI can jump to it.

import { checkConfig, formatProblem } from '../config/load.ts';

/** Anything with `write`, so tests can capture output without streams. */
interface Output { write(chunk: string): unknown }

/** Prints `FILE:LINE: path: message` per problem to `err` and returns 1, or `FILE: OK` to `out` and returns 0. */
export function runConfigCheck(file: string, out: Output = process.stdout, err: Output = process.stderr): number {
  const { problems } = checkConfig(file);
  if (problems.length === 0) {
    out.write(`${file}: OK\n`);
    return 0;
  }
  err.write(problems.map((p) => `${formatProblem(file, p)}\n`).join(''));
  return 1;
}
