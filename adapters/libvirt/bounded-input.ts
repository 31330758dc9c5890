/** What was read from a stream with a size limit. */
export interface BoundedInput {
  text: string;
  /** The stream held more than the limit; `text` is then only its first `limit` bytes. */
  tooLarge: boolean;
  bytes: number;
}

/**
 * Read a stream as UTF-8, keeping at most `limit` bytes. The rest is read
 * and thrown away, so the writer (libvirt) never sees a broken pipe; the
 * caller's deadline bounds how long that may take.
 */
export function readBounded(stream: NodeJS.ReadableStream, limit: number): Promise<BoundedInput> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    stream.on('data', (b: Buffer | string) => {
      const buf = typeof b === 'string' ? Buffer.from(b) : b;
      bytes += buf.length;
      const room = limit - (bytes - buf.length);
      if (room > 0) chunks.push(room >= buf.length ? buf : buf.subarray(0, room));
    });
    stream.on('error', reject);
    stream.on('end', () => {
      const tooLarge = bytes > limit;
      resolve({ text: Buffer.concat(chunks).toString('utf8'), tooLarge, bytes });
    });
  });
}
