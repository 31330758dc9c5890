import { DecodedRegistry } from '../../../../plugin/vm-registry';
import { RegistryStore } from '../../../../plugin/ports/registry-store';
import { VmSpec } from '../../../../plugin/vm';

/** The run-dir registry in memory: what the engine saved last, to be loaded by a restarted engine. */
export class FakeRegistry implements RegistryStore {
  saved: VmSpec[] = [];
  saves = 0;

  async load(): Promise<DecodedRegistry> {
    return { vms: [...this.saved], problems: [] };
  }

  async save(vms: readonly VmSpec[]): Promise<void> {
    this.saved = [...vms];
    this.saves++;
  }
}
