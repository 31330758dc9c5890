// The libvirt hook's work for one call, against the local daemon's
// ManagerClient. It never writes anything itself: it fills a HookOutcome
// (what to print, how to exit) step by step, so whoever runs it can stop at
// its deadline and still hand libvirt a sensible answer.

import { SessionInfo } from '../../plugin/migration-service';
import { Log } from '../../plugin/ports/log-port';
import { ManagerClient, ManagerClientError } from '../../plugin/ports/manager-client';
import { vmSpec, VmSpec, VmSpecError } from '../../plugin/vm';
import { withVmstateObject } from './domain-rewrite';
import { DomainFacts, DomainXmlError, readDomain } from './domain-xml';
import { HookInvocation, hookAction, TeardownStep, teardownSteps } from './hook-operation';
import { looksRequired } from './require-scan';
import { XmlRefusedError } from './xml-reader';

/** What the hook tells libvirt: stdout (the XML, or nothing) and the exit status. */
export class HookOutcome {
  /** Replacement domain XML for `migrate begin`; null = print nothing (libvirt keeps its XML). */
  xml: string | null = null;
  exitCode = 0;
}

/** Raised inside the hook when a VM with `<ctmigrate:require/>` cannot have its state carried. */
class RequiredStateError extends Error {}

export interface LibvirtHookOptions {
  /** Milliseconds left until the hook's own deadline. */
  remainingMs: () => number;
  /** Time kept back at the end of a migrate begin to undo a half-done prepare (abort). */
  reserveMs?: number;
}

