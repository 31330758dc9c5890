// The libvirt hook driven exactly as libvirt drives it — four arguments, the
// domain XML on stdin, `env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin` (plus
// DBUS_SYSTEM_BUS_ADDRESS, which libvirt passes on when set) — through a
// symlink in a qemu.d folder, against two real ctmigrated "hosts" in network
// namespaces of their own, each on its own private bus. The call sequences
// are the ones ENVIRONMENT.md records for libvirt 9.0: destination
// migrate/prepare/start/started begin; source stopped end -, release end -.

import { strict as assert } from 'node:assert';
import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { readDomain } from '../../adapters/libvirt/domain-xml';
import { SessionInfo } from '../../plugin/migration-service';
import { ManagerStatus } from '../../plugin/ports/manager-client';
import { PrivateBus, startPrivateBus } from '../support/private-bus';
import { elementNames, isSubsequence, xmllint } from '../unit/libvirt/domain-fixtures';
import { setTimeout as sleep } from 'node:timers/promises';

const REPO = resolve(__dirname, '../../..');
const HOOK_IN_REPO = join(REPO, 'packaging/libvirt/qemu.d/ctmigrate');
const CLI = join(REPO, 'dist/adapters/cli');
const MINIMAL_PATH = 'PATH=/usr/sbin:/usr/bin:/sbin:/bin';
const VM = '6f1c2b3a-0000-4000-8000-00000000c0de';
const VM_ADDRESS = '192.0.2.10';
const A_ADDRESS = '198.51.100.1';
const B_ADDRESS = '198.51.100.2';

const domainXml = (extraMeta = ''): string => `<domain type='qemu'>
  <name>web1</name>
  <uuid>${VM}</uuid>
  <metadata>
    <ctmigrate:vm xmlns:ctmigrate="urn:ctmigrate:vm:1">
      <ctmigrate:address>${VM_ADDRESS}</ctmigrate:address>${extraMeta}
    </ctmigrate:vm>
  </metadata>
  <memory unit='KiB'>32768</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <interface type='ethernet'>
      <filterref filter='clean-traffic'>
        <parameter name='IP' value='${VM_ADDRESS}'/>
      </filterref>
    </interface>
  </devices>
</domain>
`;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], input = '', timeoutMs = 30_000): Promise<Result> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

async function runOk(cmd: string, args: string[]): Promise<Result> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r;
}


/** One "host": a network namespace with its own system bus and ctmigrated. */
class Host {
  daemon: ChildProcess | null = null;
  log = '';
  constructor(
    readonly ns: string,
    readonly address: string,
    readonly bus: PrivateBus,
    readonly runDir: string,
    private readonly daemonArgs: string[],
  ) {}

  async startDaemon(): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', this.ns, 'env', `DBUS_SYSTEM_BUS_ADDRESS=${this.bus.address}`, process.execPath, join(CLI, 'ctmigrated.js'), ...this.daemonArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.daemon = child;
    this.log = '';
    child.stderr?.on('data', (b: Buffer) => (this.log += b.toString()));
    const deadline = Date.now() + 15_000;
    while (!/ctmigrated ready/.test(this.log)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`ctmigrated in ${this.ns} did not start: ${this.log}`);
      await sleep(50);
    }
  }

  async stopDaemon(): Promise<void> {
    const child = this.daemon;
    this.daemon = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(killer);
  }

  /** The hook as libvirt runs it: minimal environment, XML on stdin. */
  hook(args: string, xml: string, hookPath: string, busAddress = this.bus.address): Promise<Result> {
    return run('ip', ['netns', 'exec', this.ns, 'env', '-i', MINIMAL_PATH, `DBUS_SYSTEM_BUS_ADDRESS=${busAddress}`, hookPath, ...args.split(' ')], xml);
  }

  ctl(args: string[]): Promise<Result> {
    return run('ip', ['netns', 'exec', this.ns, 'env', `DBUS_SYSTEM_BUS_ADDRESS=${this.bus.address}`, process.execPath, join(CLI, 'ctmigratectl.js'), ...args]);
  }

  async status(): Promise<ManagerStatus> {
    const r = await this.ctl(['status', '--json']);
    if (r.code !== 0) throw new Error(`status in ${this.ns}: ${r.stderr}`);
    return JSON.parse(r.stdout) as ManagerStatus;
  }

  async session(): Promise<SessionInfo | undefined> {
    const s = (await this.status()).sessions.filter((x) => x.vm === VM);
    return s[s.length - 1];
  }

  async waitSession(what: string, ok: (s: SessionInfo | undefined) => boolean, timeoutMs = 15_000): Promise<SessionInfo | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.session();
      if (ok(s)) return s;
      if (Date.now() > deadline) throw new Error(`${this.ns}: session never ${what}; last: ${JSON.stringify(s)}\n${this.log.slice(-3000)}`);
      await sleep(100);
    }
  }

  /** The VM's entries in this namespace's kernel table. */
  async vmEntries(): Promise<number> {
    const r = await run('ip', ['netns', 'exec', this.ns, 'conntrack', '-L', '-s', VM_ADDRESS]);
    return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
  }

  async addVmEntries(n: number, firstPort: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      await runOk('ip', ['netns', 'exec', this.ns, 'conntrack', '-I', '-p', 'tcp', '-s', VM_ADDRESS, '-d', '203.0.113.5', '--sport', String(firstPort + i), '--dport', '443', '--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED', '-t', '600']);
    }
  }
}

