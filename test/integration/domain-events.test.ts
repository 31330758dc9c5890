// libvirt's event stream as the daemon follows it (adapters/libvirt/domain-events.ts),
// with a stand-in `virsh` on PATH that prints what `virsh event --loop` prints.
// The watcher is a child process: a daemon killed with -9 must not leave it behind.

import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const EVENTS = join(__dirname, '..', '..', 'adapters', 'libvirt', 'domain-events.js');
const VIRSH = join(__dirname, '..', '..', 'adapters', 'libvirt', 'virsh.js');
const UUID = '3b2c1d0e-9f8a-4b7c-8d6e-5f4a3b2c1d0e';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('domain events through virsh event --loop (a stand-in virsh)', function () {
  this.timeout(30_000);
  let dir = '';

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ctm-events-'));
    writeFileSync(
      join(dir, 'virsh'),
      `#!/bin/sh
case " $* " in *" domname "*) echo vm-one; exit 0;; esac
case " $* " in *" event "*)
  echo $$ > "${dir}/watcher.pid"
  echo "event 'lifecycle' for domain 'vm-two': Suspended Migrated"
  echo "event 'lifecycle' for domain 'vm-one': Suspended Paused"
  echo "event 'lifecycle' for domain 'vm-one': Suspended Migrated"
  exec sleep 600;;
esac
exit 1
`,
      { mode: 0o755 },
    );
  });

  afterEach(() => {
    try {
      const pid = Number(readFileSync(join(dir, 'watcher.pid'), 'utf8'));
      if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    } catch {
      // no watcher started
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('tells only the VM suspended for migration, and the watcher dies with a daemon killed by -9', async () => {
    const script = `
      const { LibvirtDomainEvents } = require(${JSON.stringify(EVENTS)});
      const { Virsh } = require(${JSON.stringify(VIRSH)});
      const uri = 'qemu:///system';
      const events = new LibvirtDomainEvents(uri, new Virsh(uri));
      events.onMigrationPause(${JSON.stringify(UUID)}, () => console.log('paused')).then(() => console.log('following'), (e) => console.log('refused ' + e.message));
      setInterval(() => undefined, 1000);
    `;
    const child = spawn(process.execPath, ['-e', script], { env: { ...process.env, PATH: `${dir}:${process.env.PATH ?? ''}` }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    try {
    const deadline = Date.now() + 10_000;
    while (!(/paused/.test(out) && /following/.test(out)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(out.match(/paused/g)?.length, 1, `the listener heard: ${out}`);
    assert.match(out, /following/);
    const watcher = Number(readFileSync(join(dir, 'watcher.pid'), 'utf8'));
    assert.ok(alive(watcher), 'the watcher runs');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const gone = Date.now() + 5_000;
    while (alive(watcher) && Date.now() < gone) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!alive(watcher), 'the watcher outlived the daemon that started it');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
