// The Debian package as an operator gets it: built by packaging/build-deb.sh
// (what `npm run package` runs), checked by lintian, installed with
// `dpkg -i`, run from its installed paths against a dbus-daemon that loads
// its policy the way the system bus does, and purged.
//
// Needs root, dpkg-dev, debhelper and lintian (.ci/run installs them), and
// the package's dependencies nodejs (>= 20), nftables and dbus installed.
// The test owns the package name on this machine: a `ctmigrate` package
// left installed (by a crashed run) is purged first, and the package is
// purged on every exit path.
//
// The `it`s share one installation and one daemon and run in order:
// install (before) → files → programs → bus policy → hook → purge.

import { strict as assert } from 'node:assert';
import { ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DbusDaemonProcess } from '../../adapters/dbus/dbus-daemon-process';
import { setTimeout as sleep } from 'node:timers/promises';

const REPO = resolve(__dirname, '../../..');
const BUILD_DEB = join(REPO, 'packaging/build-deb.sh');
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

const CTL = '/usr/bin/ctmigratectl';
const DAEMON = '/usr/sbin/ctmigrated';
const HOOK = '/etc/libvirt/hooks/qemu.d/ctmigrate';
const ENABLED = '/etc/systemd/system/multi-user.target.wants/ctmigrated.service';
const AS_NOBODY = ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '--'];
/** libvirt runs hooks with next to no environment. */
const HOOK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Only for a machine whose node 20 is not a dpkg package: see installNodeShim(). */
const NODE_SHIM = 'ctmigrate-test-nodejs-shim';

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
}

