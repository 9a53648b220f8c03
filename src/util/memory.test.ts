import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { EXTERNAL_CHURN, noteExternalGarbage } from './memory.ts';

test('a minor GC runs once EXTERNAL_CHURN bytes of streamed data have been noted, not before', async () => {
  const minors: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minors.push(e.startTime);
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  try {
    noteExternalGarbage(EXTERNAL_CHURN); // settles whatever count earlier calls left
    await new Promise((r) => setTimeout(r, 50));
    minors.length = 0;
    noteExternalGarbage(EXTERNAL_CHURN - 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(minors.length, 0, 'below the threshold: no GC asked for');
    noteExternalGarbage(1);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(minors.length >= 1, 'at the threshold: a scavenge ran');
  } finally {
    obs.disconnect();
  }
});
