import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RegistryStore } from '../../plugin/ports/registry-store';
import { VmSpec } from '../../plugin/vm';
import { decodeRegistry, DecodedRegistry, encodeRegistry, VmRegistryError } from '../../plugin/vm-registry';

/** Name of the registry file inside the run dir. */
export const REGISTRY_FILE = 'vms.json';

/**
 * RegistryStore as `<run-dir>/vms.json` (0600). Each save writes a
 * temporary file and renames it over the old one, so a reader or a crash
 * sees the old set or the new one, never half of either. Saves run one
 * after the other in call order.
 */
export class FileRegistryStore implements RegistryStore {
  readonly path: string;
  private queue: Promise<void> = Promise.resolve();

  constructor(readonly runDir: string) {
    this.path = join(runDir, REGISTRY_FILE);
  }

  async load(): Promise<DecodedRegistry> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { vms: [], problems: [] };
      throw new VmRegistryError(`cannot read ${this.path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      return decodeRegistry(text);
    } catch (e) {
      if (e instanceof VmRegistryError) throw new VmRegistryError(`${this.path}: ${e.message}`);
      throw e;
    }
  }

  save(vms: readonly VmSpec[]): Promise<void> {
    const text = encodeRegistry(vms);
    const next = this.queue.then(() => this.write(text));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async write(text: string): Promise<void> {
    await mkdir(this.runDir, { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, this.path);
    } catch (e) {
      await rm(tmp, { force: true });
      throw new VmRegistryError(`cannot write ${this.path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
}
