import { createHash } from 'node:crypto';
import { CheckpointManifest, ManifestError, parseManifest } from './checkpoint-manifest';
import { CodecError } from './codec-error';
import { ContainerState } from './migration-service';
import { DecodedSnapshot } from './snapshot-decoder';
import { readSnapshot } from './snapshot-reader';

/**
 * The one check of a container's packed state, wherever it comes from (the
 * image directory, a peer): the manifest parses, names this container, and
 * the snapshot is the size and SHA-256 it names and decodes whole. Nothing
 * is acted upon before this passes.
 */

/** What is wrong with a packed state; `part` says which of the two files, `problem` what is wrong with it. */
export class ContainerStateError extends Error {
  constructor(
    readonly part: 'manifest' | 'snapshot',
    readonly problem: string,
    message: string = problem,
  ) {
    super(message);
    this.name = 'ContainerStateError';
  }
}

/** Check a manifest's text (ContainerStateError('manifest', ...) when it is not one). */
export function checkManifest(text: string): CheckpointManifest {
  try {
    return parseManifest(text);
  } catch (e) {
    if (e instanceof ManifestError) throw new ContainerStateError('manifest', e.message);
    throw e;
  }
}

/** Check the snapshot against its manifest and decode it (at most `capacity` entries). */
export async function checkSnapshot(manifest: CheckpointManifest, bytes: Uint8Array, capacity: number): Promise<DecodedSnapshot> {
  if (bytes.length !== manifest.bytes) throw new ContainerStateError('snapshot', `is ${bytes.length} bytes, the manifest says ${manifest.bytes}`);
  if (createHash('sha256').update(bytes).digest('hex') !== manifest.sha256) throw new ContainerStateError('snapshot', "does not match the manifest's SHA-256");
  try {
    return await readSnapshot(bytes, { maxEntries: Math.max(1, Math.min(capacity, manifest.entries)) });
  } catch (e) {
    if (e instanceof CodecError) throw new ContainerStateError('snapshot', `is unreadable: ${e.message}`);
    throw e;
  }
}

/** Both checks for a state a peer sends or receives; the error names the container. */
export async function checkContainerState(state: ContainerState, capacity: number): Promise<CheckpointManifest> {
  try {
    const manifest = checkManifest(state.manifest);
    if (manifest.container !== state.container) throw new ContainerStateError('manifest', `names container ${manifest.container}, not ${state.container}`);
    await checkSnapshot(manifest, state.snapshot, capacity);
    return manifest;
  } catch (e) {
    if (e instanceof ContainerStateError) throw new ContainerStateError(e.part, e.problem, `the state of container ${state.container}: the ${e.part} ${e.problem}`);
    throw e;
  }
}
