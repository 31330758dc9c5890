import { open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointStore } from '../../plugin/ports/checkpoint-store';

/**
 * CRIU's image directory on the file system. CRIU passes it as
 * /proc/CRIU-PID/fd/N, a link to the open directory: joined paths resolve
 * through it like through the directory itself.
 */
export class ImageDirStore implements CheckpointStore {
  async read(dir: string, name: string, maxBytes: number): Promise<Uint8Array | null> {
    let fh;
    try {
      fh = await open(join(dir, name), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new Error(`cannot open ${name} in the image directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new Error(`${name} in the image directory is not a regular file`);
      if (st.size > maxBytes) throw new Error(`${name} in the image directory is ${st.size} bytes, more than the ${maxBytes} expected`);
      const buf = Buffer.allocUnsafe(st.size);
      let off = 0;
      while (off < buf.length) {
        const { bytesRead } = await fh.read(buf, off, buf.length - off, off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return buf.subarray(0, off);
    } finally {
      await fh.close();
    }
  }

  async write(dir: string, files: ReadonlyArray<{ name: string; bytes: Uint8Array }>): Promise<void> {
    const temps: Array<{ tmp: string; path: string }> = [];
    try {
      for (const f of files) {
        const path = join(dir, f.name);
        const tmp = `${path}.tmp-${process.pid}`;
        const fh = await open(tmp, 'w', 0o600);
        temps.push({ tmp, path });
        try {
          await fh.writeFile(f.bytes);
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
      for (const t of temps) await rename(t.tmp, t.path);
    } catch (e) {
      for (const t of temps) await rm(t.tmp, { force: true }).catch(() => undefined);
      throw new Error(`cannot write the image directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
}
