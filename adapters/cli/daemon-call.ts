import { DependencyContainer } from 'tsyringe';
import { ManagerClient, ManagerClientError } from '../../plugin/ports/manager-client';
import { VmSpecError } from '../../plugin/vm';
import { CommandError, UsageError } from './usage-error';
import { resolvePort } from '../../plugin/ports/port-token';

/**
 * Run `fn` against the local daemon and turn every failure into one line:
 * "access denied" for the bus policy, "not running" when nobody owns the
 * name, the daemon's own message otherwise. Exit 1, or 2 for bad arguments.
 */
export async function withDaemon<T>(container: DependencyContainer, fn: (client: ManagerClient) => Promise<T>): Promise<T> {
  const client = resolvePort(container, ManagerClient);
  try {
    return await fn(client);
  } catch (e) {
    if (e instanceof ManagerClientError) throw new CommandError(e.message, e.kind === 'invalid-args' ? 2 : 1);
    if (e instanceof VmSpecError) throw new UsageError(e.message);
    throw e;
  } finally {
    await client.close().catch(() => undefined);
  }
}
