/** Formatting for kernel.bench.ts: rates, sizes, medians and the text table. */

export interface Row {
  measure: string;
  ours: string;
  baseline: string;
  ratio: string;
  target: string;
  verdict: string;
}

/** 350k, 1.25M, or the plain number below 10k. */
export function fmtRate(x: number): string {
  if (!Number.isFinite(x)) return '-';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 10_000) return `${Math.round(x / 1000)}k`;
  return String(Math.round(x));
}

export function fmtBytes(b: number): string {
  if (!Number.isFinite(b)) return '-';
  if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(1)} MB`;
  if (b >= 1 << 10) return `${(b / (1 << 10)).toFixed(1)} KB`;
  return `${Math.round(b)} B`;
}

/** Median (the lower middle for an even count); NaN for none. */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}

export function renderTable(rows: Row[]): string {
  const head: Row = { measure: 'measure', ours: 'ours', baseline: 'baseline', ratio: 'ratio', target: 'target', verdict: '' };
  const all = [head, ...rows];
  const w = (k: keyof Row): number => Math.max(...all.map((r) => r[k].length));
  const cols: (keyof Row)[] = ['measure', 'ours', 'baseline', 'ratio', 'target', 'verdict'];
  const widths = cols.map(w);
  return all
    .map((r) =>
      cols
        .map((k, i) => (k === 'ours' || k === 'ratio' ? r[k].padStart(widths[i]) : r[k].padEnd(widths[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** "100k", "1M", or the number itself. */
export function sizeLabel(n: number): string {
  return n >= 1_000_000 && n % 1_000_000 === 0 ? `${n / 1_000_000}M` : n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n);
}

/** A progress line on stderr, stamped with the time and the benchmark's name. */
export function sayAs(name: string): (s: string) => void {
  return (s) => process.stderr.write(`[${name} ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
}

/**
 * Walks a command line: `value()` takes the option's argument, `count()`
 * reads a positive integer ("100_000", "100k", "1M"); anything wrong calls
 * `usage` (which exits).
 */
export function argWalker(argv: readonly string[], usage: () => never): { next(): string | undefined; value(): string; count(s: string): number } {
  let i = -1;
  return {
    next: () => argv[++i],
    value: () => {
      const v = argv[++i];
      if (v === undefined) usage();
      return v;
    },
    count: (s) => {
      const n = Number(s.replace(/_/g, '').replace(/k$/i, '000').replace(/m$/i, '000000'));
      if (!Number.isInteger(n) || n <= 0) usage();
      return n;
    },
  };
}
