/**
 * Errors of the snapshot codecs (binary and JSON lines). Every one carries a
 * single line that says what was wrong and where, so a CLI can print
 * `err.message` as is. Whatever raised it, the target table is untouched:
 * decoders only ever write into their private staging table.
 */

/** Base of every codec error; catch this to handle both formats. */
export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CodecError';
  }
}

/** What kind of problem a binary snapshot had. */
export type SnapshotProblem =
  /** Not a ctmigrate snapshot at all (bad magic). */
  | 'magic'
  /** A format version this build cannot read. */
  | 'version'
  /** The input ended before the snapshot did. */
  | 'truncated'
  /** The trailer's CRC-32 does not match the bytes. */
  | 'checksum'
  /** A field holds a value the format does not allow. */
  | 'malformed'
  /** More entries than the caller allows (or the table holds). */
  | 'limit'
  /** Bytes after the trailer. */
  | 'trailing';

/** A binary snapshot (file, wire frame, vmstate blob) is not acceptable. */
export class SnapshotFormatError extends CodecError {
  constructor(
    readonly problem: SnapshotProblem,
    message: string,
    /** Byte offset in the input the problem was found at, when known. */
    readonly offset = -1,
    /** 1-based entry number, when the problem is in an entry. */
    readonly entry = -1,
  ) {
    super(message);
    this.name = 'SnapshotFormatError';
  }
}

/** A JSON-lines input has a line that does not parse or validate. */
export class FlowJsonError extends CodecError {
  constructor(
    /** 1-based line number. */
    readonly line: number,
    /** Dotted field path ("orig.src"), or '' when the line as a whole is wrong. */
    readonly field: string,
    message: string,
  ) {
    super(`line ${line}: ${field ? `${field} ` : ''}${message}`);
    this.name = 'FlowJsonError';
  }
}
