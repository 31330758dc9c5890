import { DecodeLimits, DecodedSnapshot, SnapshotDecoder } from './snapshot-decoder';
import { JsonLinesDecoder } from './json-lines';
import { MAGIC } from './snapshot-format';

/** Where a loader reads from: the bytes at once, or chunks (a file or stdin stream). */
export type ByteSource = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/**
 * Read either format, told apart by the first byte: the binary snapshot
 * starts with 0x89 (never the start of text), anything else is JSON lines.
 * The whole input is validated into a private staging table before this
 * resolves; on any problem it rejects with a CodecError (SnapshotFormatError
 * or FlowJsonError) and nothing else has changed. An empty input is JSON
 * lines with no entries.
 */
export async function readSnapshot(source: ByteSource, limits: DecodeLimits): Promise<DecodedSnapshot> {
  let sink: SnapshotDecoder | JsonLinesDecoder | null = null;
  const feed = (chunk: Uint8Array): void => {
    if (chunk.length === 0) return;
    if (!sink) sink = chunk[0] === MAGIC[0] ? new SnapshotDecoder(limits) : new JsonLinesDecoder(limits);
    sink.write(chunk);
  };
  if (source instanceof Uint8Array) feed(source);
  else if (Symbol.asyncIterator in source) for await (const c of source as AsyncIterable<Uint8Array>) feed(toBytes(c));
  else for (const c of source as Iterable<Uint8Array>) feed(toBytes(c));
  const s = sink as SnapshotDecoder | JsonLinesDecoder | null;
  return (s ?? new JsonLinesDecoder(limits)).end();
}

function toBytes(c: Uint8Array | string): Uint8Array {
  return typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
}
