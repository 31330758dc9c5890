import { portToken } from './port-token';

/**
 * CRIU's image directory of one checkpoint (adapters/criu). CRIU hands
 * action scripts the directory as CRTOOLS_IMAGE_DIR, a /proc/PID/fd/N path
 * that only resolves while CRIU runs; every call takes it as given.
 */
export interface CheckpointStore {
  /** The file's bytes, or null when the directory has no such file; refuses a file over maxBytes. */
  read(dir: string, name: string, maxBytes: number): Promise<Uint8Array | null>;
  /**
   * Write the files so that a reader sees all of them or none: each goes to
   * a temporary name first, and the renames run in the order given (the
   * manifest last, so a manifest never names a snapshot that is not there).
   */
  write(dir: string, files: ReadonlyArray<{ name: string; bytes: Uint8Array }>): Promise<void>;
}
export const CheckpointStore = portToken<CheckpointStore>('CheckpointStore');
