import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unifiedDiff } from '../../../adapters/libvirt/unified-diff';

/** What GNU diff -u says, without its two header lines. */
function gnuDiff(a: string, b: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'ctmigrate-diff-'));
  try {
    writeFileSync(join(dir, 'a'), a);
    writeFileSync(join(dir, 'b'), b);
    return spawnSync('diff', ['-u', join(dir, 'a'), join(dir, 'b')]).stdout.toString().split('\n').slice(2).join('\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ours = (a: string, b: string): string => unifiedDiff(a, b, 'a', 'b').split('\n').slice(2).join('\n');
const numbered = (n: number): string[] => Array.from({ length: n }, (_, i) => `line ${i + 1}`);

describe('unified diff', () => {
  it('is empty for equal texts', () => {
    assert.equal(unifiedDiff('x\n', 'x\n', 'a', 'b'), '');
  });

  it('matches GNU diff -u for insertions at both ends, separate hunks and replacements', () => {
    const base = numbered(40);
    const cases: string[][] = [
      ['line 0', ...base],
      [...base, 'line 41'],
      [...base.slice(0, 3), 'new a', ...base.slice(3, 30), 'new b', ...base.slice(30)],
      [...base.slice(0, 10), 'changed', ...base.slice(11, 14), 'new', ...base.slice(14)],
      base.filter((_, i) => i % 7 !== 3),
    ];
    for (const c of cases) {
      const a = `${base.join('\n')}\n`;
      const b = `${c.join('\n')}\n`;
      assert.equal(ours(a, b), gnuDiff(a, b));
    }
  });
});
