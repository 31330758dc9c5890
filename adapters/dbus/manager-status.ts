import { MigrationService } from '../../plugin/migration-service';
import { ManagerStatus } from '../../plugin/ports/manager-client';
import { vmAddressTexts } from '../../plugin/vm';
import { formatMark } from './call-arguments';

/** The whole picture the Manager's Status() returns as JSON. */
export function managerStatus(engine: MigrationService, version: string): ManagerStatus {
  return {
    version,
    sessions: engine.sessions(),
    vms: engine.registered().map((r) => ({
      uuid: r.vm.uuid,
      addresses: vmAddressTexts(r.vm),
      zone: r.vm.zone ?? null,
      mark: formatMark(r.vm.mark),
      vmstateArgs: r.vmstateArgs,
    })),
  };
}
