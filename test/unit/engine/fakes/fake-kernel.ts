import { formatAddress } from '../../../../plugin/address';
import { ConnectionTable, Scan } from '../../../../plugin/connection-table';
import {
  ExtFlag,
  R_EXT,
  R_FAMILY,
  R_FLAGS,
  R_L4PROTO,
  R_NEXT,
  R_ORIG_DPORT,
  R_ORIG_DST,
  R_ORIG_SPORT,
  R_ORIG_SRC,
  R_REPLY_DST,
  R_REPLY_SRC,
  R_SEQ,
  R_VERSION_HI,
  R_VERSION_LO,
  R_ZONE,
  RecordFlag,
  X_MASTER_DPORT,
  X_MASTER_DST,
  X_MASTER_FAMILY,
  X_MASTER_L4PROTO,
  X_MASTER_SPORT,
  X_MASTER_SRC,
} from '../../../../plugin/flow';
import { flowMatches } from '../../../../plugin/flow-filter';
import { describeFlow } from '../../../../plugin/flow-text';
import { FlowRecord, FlowView } from '../../../../plugin/flow-view';
import { ConnectionFeed, Feed, FeedOptions, FeedStats } from '../../../../plugin/ports/connection-feed';
import { ConntrackPort, DumpStats, WriteFailure, WriteReport, WriteSelection } from '../../../../plugin/ports/conntrack-port';
import { FlowFilter } from '../../../../plugin/flow-filter';

/** The kernel's identity of an entry: original tuple and zone. */
export function entryKey(v: FlowView): string {
  return `${describeFlow(v)} #zone ${v.zone}`;
}

/** Everything the invariants compare: tuples, status, mark, zone, timeout, protocol state. */
export function entryText(v: FlowView): string {
  const len = v.addressLength;
  const rs = formatAddress(v.u8, v.rec + R_REPLY_SRC, len);
  const rd = formatAddress(v.u8, v.rec + R_REPLY_DST, len);
  const state = v.hasFlag(RecordFlag.HasProtoInfo) ? v.protoState : '-';
  return `${entryKey(v)} reply ${rs}:${v.replySport} -> ${rd}:${v.replyDport} status 0x${v.status.toString(16)} mark ${v.mark} timeout ${v.timeout} state ${state}`;
}

/** A copy of `v` as the kernel would hold it: no table bookkeeping. */
function kernelCopy(v: FlowView): FlowRecord {
  const r = new FlowRecord().copyFrom(v);
  r.setU32(R_SEQ, 0);
  r.setU32(R_VERSION_LO, 0);
  r.setU16(R_VERSION_HI, 0);
  r.setU32(R_NEXT, 0);
  r.setU8(R_FLAGS, r.flags & ~(RecordFlag.Live | RecordFlag.Tombstone));
  return r;
}

export type KernelChange = { type: 'upsert' | 'remove'; entry: FlowRecord };

/** One host's conntrack table: entries by key, and listeners for its events. */
export class FakeKernel {
  private readonly entries = new Map<string, FlowRecord>();
  private readonly listeners = new Set<(c: KernelChange) => void>();

  /** Hold exactly what `other` holds (the same host's kernel, seen by a restarted daemon). */
  replaceWith(other: FakeKernel): void {
    this.entries.clear();
    for (const [k, r] of other.entries) this.entries.set(k, r);
  }

  /** Create or replace an entry (what a packet or `conntrack -I/-U` does). */
  put(v: FlowView): void {
    const r = kernelCopy(v);
    this.entries.set(entryKey(r), r);
    this.notify({ type: 'upsert', entry: r });
  }

  /** Destroy an entry; false when it was not there. */
  delete(v: FlowView): boolean {
    const key = entryKey(v);
    const r = this.entries.get(key);
    if (!r) return false;
    this.entries.delete(key);
    this.notify({ type: 'remove', entry: r });
    return true;
  }

  has(v: FlowView): boolean {
    return this.entries.has(entryKey(v));
  }

  get size(): number {
    return this.entries.size;
  }