describe('libvirt hook, called as libvirt calls it, against two ctmigrated hosts', function () {
  this.timeout(180_000);
  const tag = randomBytes(3).toString('hex');
  const nsA = `ctmh-a-${tag}`;
  const nsB = `ctmh-b-${tag}`;
  let dir: string;
  let hook: string;
  let a: Host;
  let b: Host;
  const buses: PrivateBus[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ctmigrate-hook-'));
    // libvirt finds the hook through a symlink in its qemu.d: the shim must follow it to the checkout.
    mkdirSync(join(dir, 'hooks/qemu.d'), { recursive: true });
    hook = join(dir, 'hooks/qemu.d/ctmigrate');
    symlinkSync(HOOK_IN_REPO, hook);
    writeFileSync(join(dir, 'psk'), randomBytes(32).toString('hex'), { mode: 0o600 });
    await runOk('ip', ['netns', 'add', nsA]);
    await runOk('ip', ['netns', 'add', nsB]);
    await runOk('ip', ['link', 'add', `va${tag}`, 'netns', nsA, 'type', 'veth', 'peer', 'name', `vb${tag}`, 'netns', nsB]);
    await runOk('ip', ['-n', nsA, 'addr', 'add', `${A_ADDRESS}/24`, 'dev', `va${tag}`]);
    await runOk('ip', ['-n', nsB, 'addr', 'add', `${B_ADDRESS}/24`, 'dev', `vb${tag}`]);
    for (const [ns, dev] of [[nsA, `va${tag}`], [nsB, `vb${tag}`]]) {
      await runOk('ip', ['-n', ns, 'link', 'set', dev, 'up']);
      await runOk('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    for (let i = 0; i < 2; i++) buses.push(await startPrivateBus());
    const psk = join(dir, 'psk');
    a = new Host(nsA, A_ADDRESS, buses[0], join(dir, 'runA'), ['--listen', `${A_ADDRESS}:7471`, '--psk-file', psk, '--run-dir', join(dir, 'runA'), '--config', '/dev/null']);
    b = new Host(nsB, B_ADDRESS, buses[1], join(dir, 'runB'), ['--listen', `${B_ADDRESS}:7471`, '--psk-file', psk, '--run-dir', join(dir, 'runB'), '--peer', `${A_ADDRESS}:7471`, '--config', '/dev/null']);
    await a.startDaemon();
    await b.startDaemon();
  });

  after(async () => {
    await a?.stopDaemon().catch(() => undefined);
    await b?.stopDaemon().catch(() => undefined);
    for (const bus of buses) await bus.stop().catch(() => undefined);
    await run('ip', ['netns', 'del', nsA]);
    await run('ip', ['netns', 'del', nsB]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The source's start: prepare, start, started. */
  async function startOnA(): Promise<void> {
    for (const op of ['prepare begin -', 'start begin -', 'started begin -']) {
      const r = await a.hook(`web1 ${op}`, domainXml(), hook);
      assert.deepEqual([r.code, r.stdout], [0, ''], `${op}: ${r.stderr}`);
    }
  }

  /** Destination migrate begin: the XML printed must be the domain with B's helper object. */
  async function migrateBeginOnB(): Promise<void> {
    const xml = domainXml();
    const r = await b.hook('web1 migrate begin -', xml, hook);
    assert.equal(r.code, 0, r.stderr);
    xmllint(r.stdout);
    assert.ok(isSubsequence(elementNames(xml), elementNames(r.stdout)), 'every original element kept');
    const o = readDomain(r.stdout).vmstateObjects;
    assert.equal(o.length, 1);
    assert.equal(o[0].options.values.get('addr'), `unix:path=${join(b.runDir, 'vm', VM, 'bus.sock')}`);
  }

  it('registers the VM on the source at start (addresses from the XML)', async () => {
    await startOnA();
    const vm = (await a.status()).vms.find((v) => v.uuid === VM);
    assert.deepEqual(vm?.addresses, [VM_ADDRESS]);
  });

  it('carries the entries through a successful migration: migrate/prepare/start/started on B, stopped/release on A', async () => {
    await a.addVmEntries(20, 40000);
    await migrateBeginOnB();
    const prepared = await b.session();
    assert.equal(prepared?.role, 'destination');
    assert.equal(prepared?.blocked, true, 'B drops the VM\'s traffic before its state is in');
    for (const op of ['prepare begin -', 'start begin -', 'started begin -']) {
      const r = await b.hook(`web1 ${op}`, domainXml(), hook);
      assert.deepEqual([r.code, r.stdout], [0, ''], `${op}: ${r.stderr}`);
    }
    assert.equal((await b.session())?.id, prepared?.id, 'registering on B keeps the incoming session');
    // libvirt 9.0 on the source after success: stopped end -, release end -.
    const stopped = await a.hook('web1 stopped end -', domainXml(), hook);
    assert.deepEqual([stopped.code, stopped.stdout], [0, ''], stopped.stderr);
    await b.waitSession('ready', (s) => s?.state === 'ready' && !s.blocked);
    const released = await a.hook('web1 release end -', domainXml(), hook);
    assert.deepEqual([released.code, released.stdout], [0, ''], released.stderr);
    assert.equal((await a.session())?.state, 'migrated');
    assert.equal((await a.status()).vms.length, 0, 'the source forgot the VM');
    assert.equal(await a.vmEntries(), 0, 'the source deleted the VM\'s entries');
    assert.equal(await b.vmEntries(), 20, 'the destination has them');
  });

  it('tears down the VM on B when it later stops there (ready session closed, VM unregistered)', async () => {
    for (const op of ['stopped end -', 'release end -']) {
      const r = await b.hook(`web1 ${op}`, domainXml(), hook);
      assert.deepEqual([r.code, r.stdout], [0, ''], `${op}: ${r.stderr}`);
    }
    assert.equal((await b.status()).vms.length, 0);
    await run('ip', ['netns', 'exec', nsB, 'conntrack', '-F']);
  });

  it('rolls back both hosts when the destination QEMU dies mid-way (B: stopped end -, release end -; A: no hook)', async () => {
    await startOnA();
    await a.addVmEntries(10, 41000);
    await migrateBeginOnB();
    await b.waitSession('streaming', (s) => s?.state === 'streaming');
    assert.ok((await b.vmEntries()) > 0, 'pre-copy imported entries on B');
    for (const op of ['stopped end -', 'release end -']) {
      const r = await b.hook(`web1 ${op}`, domainXml(), hook);
      assert.deepEqual([r.code, r.stdout], [0, ''], `${op}: ${r.stderr}`);
    }
    const bs = await b.session();
    assert.deepEqual([bs?.state, bs?.blocked], ['failed', false], 'drop lifted on B');
    assert.equal(await b.vmEntries(), 0, 'nothing imported stays on B');
    assert.equal((await b.status()).vms.length, 0);
    await a.waitSession('ended', (s) => s?.state === 'failed');
    assert.equal(await a.vmEntries(), 10, 'the source keeps its entries');
    assert.ok((await a.status()).vms.some((v) => v.uuid === VM), 'the source still runs the VM');
  });

  it('rolls back a migration cancelled before QEMU started on B (migrate, prepare begin, then release end -)', async () => {
    await migrateBeginOnB();
    await b.hook('web1 prepare begin -', domainXml(), hook);
    const r = await b.hook('web1 release end -', domainXml(), hook);
    assert.deepEqual([r.code, r.stdout], [0, ''], r.stderr);
    const bs = await b.session();
    assert.deepEqual([bs?.state, bs?.blocked], ['failed', false]);
    assert.equal(await b.vmEntries(), 0);
  });

  it('re-registers on reconnect after a daemon restart, so B finds the source among its peers again', async () => {
    await a.stopDaemon();
    const down = await a.hook('web1 reconnect begin -', domainXml(), hook);
    assert.deepEqual([down.code, down.stdout], [0, ''], 'reconnect without a daemon exits 0');
    await a.startDaemon();
    const r = await a.hook('web1 reconnect begin -', domainXml(), hook);
    assert.deepEqual([r.code, r.stdout], [0, ''], r.stderr);
    assert.ok((await a.status()).vms.some((v) => v.uuid === VM));
    await migrateBeginOnB();
    const s = await b.session();
    assert.equal(s?.peer, `${A_ADDRESS}:7471`);
    await b.hook('web1 release end -', domainXml(), hook);
    assert.equal((await b.session())?.state, 'failed');
  });

  it('without a daemon: exit 0 and an empty stdout for every operation; migrate begin fails only for <ctmigrate:require/>', async () => {
    const noBus = `unix:path=${join(dir, 'no-such-bus')}`;
    const required = domainXml('\n      <ctmigrate:require/>');
    for (const op of ['prepare begin -', 'start begin -', 'started begin -', 'migrate begin -', 'restore begin -', 'stopped end -', 'release end -', 'reconnect begin -', 'attach begin -']) {
      const plain = await a.hook(`web1 ${op}`, domainXml(), hook, noBus);
      assert.deepEqual([plain.code, plain.stdout], [0, ''], `${op}: ${plain.stderr}`);
      const req = await a.hook(`web1 ${op}`, required, hook, noBus);
      assert.equal(req.stdout, '', op);
      assert.equal(req.code, op === 'migrate begin -' ? 1 : 0, `${op}: ${req.stderr}`);
      if (op === 'migrate begin -') assert.match(req.stderr, /requires its connection state.*migration refused/);
    }
  });

  it('refuses hostile XML cleanly: one log line, nothing on stdout, nothing done', async () => {
    const bomb = `<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>\n${domainXml().replace('<name>web1</name>', '<name>&b;</name>')}`;
    const before = await b.session();
    const r = await b.hook('web1 migrate begin -', bomb, hook);
    assert.deepEqual([r.code, r.stdout], [0, '']);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /DOCTYPE declaration refused/);
    const huge = domainXml().replace('</devices>', `${'<!-- padding -->'.repeat(700_000)}</devices>`);
    const big = await b.hook('web1 migrate begin -', huge, hook);
    assert.deepEqual([big.code, big.stdout], [0, '']);
    assert.match(big.stderr, /exceed the limit/);
    assert.equal((await b.session())?.id, before?.id, 'no new session');
  });

  it('refuses addresses a tenant must never name (loopback, this host\'s own) after reading 0.8 MB of attributes in one pass', async () => {
    const before = await b.session();
    // The finding's input: 0.79 MB of attributes in metadata once kept libvirt waiting 21 s.
    const attrs = Array.from({ length: 40_000 }, (_, i) => `a${i}="v"`).join(' ');
    const padded = (address: string): string =>
      domainXml().replace('<metadata>', `<metadata>\n    <other:x xmlns:other="urn:example:other" ${attrs}/>`).replace(`<ctmigrate:address>${VM_ADDRESS}`, `<ctmigrate:address>${address}`);
    const t0 = Date.now();
    const loop = await b.hook('web1 migrate begin -', padded('127.0.0.1'), hook);
    const tookMs = Date.now() - t0;
    assert.equal(loop.code, 0, loop.stderr);
    assert.match(loop.stderr, /127\.0\.0\.1 is a loopback address, never a VM's own address/);
    assert.ok(tookMs < 8000, `within the hook's own deadline (took ${tookMs} ms)`);
    const own = await b.hook('web1 migrate begin -', padded(B_ADDRESS), hook);
    assert.equal(own.code, 0, own.stderr);
    assert.match(own.stderr, /198\.51\.100\.2 is an address of this host, never a VM's own address/);
    assert.equal((await b.session())?.id, before?.id, 'no new session');
  });

  it('ctmigratectl check reports the daemon, key and peers as OK and libvirt as missing', async () => {
    const r = await b.ctl(['check', '--hook', hook, '--config', '/dev/null', '--psk-file', join(dir, 'psk'), '--peer', `${A_ADDRESS}:7471`]);
    assert.equal(r.code, 1, 'libvirt is not running here');
    assert.match(r.stdout, /^OK {3}conntrack: /m);
    assert.match(r.stdout, /^OK {3}ctmigrated: ctmigrated \S+ owns org\.ctmigrate1/m);
    assert.match(r.stdout, /^OK {3}peer credentials: /m);
    assert.match(r.stdout, new RegExp(`^OK {3}peer ${A_ADDRESS.replace(/\./g, '\\.')}:7471: accepts`, 'm'));
    assert.match(r.stdout, /^OK {3}libvirt hook: /m);
    assert.match(r.stdout, /^FAIL libvirt: neither libvirtd nor virtqemud is running — fix: /m);
  });
});
