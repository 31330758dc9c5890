import * as dbus from 'dbus-next';
import { VmStateHandler } from '../../plugin/ports/vmstate-port';
import { nameArguments } from './argument-names';
import { VMSTATE_HELPER_ID, VMSTATE_INTERFACE } from './names';
import { asDbusCall } from './service-errors';

/**
 * QEMU's `org.qemu.VMState1` at /org/qemu/VMState1 on the VM's own bus.
 * QEMU reads Id to match the helper against its id-list, calls Save() on the
 * source once the VM is stopped and Load() on the destination before it
 * resumes; an error reply fails the migration.
 */
export class VmStateObject extends dbus.interface.Interface {
  constructor(private readonly handler: VmStateHandler) {
    super(VMSTATE_INTERFACE);
    nameArguments(this, { Save: ['data'], Load: ['data'] });
  }

  get Id(): string {
    return VMSTATE_HELPER_ID;
  }

  /**
   * The handler's bytes go to dbus-next as they are: it marshals `ay` one
   * byte at a time (≈200 ms per MiB), so a copy here would only add to the
   * VM's blackout.
   */
  Save(): Promise<Uint8Array> {
    return asDbusCall(() => this.handler.save());
  }

  /** dbus-next hands `ay` over as a Buffer, which is a Uint8Array: passed on without a copy. */
  Load(data: Uint8Array): Promise<void> {
    return asDbusCall(() => this.handler.load(data));
  }
}

VmStateObject.configureMembers({
  properties: { Id: { signature: 's', access: 'read' } },
  methods: {
    Save: { outSignature: 'ay' },
    Load: { inSignature: 'ay' },
  },
});