  /** Entries (as entryText) that the filter selects, sorted; every entry without a filter. */
  texts(filter?: FlowFilter): string[] {
    return [...this.entries.values()]
      .filter((r) => !filter || flowMatches(filter, r))
      .map(entryText)
      .sort();
  }

  /** Entries the filter does not select, sorted. */
  others(filter: FlowFilter): string[] {
    return [...this.entries.values()]
      .filter((r) => !flowMatches(filter, r))
      .map(entryText)
      .sort();
  }

  forEach(fn: (r: FlowRecord) => void): void {
    for (const r of this.entries.values()) fn(r);
  }

  subscribe(fn: (c: KernelChange) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private notify(c: KernelChange): void {
    for (const l of this.listeners) l(c);
  }
}

/** ConntrackPort over a FakeKernel. */
export class FakeConntrack implements ConntrackPort {
  /** Entries the kernel refuses on create (EINVAL), by predicate. */
  refuse: ((v: FlowView) => boolean) | null = null;
  /** Awaited inside create() before the kernel is written: lets a test hold a commit. */
  gate: (() => Promise<void>) | null = null;

  constructor(
    private readonly kernel: FakeKernel,
    private readonly trace: string[] = [],
  ) {}

  async dump(filter: FlowFilter, into: ConnectionTable): Promise<DumpStats> {
    let entries = 0;
    let filtered = 0;
    this.kernel.forEach((r) => {
      if (flowMatches(filter, r)) {
        into.upsert(r);
        entries++;
      } else filtered++;
    });
    return { entries, filtered, kernelFilters: [] };
  }

  async create(selection: WriteSelection): Promise<WriteReport> {
    if (this.gate) await this.gate();
    const report: WriteReport = { created: 0, replaced: 0, deleted: 0, failures: [] };
    const written: string[] = [];
    this.each(selection, (v, slot) => {
      if (this.refuse?.(v)) {
        report.failures.push(failure(slot, v, 'EINVAL', 'refused by the fake kernel'));
        return;
      }
      // As the kernel does: a related entry needs its master in the table first.
      if (v.hasExt(ExtFlag.Master) && !this.kernel.has(masterOf(v))) {
        report.failures.push(failure(slot, v, 'ENOENT', 'master entry missing (the related entry needs its master first)'));
        return;
      }
      if (this.kernel.has(v) && selection.keepExisting?.(v, slot)) {
        report.failures.push(failure(slot, v, 'EEXIST', "an entry that is not the VM's holds this tuple; left alone"));
        return;
      }
      if (this.kernel.has(v)) report.replaced++;
      else report.created++;
      this.kernel.put(v);
      written.push(describeFlow(v));
    });
    this.trace.push(`create ${written.sort().join(', ')}`);
    return report;
  }

  async remove(selection: WriteSelection): Promise<WriteReport> {
    const report: WriteReport = { created: 0, replaced: 0, deleted: 0, failures: [] };
    const removed: string[] = [];
    this.each(selection, (v, slot) => {
      if (this.kernel.delete(v)) {
        report.deleted++;
        removed.push(describeFlow(v));
      } else report.failures.push(failure(slot, v, 'ENOENT', 'no such entry'));
    });
    this.trace.push(`remove ${removed.sort().join(', ')}`);
    return report;
  }

  /** The selection as the real port makes it: live records in (from, upTo] that the filter selects (among its slots), masters first. */
  private each(selection: WriteSelection, fn: (v: FlowView, slot: number) => void): void {
    const t = selection.table;
    const from = selection.from ?? 0;
    const upTo = selection.upTo ?? t.version;
    const candidates: number[] = [];
    if (selection.slots) candidates.push(...Array.from(selection.slots));
    else {
      const cur = t.cursor().reset(Scan.Delta, from, upTo);
      while (cur.next()) candidates.push(cur.slot);
    }
    const plain: number[] = [];
    const related: number[] = [];
    for (const slot of candidates) {
      const v = this.at(t, slot);
      if ((v.flags & RecordFlag.Live) === 0 || v.version <= from || v.version > upTo) continue;
      if (selection.filter && !selection.filter(v, slot)) continue;
      (v.hasExt(ExtFlag.Master) ? related : plain).push(slot);
    }
    for (const slot of [...plain, ...related]) fn(this.at(t, slot), slot);
  }