/** Race a daemon call against the hook's deadline. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  if (ms <= 0) return Promise.reject(new ManagerClientError('timeout', `no time left for ${what} before the hook's deadline`));
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new ManagerClientError('timeout', `${what} did not finish before the hook's deadline`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export class LibvirtHook {
  private readonly reserveMs: number;

  constructor(
    private readonly client: ManagerClient,
    private readonly log: Log,
    private readonly options: LibvirtHookOptions,
  ) {
    this.reserveMs = options.reserveMs ?? 1500;
  }

  /**
   * Do what `inv` asks for the domain XML `xml`, recording the answer in
   * `outcome` as it goes. Resolves when done; never rejects.
   */
  async run(inv: HookInvocation, xml: string, outcome: HookOutcome): Promise<void> {
    const action = hookAction(inv);
    if (action === 'none') return;
    const fields = { guest: inv.guest, op: `${inv.operation} ${inv.subOperation} ${inv.extra}` };
    let facts: DomainFacts;
    try {
      facts = readDomain(xml);
    } catch (e) {
      if (!(e instanceof XmlRefusedError || e instanceof DomainXmlError)) throw e;
      // Nothing is done with XML we refuse. A migration of a VM that seems to
      // demand its state still fails: better a refused migration than one
      // that silently drops every connection the operator asked us to keep.
      const required = action === 'migrate-in' && looksRequired(xml);
      this.log.warn(`domain XML refused: ${e.message}; nothing done${required ? ' (the VM appears to require its connection state: migration refused)' : ''}`, fields);
      if (required) outcome.exitCode = 1;
      return;
    }
    const vmFields = { ...fields, vm: facts.uuid };
    for (const w of facts.warnings) this.log.warn(w, vmFields);
    let vm: VmSpec | null = null;
    try {
      vm = facts.addresses.length ? vmSpec(facts.uuid, facts.addresses, facts.zone, facts.mark) : null;
    } catch (e) {
      if (!(e instanceof VmSpecError)) throw e;
      this.log.warn(e.message, vmFields);
    }
    try {
      switch (action) {
        case 'register':
        case 'reconnect':
          if (!vm) return this.noAddresses(vmFields);
          await this.register(vm, vmFields);
          return;
        case 'migrate-in':
          await this.migrateIn(facts, vm, outcome, vmFields);
          return;
        case 'stopped':
        case 'release':
          await this.teardown(action, inv.extra, facts.uuid, vmFields);
          return;
      }
    } catch (e) {
      if (e instanceof RequiredStateError) {
        this.log.error(e.message, vmFields);
        outcome.exitCode = action === 'reconnect' ? 0 : 1;
        return;
      }
      if (e instanceof ManagerClientError) {
        if (e.kind === 'unavailable') this.log.warn(`${e.message}; nothing done`, vmFields);
        else this.log.error(e.message, vmFields);
        return;
      }
      throw e;
    }
  }

  private noAddresses(fields: Record<string, string>): void {
    this.log.warn('the domain XML names no addresses (no <ctmigrate:address>, nwfilter IP/IPV6 parameter or <interface><ip>); ctmigrate leaves this VM alone', fields);
  }

  private async register(vm: VmSpec, fields: Record<string, string>): Promise<string> {
    const args = await within(this.client.register(vm), this.options.remainingMs(), 'Register');
    this.log.info('VM registered', { ...fields, addresses: vm.addresses.length });
    return args;
  }

  /**
   * Destination, before QEMU starts. Register first: QEMU connects to the
   * helper's bus when it starts, and the XML must name this host's bus.
   * Then prepare the incoming session (block + pre-copy) with what time is
   * left, keeping a reserve to abort a prepare that cannot be waited for
   * when the VM requires its state (libvirt will not follow up a failed
   * migrate hook with any other call).
   */
  private async migrateIn(facts: DomainFacts, vm: VmSpec | null, outcome: HookOutcome, fields: Record<string, string>): Promise<void> {
    const required = facts.require;
    // Until proven otherwise a required VM fails: the deadline may cut us short anywhere below.
    if (required) outcome.exitCode = 1;
    if (!vm) {
      this.noAddresses(fields);
      if (required) throw new RequiredStateError(`VM ${facts.uuid} requires its connection state (<ctmigrate:require/>) but its domain XML names no addresses; migration refused`);
      return;
    }
    let objectArgs: string;
    try {
      objectArgs = await this.register(vm, fields);
    } catch (e) {
      if (!(e instanceof ManagerClientError)) throw e;
      if (facts.vmstateObjects.some((o) => o.ours)) this.log.warn('the domain carries a ctmigrate dbus-vmstate object but no helper could be started here: QEMU will not start until ctmigrated runs', fields);
      if (required) throw new RequiredStateError(`VM ${facts.uuid} requires its connection state (<ctmigrate:require/>), but ${e.message}; migration refused`);
      throw e;
    }
    const rewrite = withVmstateObject(facts, objectArgs);
    outcome.xml = rewrite.xml;
    this.log.info(rewrite.what, fields);
    let session: SessionInfo;
    try {
      session = await within(this.client.prepareIncoming(vm, {}), this.options.remainingMs() - (required ? this.reserveMs : 0), 'PrepareIncoming');
    } catch (e) {
      if (!(e instanceof ManagerClientError)) throw e;
      if (!required) {
        this.log.warn(`incoming session not prepared: ${e.message}; the VM migrates without its connection state`, fields);
        return;
      }
      if (e.kind === 'timeout') await within(this.client.abort(vm.uuid), this.options.remainingMs(), 'Abort').catch(() => undefined);
      await within(this.client.unregister(vm.uuid), this.options.remainingMs(), 'Unregister').catch(() => undefined);
      outcome.xml = null;
      throw new RequiredStateError(`VM ${vm.uuid} requires its connection state (<ctmigrate:require/>), but the incoming session could not be prepared: ${e.message}; migration refused`);
    }
    outcome.exitCode = 0;
    this.log.info('incoming session prepared', { ...fields, session: session.id, state: session.state, source: session.peer, blocked: String(session.blocked) });
  }

  private async teardown(event: 'stopped' | 'release', extra: string, uuid: string, fields: Record<string, string>): Promise<void> {
    const status = await within(this.client.status(), this.options.remainingMs(), 'Status');
    const mine = status.sessions.filter((s) => s.vm === uuid).sort((a, b) => a.createdAt - b.createdAt);
    const session = mine[mine.length - 1];
    const registered = status.vms.some((v) => v.uuid === uuid);
    const steps = teardownSteps(event, extra, session);
    for (const step of steps) {
      if (step === 'unregister' && !registered) continue;
      try {
        await this.step(step, uuid);
        this.log.info(`${step} done`, { ...fields, session: session?.id });
      } catch (e) {
        if (e instanceof ManagerClientError && e.kind === 'unavailable') throw e;
        this.log.warn(`${step}: ${message(e)}`, fields);
      }
    }
  }

  private step(step: TeardownStep, uuid: string): Promise<unknown> {
    const left = this.options.remainingMs();
    switch (step) {
      case 'cutover':
        return within(this.client.cutover(uuid), left, 'Cutover');
      case 'finish-migrated':
        return within(this.client.finish(uuid, 'migrated'), left, 'Finish');
      case 'finish-failed':
        return within(this.client.finish(uuid, 'failed'), left, 'Finish');
      case 'unregister':
        return within(this.client.unregister(uuid), left, 'Unregister');
    }
  }
}
