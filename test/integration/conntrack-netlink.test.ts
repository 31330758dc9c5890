/**
 * ctnetlink adapter against the real kernel, in fresh network namespaces.
 * Each step runs test/fixtures/conntrack/netns-runner.js inside a namespace
 * (a netlink socket sees only the namespace of the process that opened it).
 * Needs root, iproute2 and the conntrack CLI; namespaces are removed on
 * every exit path.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const runner = join(__dirname, '..', 'fixtures', 'conntrack', 'netns-runner.js');
const suffix = `${process.pid}-${Date.now() % 100000}`;
const A = `ctm-ita-${suffix}`;
const B = `ctm-itb-${suffix}`;
const C = `ctm-itc-${suffix}`;
/** How long the flood test's follower may take to stop once asked (it syncs first; a 20k flood takes well under a second). */
const STOP_WITHIN_MS = 30_000;

function sh(ns: string, ...args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function run<T>(ns: string, ...args: string[]): T {
  const out = sh(ns, process.execPath, runner, ...args).trim().split('\n');
  return JSON.parse(out[out.length - 1]) as T;
}
/** conntrack -L of both families, without the id/use/timeout columns that differ between hosts. */
function listed(ns: string): string[] {
  const lines = (sh(ns, 'conntrack', '-L') + sh(ns, 'conntrack', '-L', '-f', 'ipv6')).split('\n').filter((l) => l.includes('src='));
  return lines.map((l) => l.replace(/^(\S+\s+\d+)\s+\d+/, '$1').replace(/ use=\d+/, '').replace(/ id=\d+/, '').trim()).sort();
}

describe('conntrack netlink adapter (real kernel, network namespaces)', function () {
  this.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'ctm-it-'));

  before(function () {
    try {
      execFileSync('ip', ['netns', 'add', A]);
      execFileSync('ip', ['netns', 'add', B]);
      execFileSync('ip', ['netns', 'add', C]);
    } catch {
      this.skip();
    }
  });
  after(() => {
    for (const ns of [A, B, C]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('dumps entries made with the conntrack CLI and recreates them identically in another namespace', () => {
    const cli = [
      ['-p', 'tcp', '-s', '192.0.2.1', '-d', '198.51.100.2', '--sport', '1000', '--dport', '22', '--state', 'ESTABLISHED', '-t', '300', '-u', 'ASSURED,SEEN_REPLY', '-m', '7'],
      ['-p', 'udp', '-s', '192.0.2.1', '-d', '198.51.100.2', '--sport', '5353', '--dport', '53', '-t', '60', '--zone', '5'],
      ['-p', 'icmp', '-s', '192.0.2.1', '-d', '198.51.100.2', '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '77', '-t', '60'],
      ['-p', 'icmpv6', '-s', '2001:db8::1', '-d', '2001:db8::2', '--icmpv6-type', '128', '--icmpv6-code', '0', '--icmpv6-id', '78', '-t', '60'],
      ['-p', 'sctp', '-s', '192.0.2.4', '-d', '198.51.100.4', '--sport', '3868', '--dport', '3868', '--state', 'ESTABLISHED', '--orig-vtag', '1', '--reply-vtag', '2', '-t', '300'],
      ['-p', 'tcp', '-s', '192.0.2.5', '-d', '203.0.113.9', '--sport', '4000', '--dport', '80', '--state', 'ESTABLISHED', '-t', '300', '-u', 'ASSURED,SEEN_REPLY', '--dst-nat', '198.51.100.7:8080'],
      ['-p', 'udp', '-s', '192.0.2.8', '-d', '198.51.100.9', '--sport', '5000', '--dport', '53', '-t', '60', '--src-nat', '203.0.113.1:6000'],
      ['-p', 'tcp', '-s', '2001:db8::5', '-d', '2001:db8::6', '--sport', '40000', '--dport', '443', '--state', 'ESTABLISHED', '-t', '300', '-u', 'ASSURED,SEEN_REPLY', '-m', '16'],
    ];
    for (const args of cli) sh(A, 'conntrack', '-I', ...args);
    const file = join(dir, 'table.bin');
    const dump = run<{ stats: { entries: number }; flows: string[] }>(A, 'dump', '{}', file);
    assert.equal(dump.stats.entries, cli.length);

    const load = run<{ report: { created: number; failures: unknown[] } }>(B, 'load', file);
    assert.deepEqual(load.report.failures, []);
    assert.equal(load.report.created, cli.length);
    assert.deepEqual(listed(B), listed(A));

    const again = run<{ report: { replaced: number; created: number } }>(B, 'load', file);
    assert.equal(again.report.replaced, cli.length, 'a second load replaces every entry');
  });

  it('filters by address exactly (kernel tuple filter plus userspace check)', () => {
    const r = run<{ stats: { entries: number; kernelFilters: string[] } }>(A, 'dump', JSON.stringify({ addresses: ['198.51.100.7'] }));
    assert.equal(r.stats.entries, 1, 'only the DNAT entry has 198.51.100.7 (in its reply tuple)');
    assert.ok(r.stats.kernelFilters.includes('tuple'));
  });

  it('reports removing an absent entry as ENOENT, one by one', () => {
    const file = join(dir, 'table.bin');
    const first = run<{ report: { deleted: number } }>(B, 'remove', file);
    assert.equal(first.report.deleted, 8);
    const second = run<{ report: { deleted: number; failures: Array<{ code: string }> } }>(B, 'remove', file);
    assert.equal(second.report.deleted, 0);
    assert.equal(second.report.failures.length, 8);
    assert.ok(second.report.failures.every((f) => f.code === 'ENOENT'));
  });

  it("writes through the daemon's writer threads exactly as in-process: create, replace, per-entry ENOENT on delete", () => {
    const file = join(dir, 'table.bin');
    const threaded = (ns: string, ...args: string[]): string => execFileSync('ip', ['netns', 'exec', ns, 'env', 'CTM_WRITER_THREADS=1', process.execPath, runner, ...args], { encoding: 'utf8' });
    const last = <T>(out: string): T => JSON.parse(out.trim().split('\n').pop() as string) as T;
    sh(B, 'conntrack', '-F');
    const created = last<{ report: { created: number; failures: unknown[] } }>(threaded(B, 'load', file));
    assert.deepEqual(created.report.failures, []);
    assert.equal(created.report.created, 8);
    assert.deepEqual(listed(B), listed(A), 'the same entries as the in-process load made');
    assert.equal(last<{ report: { replaced: number } }>(threaded(B, 'load', file)).report.replaced, 8, 'a second load replaces every entry');
    assert.equal(last<{ report: { deleted: number } }>(threaded(B, 'remove', file)).report.deleted, 8);
    const again = last<{ report: { deleted: number; failures: Array<{ code: string }> } }>(threaded(B, 'remove', file));
    assert.equal(again.report.deleted, 0);
    assert.equal(again.report.failures.length, 8);
    assert.ok(again.report.failures.every((f) => f.code === 'ENOENT'));
  });

  it('follows an event flood, repairs overruns, and ends equal to the kernel table', async () => {
    const feed = spawn('ip', ['netns', 'exec', C, process.execPath, runner, 'feed', 'stdin', String(64 * 1024)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    feed.stdout.on('data', (d: Buffer) => (out += d.toString()));
    let gone = false;
    const exited = new Promise<void>((resolve) =>
      feed.on('exit', () => {
        gone = true;
        resolve();
      }),
    );
    try {
      while (!out.includes('"ready"')) {
        if (gone) throw new Error('the follower ended before it was ready');
        await new Promise((r) => setTimeout(r, 50));
      }
      const synth = run<{ created: number }>(C, 'synth', '20000');
      assert.equal(synth.created, 20000);
      sh(C, 'conntrack', '-D', '-p', 'tcp', '--orig-port-src', '1024');
    } finally {
      // Stop the follower on every path; it syncs before reporting. One
      // that cannot (a sync that never resolves) is killed, not left behind.
      feed.stdin.end('stop\n');
      let timer: NodeJS.Timeout | undefined;
      const stuck = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), STOP_WITHIN_MS)))]);
      clearTimeout(timer);
      if (stuck) {
        feed.kill('SIGKILL');
        await exited;
        assert.fail(`the follower did not stop within ${STOP_WITHIN_MS} ms of being asked (its final sync never resolved)`);
      }
    }
    const last = JSON.parse(out.trim().split('\n').pop() as string) as { stats: { events: number; overruns: number }; size: number; warnings: string[]; flows: string[] };
    const kernel = Number(sh(C, 'conntrack', '-C').trim());
    // On a mismatch, say enough to tell a lost destroy from a lost create.
    const deleted = last.flows.filter((f) => /:1024 -> /.test(f));
    assert.equal(
      last.size,
      kernel,
      `table equals the kernel after repair (stats ${JSON.stringify(last.stats)}; ${deleted.length} deleted entries still in the table, e.g. ${deleted.slice(0, 3).join(', ')}; warnings ${JSON.stringify(last.warnings)})`,
    );
    assert.ok(last.stats.events > 0, 'events were seen');
    assert.ok(last.stats.overruns > 0, 'a 64 KiB buffer overruns under the flood');
  });
});