  private at(t: ConnectionTable, slot: number): FlowView {
    const rec = t.recordOffset(slot);
    const ext = t.u32[(rec + R_EXT) >> 2];
    return new FlowView(t.u8, t.u16, t.u32).at(rec, ext === 0 ? -1 : t.extOffset(ext - 1));
  }
}

/** The master's identity (original tuple, in the related entry's zone) from a related entry's extension. */
export function masterOf(v: FlowView): FlowRecord {
  const m = new FlowRecord();
  m.setU8(R_FAMILY, v.extU8(X_MASTER_FAMILY));
  m.setU8(R_L4PROTO, v.extU8(X_MASTER_L4PROTO));
  for (let i = 0; i < 16; i++) {
    m.u8[R_ORIG_SRC + i] = v.extU8(X_MASTER_SRC + i);
    m.u8[R_ORIG_DST + i] = v.extU8(X_MASTER_DST + i);
  }
  m.setU16(R_ORIG_SPORT, v.extU16(X_MASTER_SPORT));
  m.setU16(R_ORIG_DPORT, v.extU16(X_MASTER_DPORT));
  if (v.hasFlag(RecordFlag.HasZone)) {
    m.setU16(R_ZONE, v.zone);
    m.setFlag(RecordFlag.HasZone);
  }
  return m;
}

function failure(slot: number, v: FlowView, code: string, reason: string): WriteFailure {
  return { slot, code, reason, flow: describeFlow(v) };
}

/** A running FakeFeed. */
export class FakeFeedHandle implements Feed {
  readonly ready: Promise<FeedStats>;
  stopped = false;
  private readonly counts: FeedStats = { dumped: 0, events: 0, overruns: 0, repaired: 0 };
  private readonly unsubscribe: () => void;

  constructor(
    readonly table: ConnectionTable,
    kernel: FakeKernel,
    private readonly options: FeedOptions,
    /** Apply kernel events on a microtask, as a worker thread would apply them a little later. */
    private readonly deferred: boolean,
  ) {
    kernel.forEach((r) => {
      if (flowMatches(options.filter, r)) {
        table.upsert(r);
        this.counts.dumped++;
      }
    });
    this.unsubscribe = options.follow ? kernel.subscribe((c) => this.event(c)) : () => undefined;
    this.ready = Promise.resolve({ ...this.counts });
  }

  private event(c: KernelChange): void {
    const apply = (): void => {
      if (this.stopped) return;
      this.counts.events++;
      if (c.type === 'upsert' && flowMatches(this.options.filter, c.entry)) this.table.upsert(c.entry);
      else this.table.remove(c.entry);
    };
    if (this.deferred) queueMicrotask(apply);
    else apply();
  }

  async stats(): Promise<FeedStats> {
    return { ...this.counts };
  }

  /** Every kernel event so far was queued before this, so it is applied before this resolves. */
  sync(): Promise<number> {
    return new Promise((resolve) => queueMicrotask(() => resolve(this.table.version)));
  }

  async reclaim(upTo: number): Promise<number> {
    return this.table.reclaim(upTo);
  }

  async stop(): Promise<FeedStats> {
    this.stopped = true;
    this.unsubscribe();
    return { ...this.counts };
  }
}

/** ConnectionFeed over a FakeKernel: dump, then follow every change. */
export class FakeFeed implements ConnectionFeed {
  readonly started: FakeFeedHandle[] = [];

  constructor(
    private readonly kernel: FakeKernel,
    private readonly deferred = true,
  ) {}

  start(table: ConnectionTable, options: FeedOptions): Feed {
    const f = new FakeFeedHandle(table, this.kernel, options, this.deferred);
    this.started.push(f);
    return f;
  }
}
