import { FlowJsonError } from './codec-error';
import { ConnectionTable, Scan, TableFullError } from './connection-table';
import { RecordFlag, R_FLAGS } from './flow';
import { FlowRecord, FlowView } from './flow-view';
import { DecodeLimits, DecodedSnapshot } from './snapshot-decoder';
import { SnapshotKind } from './snapshot-format';
import { flowToJson } from './flow-json-print';
import { parseFlowJson } from './flow-json-parse';

/** Whole JSON-lines inputs and outputs: framing, limits, the staging table. */

/** Longest line accepted: far above any entry, low enough to stop a runaway input. */
export const MAX_JSON_LINE = 64 * 1024;

/** Input for decodeJsonLines: the whole text, or chunks (Buffers, strings), sync or async. */
export type TextInput = string | Uint8Array | Iterable<Uint8Array | string> | AsyncIterable<Uint8Array | string>;

/**
 * Parse and validate every line of a JSON-lines input into a private
 * staging table; any bad line fails the whole input (FlowJsonError naming
 * the line) and nothing is kept. Blank lines are skipped. A key that
 * appears twice: the later line wins.
 */
export async function decodeJsonLines(input: TextInput, limits: DecodeLimits): Promise<DecodedSnapshot> {
  const dec = new JsonLinesDecoder(limits);
  if (typeof input === 'string' || input instanceof Uint8Array) dec.write(input);
  else if (Symbol.asyncIterator in input) for await (const c of input) dec.write(c);
  else for (const c of input) dec.write(c);
  return dec.end();
}

/** Streaming form of decodeJsonLines: write() chunks split anywhere, then end(). */
export class JsonLinesDecoder {
  private readonly text = new TextDecoder('utf-8', { fatal: true });
  private partial = '';
  private lineNo = 0;
  private count = 0;
  private bytes = 0;
  private readonly rec = new FlowRecord();
  private readonly table: ConnectionTable;
  private readonly maxEntries: number;

  constructor(limits: DecodeLimits) {
    this.maxEntries = limits.maxEntries;
    if (limits.staging) {
      limits.staging.clear();
      this.table = limits.staging;
      this.maxEntries = Math.min(this.maxEntries, limits.staging.capacity);
    } else this.table = ConnectionTable.create({ capacity: limits.maxEntries, extCapacity: limits.maxEntries });
  }

  write(chunk: Uint8Array | string): void {
    let s: string;
    if (typeof chunk === 'string') s = chunk;
    else {
      this.bytes += chunk.length;
      try {
        s = this.text.decode(chunk, { stream: true });
      } catch {
        throw new FlowJsonError(this.lineNo + 1, '', 'is not valid UTF-8');
      }
    }
    let start = 0;
    for (;;) {
      const nl = s.indexOf('\n', start);
      if (nl < 0) break;
      const line = this.partial + s.slice(start, nl);
      this.partial = '';
      this.line(line);
      start = nl + 1;
    }
    this.partial += s.slice(start);
    if (this.partial.length > MAX_JSON_LINE) throw new FlowJsonError(this.lineNo + 1, '', `is longer than ${MAX_JSON_LINE} characters`);
  }

  end(): DecodedSnapshot {
    try {
      this.partial += this.text.decode();
    } catch {
      throw new FlowJsonError(this.lineNo + 1, '', 'is not valid UTF-8 (the input ends inside a character)');
    }
    if (this.partial !== '') this.line(this.partial);
    this.partial = '';
    return {
      format: 'json',
      kind: SnapshotKind.Snapshot,
      from: 0,
      to: 0,
      entries: this.count,
      live: this.count,
      tombstones: 0,
      bytes: this.bytes,
      table: this.table,
    };
  }

  private line(raw: string): void {
    this.lineNo++;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.length > MAX_JSON_LINE) throw new FlowJsonError(this.lineNo, '', `is longer than ${MAX_JSON_LINE} characters`);
    if (line.trim() === '') return;
    if (this.count >= this.maxEntries) throw new FlowJsonError(this.lineNo, '', `is past the limit of ${this.maxEntries} entries; nothing imported`);
    parseFlowJson(line, this.lineNo, this.rec);
    try {
      this.table.upsert(this.rec);
    } catch (err) {
      if (err instanceof TableFullError) throw new FlowJsonError(this.lineNo, '', `does not fit: ${err.message}`);
      throw err;
    }
    this.count++;
  }
}

/**
 * Write the selected entries of a table as JSON lines (live entries only:
 * a line cannot say "deleted"). `write` gets text pieces of up to ~1 MiB.
 */
export async function encodeJsonLines(
  table: ConnectionTable,
  sel: { scan: Scan; from: number; to: number; filter?: (v: FlowView) => boolean },
  write: (text: string) => void | Promise<void>,
): Promise<number> {
  const cur = table.cursor().reset(sel.scan, sel.from, sel.to);
  const v = cur.view;
  const copy = new FlowRecord();
  let out: string[] = [];
  let size = 0;
  let n = 0;
  while (cur.next()) {
    if ((v.u8[v.rec + R_FLAGS] & RecordFlag.Live) === 0) continue;
    let gone = false;
    for (;;) {
      copy.copyFrom(v);
      if (cur.stable()) break;
      if (!cur.retry()) {
        gone = true;
        break;
      }
    }
    if (gone || (copy.u8[R_FLAGS] & RecordFlag.Live) === 0) continue;
    if (sel.filter && !sel.filter(copy)) continue;
    const line = flowToJson(copy);
    out.push(line);
    size += line.length + 1;
    n++;
    if (size >= 1 << 20) {
      await write(out.join('\n') + '\n');
      out = [];
      size = 0;
    }
  }
  if (out.length) await write(out.join('\n') + '\n');
  return n;
}

