#!/usr/bin/env node
// The libvirt hook's program: packaging/libvirt/qemu.d/ctmigrate runs it as
// `node libvirt-hook.js GUEST OPERATION SUB-OPERATION EXTRA` with the
// domain XML on stdin. stdout carries the domain XML and nothing else (only
// for migrate/restore begin); every log line goes to stderr, which libvirt
// and the journal keep. The whole run has its own deadline.
import 'reflect-metadata';
import { HookInvocation, hookAction, hookInvocation, printsXml } from '../libvirt/hook-operation';
import { readBounded } from '../libvirt/bounded-input';
import { HookOutcome, LibvirtHook } from '../libvirt/libvirt-hook';
import { looksRequired } from '../libvirt/require-scan';
import { DEFAULT_XML_LIMITS } from '../libvirt/xml-reader';
import { ManagerClient } from '../../plugin/ports/manager-client';
import { buildContainer } from './composition-root';
import { packageVersion } from './package-info';
import { StderrLog } from './stderr-log';
import { resolvePort } from '../../plugin/ports/port-token';

/** libvirt waits for its hooks; ours gives up on its own well before anyone notices. */
const DEFAULT_DEADLINE_MS = 8000;
/** Time kept to write the answer and exit after the last daemon call. */
const EXIT_MARGIN_MS = 250;

const HELP = `Usage: ctmigrate GUEST OPERATION SUB-OPERATION EXTRA   (domain XML on stdin)

ctmigrate's libvirt QEMU hook (installed as /etc/libvirt/hooks/qemu.d/ctmigrate).
libvirt runs it; it tells the local ctmigrated about the VM:
  prepare|start|started|attach begin   register the VM
  migrate begin                        prepare the incoming session; print the
                                       XML with the dbus-vmstate object added
  stopped end                          source: cut over; otherwise tear down
  release end                          source: finish migrated; destination
                                       before ready: roll back; then unregister
  reconnect begin                      re-register (always exits 0)
It exits 0 when ctmigrated is absent, except that migrate begin fails for a VM
with <ctmigrate:require/>. CTMIGRATE_HOOK_TIMEOUT (seconds, default 8) bounds
each run. DBUS_SYSTEM_BUS_ADDRESS is honoured.
`;

function deadlineMs(): number {
  const s = Number(process.env.CTMIGRATE_HOOK_TIMEOUT);
  return Number.isFinite(s) && s > 0 && s <= 300 ? s * 1000 : DEFAULT_DEADLINE_MS;
}

function exitWith(inv: HookInvocation, outcome: HookOutcome): void {
  // A failing reconnect hook makes libvirt kill the running VM: never.
  const code = hookAction(inv) === 'reconnect' ? 0 : outcome.exitCode;
  if (printsXml(inv) && outcome.xml !== null) process.stdout.write(outcome.xml, () => process.exit(code));
  else process.exit(code);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
    process.stdout.write(HELP);
    return;
  }
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    process.stdout.write(`ctmigrate libvirt hook ${packageVersion()}\n`);
    return;
  }
  const started = Date.now();
  const deadline = deadlineMs();
  const inv = hookInvocation(argv);
  const log = new StderrLog();
  const outcome = new HookOutcome();
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    exitWith(inv, outcome);
  };
  setTimeout(() => {
    log.warn(`hook deadline of ${deadline / 1000} s reached; answering libvirt with what is done`, { guest: inv.guest, op: `${inv.operation} ${inv.subOperation}` });
    finish();
  }, deadline - EXIT_MARGIN_MS).unref();
  try {
    const input = await readBounded(process.stdin, DEFAULT_XML_LIMITS.maxLength);
    if (hookAction(inv) === 'none') return finish();
    if (input.tooLarge) {
      const required = hookAction(inv) === 'migrate-in' && looksRequired(input.text);
      log.warn(`domain XML refused: ${input.bytes} bytes exceed the limit of ${DEFAULT_XML_LIMITS.maxLength}; nothing done${required ? ' (the VM appears to require its connection state: migration refused)' : ''}`, { guest: inv.guest });
      if (required) outcome.exitCode = 1;
      return finish();
    }
    const client = resolvePort(buildContainer(), ManagerClient);
    const hook = new LibvirtHook(client, log, { remainingMs: () => deadline - EXIT_MARGIN_MS - (Date.now() - started) });
    try {
      await hook.run(inv, input.text, outcome);
    } finally {
      await client.close().catch(() => undefined);
    }
  } catch (e) {
    log.error(`hook failed: ${e instanceof Error ? e.message : String(e)}`, { guest: inv.guest, op: `${inv.operation} ${inv.subOperation}` });
  }
  finish();
}

void main();
