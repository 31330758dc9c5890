/**
 * Readiness: when the destination may lift the drop for a VM.
 *
 * - `complete` (default): the snapshot and the residual delta are applied.
 * - `precopy`: the snapshot is applied (changes may still be on the way).
 * - `fraction:F`: at least F (0 < F <= 1) of the entries the source
 *   announced are committed.
 * - `tcp-established`: the established TCP entries of the final state are
 *   committed; the final delta commits them first, the rest follows. After
 *   a switchover during the snapshot the source sends the changes since the
 *   snapshot, then the snapshot's remaining established TCP entries, then
 *   the rest (snapshot-shipment.ts): the drop lifts once the first two are in.
 */
export type Readiness =
  | { kind: 'complete' }
  | { kind: 'precopy' }
  | { kind: 'fraction'; fraction: number }
  | { kind: 'tcp-established' };

/** A readiness policy text that cannot be used. */
export class ReadinessError extends Error {
  constructor(text: string) {
    super(`unknown readiness policy ${JSON.stringify(text)} (use complete, precopy, fraction:F with 0 < F <= 1, or tcp-established)`);
    this.name = 'ReadinessError';
  }
}

export function parseReadiness(text: string): Readiness {
  const t = text.trim();
  if (t === 'complete') return { kind: 'complete' };
  if (t === 'precopy') return { kind: 'precopy' };
  if (t === 'tcp-established') return { kind: 'tcp-established' };
  const m = /^fraction:(\d*\.?\d+)$/.exec(t);
  if (m) {
    const f = Number(m[1]);
    if (f > 0 && f <= 1) return { kind: 'fraction', fraction: f };
  }
  throw new ReadinessError(text);
}

export function formatReadiness(r: Readiness): string {
  return r.kind === 'fraction' ? `fraction:${r.fraction}` : r.kind;
}

/** What the destination has done so far. */
export interface ImportProgress {
  snapshotApplied: boolean;
  finalApplied: boolean;
  /** The established TCP entries of the final delta are committed (the rest may not be yet). */
  finalEstablishedApplied: boolean;
  /**
   * A switchover came during the snapshot, and the changes since the
   * snapshot plus every established TCP entry of its rest are committed.
   */
  establishedApplied: boolean;
  /** Entries the source announced for its snapshot (null: unknown). */
  announced: number | null;
  committed: number;
}

/** Whether the policy lets the drop be lifted now. */
export function isReady(r: Readiness, p: ImportProgress): boolean {
  switch (r.kind) {
    case 'complete':
      return p.finalApplied;
    case 'precopy':
      return p.snapshotApplied;
    case 'tcp-established':
      return p.finalEstablishedApplied || p.establishedApplied || p.finalApplied;
    case 'fraction':
      if (p.finalApplied) return true;
      if (!p.snapshotApplied && p.announced === null) return false;
      if (p.announced === null || p.announced === 0) return p.snapshotApplied;
      return p.committed >= Math.ceil(r.fraction * p.announced);
  }
}