function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<Result> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(file, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${file}: ${e.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

function show(what: string, r: Result): string {
  return `${what} exited ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

async function ok(file: string, args: readonly string[], opts: RunOptions = {}): Promise<Result> {
  const r = await run(file, args, opts);
  if (r.code !== 0) throw new Error(show(`${file} ${args.join(' ')}`, r));
  return r;
}

/** dpkg's view of a package: "installed", "config-files", ... or "not-installed". */
async function packageStatus(name: string): Promise<string> {
  const r = await run('dpkg-query', ['-W', '-f=${db:Status-Status}', name]);
  return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : 'not-installed';
}

async function purgeIfPresent(name: string): Promise<void> {
  if ((await packageStatus(name)) !== 'not-installed') await ok('dpkg', ['--purge', name], { timeoutMs: 120_000 });
}

async function versionAtLeast(version: string, min: string): Promise<boolean> {
  return (await run('dpkg', ['--compare-versions', version, 'ge', min])).code === 0;
}

/**
 * The package depends on `nodejs (>= 20)`, the Debian package. Debian 12's
 * own nodejs is 18, so node 20 comes from elsewhere: NodeSource's .deb (a
 * dpkg package: nothing to do) or a tarball, nvm or the like (unknown to
 * dpkg, so `dpkg -i` would refuse the dependency). Only in that last case
 * this installs an equivs-style empty package that Provides `nodejs` at the
 * version /usr/bin/node reports: the dependency is then checked for real
 * against the node the package will run, instead of being forced.
 * Returns whether the shim was installed (the caller purges it).
 */
async function installNodeShim(dir: string): Promise<boolean> {
  const status = await run('dpkg-query', ['-W', '-f=${db:Status-Status} ${Version}', 'nodejs']);
  const [state, version] = status.stdout.trim().split(' ');
  if (status.code === 0 && state === 'installed' && (await versionAtLeast(version, '20'))) return false;
  assert.ok(existsSync('/usr/bin/node'), 'the package runs /usr/bin/node, which does not exist here');
  const nodeVersion = (await ok('/usr/bin/node', ['--version'])).stdout.trim().replace(/^v/, '');
  assert.ok(await versionAtLeast(nodeVersion, '20'), `/usr/bin/node is ${nodeVersion}; the package needs 20 or later`);
  const root = join(dir, 'nodejs-shim');
  mkdirSync(join(root, 'DEBIAN'), { recursive: true });
  writeFileSync(
    join(root, 'DEBIAN', 'control'),
    [
      `Package: ${NODE_SHIM}`,
      'Version: 1',
      'Architecture: all',
      'Maintainer: ctmigrate tests <maintainers@users.noreply.r-seed-b058cdda.example>',
      `Provides: nodejs (= ${nodeVersion})`,
      'Description: test-only stand-in for a node installed outside dpkg',
      ` /usr/bin/node ${nodeVersion} is not a Debian package; installed and purged by test/integration/package.test.ts.`,
      '',
    ].join('\n'),
  );
  const deb = join(dir, `${NODE_SHIM}.deb`);
  await ok('dpkg-deb', ['--root-owner-group', '--build', root, deb]);
  await ok('dpkg', ['-i', deb], { timeoutMs: 60_000 });
  return true;
}

/** A bus configured like Debian's /usr/share/dbus-1/system.conf, on a socket of its own. */
function systemBusConfig(socketPath: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socketPath}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
`;
}

function domainXml(name: string, uuid: string, address: string): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <metadata>
    <ctmigrate:vm xmlns:ctmigrate="urn:ctmigrate:vm:1">
      <ctmigrate:address>${address}</ctmigrate:address>
    </ctmigrate:vm>
  </metadata>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices/>
</domain>
`;
}


describe('the Debian package, built, installed with dpkg -i and purged', function () {
  this.timeout(120_000);

  let dir = '';
  let deb = '';
  let shimInstalled = false;
  let bus: DbusDaemonProcess | undefined;
  let busEnv: NodeJS.ProcessEnv = {};
  let daemon: ChildProcess | undefined;
  let daemonExited: Promise<void> = Promise.resolve();
  let daemonLog = '';

  async function stopDaemon(): Promise<void> {
    const d = daemon;
    daemon = undefined;
    if (!d || d.exitCode !== null || d.signalCode !== null) return;
    d.kill('SIGTERM');
    const killer = setTimeout(() => d.kill('SIGKILL'), 10_000);
    await daemonExited;
    clearTimeout(killer);
  }

  before(async function () {
    this.timeout(300_000);
    dir = mkdtempSync(join(tmpdir(), 'ctmigrate-package-'));
    // nobody must reach the bus socket inside.
    chmodSync(dir, 0o755);
    await purgeIfPresent('ctmigrate');
    const built = await ok('bash', [BUILD_DEB, '--out', join(dir, 'out')], { timeoutMs: 240_000 });
    deb = built.stdout.trim().split('\n').pop() ?? '';
    assert.match(deb, /\/ctmigrate_[^/]+_[a-z0-9]+\.deb$/, `build-deb.sh's last line is not a .deb path:\n${built.stdout}`);
    assert.ok(existsSync(deb), `${deb} was not written`);
    shimInstalled = await installNodeShim(dir);
    await ok('dpkg', ['-i', deb], { timeoutMs: 120_000 });
  });

  after(async function () {
    this.timeout(120_000);
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (e) {
        problems.push(`${what}: ${(e as Error).message}`);
      }
    };
    await attempt('stop the daemon', stopDaemon);
    await attempt('stop the bus', async () => bus?.stop());
    await attempt('purge ctmigrate', () => purgeIfPresent('ctmigrate'));
    if (shimInstalled) await attempt(`purge ${NODE_SHIM}`, () => purgeIfPresent(NODE_SHIM));
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (problems.length) throw new Error(`cleanup failed:\n${problems.join('\n')}`);
  });

  it('passes lintian with no errors', async function () {
    this.timeout(180_000);
    const r = await run('lintian', ['--display-info', deb], { timeoutMs: 170_000 });
    const errors = r.stdout.split('\n').filter((l) => l.startsWith('E: '));
    assert.deepEqual(errors, [], show('lintian', r));
    // Without errors lintian exits 0; anything else is lintian failing to check.
    assert.equal(r.code, 0, show('lintian', r));
  });

  it('installs the programs, the unit, the bus files, the conffiles, the man pages and a private node_modules', async () => {
    for (const path of [
      DAEMON,
      CTL,
      HOOK,
      '/etc/ctmigrate/ctmigrate.conf',
      '/lib/systemd/system/ctmigrated.service',
      '/lib/systemd/system/ctmigrate-relay.service',
      '/usr/share/dbus-1/system.d/org.ctmigrate1.conf',
      '/usr/share/dbus-1/system-services/org.ctmigrate1.service',
      '/usr/share/man/man8/ctmigrated.8.gz',
      '/usr/share/man/man8/ctmigratectl.8.gz',
      '/usr/lib/ctmigrate/package.json',
      '/usr/lib/ctmigrate/dist/adapters/cli/ctmigrated.js',
      '/usr/lib/ctmigrate/dist/adapters/conntrack/native/binding/build/Release/ctmigrate_netlink.node',
      '/usr/lib/ctmigrate/node_modules/dbus-next/package.json',
      '/usr/lib/ctmigrate/criu-action',
    ]) {
      assert.ok(existsSync(path), `${path} is not installed`);
    }
    // CRIU's action script runs the installed program (a checkpoint without ctmigrate's files: nothing to hold).
    const images = mkdtempSync(join(tmpdir(), 'ctm-criu-'));
    try {
      const criu = await run('/usr/lib/ctmigrate/criu-action', [], { env: { PATH: '/usr/bin:/bin', CRTOOLS_SCRIPT_ACTION: 'pre-restore', CRTOOLS_IMAGE_DIR: images } });
      assert.equal(criu.code, 0, show('criu-action', criu));
      assert.match(criu.stderr, /criu-action: pre-restore: the checkpoint holds no ctmigrate state: nothing to hold/);
    } finally {
      rmSync(images, { recursive: true, force: true });
    }
    // Enabled even though no systemd runs here (the symlink is the enabling).
    assert.ok(existsSync(ENABLED), `${ENABLED} is missing: the unit was not enabled`);
    assert.ok(!existsSync('/etc/systemd/system/multi-user.target.wants/ctmigrate-relay.service'), 'the relay unit is enabled: it must be off by default');
    const conffiles = (await ok('dpkg-query', ['-W', '-f=${Conffiles}', 'ctmigrate'])).stdout;
    assert.match(conffiles, /^ \/etc\/libvirt\/hooks\/qemu\.d\/ctmigrate /m);
    assert.match(conffiles, /^ \/etc\/ctmigrate\/ctmigrate\.conf /m);
    // Production dependencies only.
    const modules = readdirSync('/usr/lib/ctmigrate/node_modules');
    for (const dev of ['mocha', 'typescript', 'sinon', 'eslint', '@types']) assert.ok(!modules.includes(dev), `devDependency ${dev} is installed`);
    // D-Bus activation names this daemon and this unit.
    const activation = readFileSync('/usr/share/dbus-1/system-services/org.ctmigrate1.service', 'utf8');
    assert.match(activation, /^Name=org\.ctmigrate1$/m);
    assert.match(activation, /^Exec=\/usr\/sbin\/ctmigrated$/m);
    assert.match(activation, /^SystemdService=ctmigrated\.service$/m);
    // The unit as systemd reads it (systemd-analyze runs without a running systemd).
    if (existsSync('/usr/bin/systemd-analyze')) {
      for (const unit of ['ctmigrated.service', 'ctmigrate-relay.service']) {
        const v = await run('systemd-analyze', ['verify', '--man=no', `/lib/systemd/system/${unit}`]);
        const complaints = `${v.stdout}${v.stderr}`.split('\n').filter((l) => l.includes(unit));
        assert.deepEqual(complaints, [], show('systemd-analyze verify', v));
      }
    }
  });

  it('runs ctmigratectl and ctmigrated from their installed paths', async () => {
    assert.equal((await ok(CTL, ['--version'])).stdout.trim(), `ctmigratectl ${VERSION}`);
    assert.equal((await ok(DAEMON, ['--version'])).stdout.trim(), `ctmigrated ${VERSION}`);
    assert.match((await ok(DAEMON, ['--help'])).stdout, /^Usage: ctmigrated /);
    assert.match((await ok(CTL, ['--help'])).stdout, /^Usage: ctmigratectl COMMAND/);
    // The shipped native binding reads a (fresh, empty) conntrack table.
    const dump = await ok('unshare', ['--net', CTL, 'dump', '--format', 'json']);
    assert.equal(dump.stdout, '');
  });

  it('lets root register a VM on a bus that loads the installed policy, refuses nobody with "access denied" and lets nobody read the status', async function () {
    this.timeout(90_000);
    const socketPath = join(dir, 'system_bus_socket');
    const configFile = join(dir, 'system-bus.conf');
    writeFileSync(configFile, systemBusConfig(socketPath));
    bus = new DbusDaemonProcess(configFile);
    await bus.start();
    busEnv = { PATH: HOOK_PATH, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${socketPath}` };

    // In a network namespace of its own, so its start-up sysctl write
    // (nf_conntrack_events) leaves the host's setting alone. Without
    // --config: it reads the installed /etc/ctmigrate/ctmigrate.conf.
    const runDir = join(dir, 'run');
    const child = spawn('setpriv', ['--pdeathsig', 'SIGTERM', 'unshare', '--net', DAEMON, '--run-dir', runDir], {
      env: busEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    daemon = child;
    daemonExited = new Promise((r) => child.once('close', () => r()));
    child.stdout.setEncoding('utf8').on('data', (d: string) => (daemonLog += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (daemonLog += d));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const s = await run(CTL, ['status'], { env: busEnv });
      if (s.code === 0) break;
      if (child.exitCode !== null || child.signalCode !== null) assert.fail(`ctmigrated exited before owning org.ctmigrate1:\n${daemonLog}`);
      if (Date.now() > deadline) assert.fail(`ctmigrated did not answer within 30 s:\n${show('status', s)}\n--- daemon\n${daemonLog}`);
      await sleep(200);
    }

    const vm = randomUUID();
    const root = await run(CTL, ['register', '--vm', vm, '--address', '192.0.2.10'], { env: busEnv });
    assert.equal(root.code, 0, show('root: ctmigratectl register', root));
    assert.match(root.stdout, new RegExp(`registered VM ${vm}`));

    const nobody = await run('setpriv', [...AS_NOBODY, CTL, 'register', '--vm', randomUUID(), '--address', '192.0.2.11'], { env: busEnv });
    assert.notEqual(nobody.code, 0, show('nobody: ctmigratectl register', nobody));
    assert.match(nobody.stderr, /access denied/, show('nobody: ctmigratectl register', nobody));

    const status = await run('setpriv', [...AS_NOBODY, CTL, 'status', '--vm', vm], { env: busEnv });
    assert.equal(status.code, 0, show('nobody: ctmigratectl status', status));
    assert.match(status.stdout, new RegExp(`^ctmigrated ${VERSION.replace(/\./g, '\\.')}:`));
    assert.match(status.stdout, new RegExp(`vm ${vm} 192\\.0\\.2\\.10`));
  });

  it('runs the installed libvirt hook as libvirt does: reconnect begin registers the VM and exits 0, with the daemon up and down', async function () {
    this.timeout(90_000);
    assert.ok(daemon, 'the daemon of the previous test is not running');
    const vm = randomUUID();
    const xml = domainXml('pkgtest', vm, '192.0.2.20');
    const up = await run(HOOK, ['pkgtest', 'reconnect', 'begin', '-'], { env: busEnv, input: xml, timeoutMs: 30_000 });
    assert.equal(up.code, 0, show('hook reconnect begin (daemon up)', up));
    assert.equal(up.stdout, '', 'a reconnect hook prints nothing on stdout');
    const status = await run(CTL, ['status', '--vm', vm], { env: busEnv });
    assert.equal(status.code, 0, `${show('status after the hook', status)}\n--- hook\n${up.stderr}`);
    assert.match(status.stdout, /192\.0\.2\.20/);

    await stopDaemon();
    const started = Date.now();
    const down = await run(HOOK, ['pkgtest', 'reconnect', 'begin', '-'], { env: busEnv, input: xml, timeoutMs: 30_000 });
    assert.equal(down.code, 0, show('hook reconnect begin (daemon down)', down));
    assert.equal(down.stdout, '');
    assert.ok(Date.now() - started < 15_000, `the hook took ${Date.now() - started} ms with the daemon down`);
  });

  it('leaves nothing behind when purged', async function () {
    this.timeout(120_000);
    await stopDaemon();
    await ok('dpkg', ['--purge', 'ctmigrate'], { timeoutMs: 110_000 });
    assert.equal(await packageStatus('ctmigrate'), 'not-installed');
    for (const path of [
      '/usr/lib/ctmigrate',
      '/etc/ctmigrate',
      HOOK,
      DAEMON,
      CTL,
      '/lib/systemd/system/ctmigrated.service',
      '/usr/share/dbus-1/system.d/org.ctmigrate1.conf',
      '/usr/share/dbus-1/system-services/org.ctmigrate1.service',
      '/usr/share/man/man8/ctmigrated.8.gz',
      '/usr/share/man/man8/ctmigratectl.8.gz',
      '/usr/share/doc/ctmigrate',
      ENABLED,
    ]) {
      assert.ok(!existsSync(path), `${path} is still there after purge`);
    }
  });
});
