// The ctmigratectl / ctmigrated contract seen from outside (CONTRACTS.md):
// --help and --version, exit status 2 and one clear stderr line for bad
// arguments, exit status 1 and an untouched table for bad input, one line per
// entry the kernel refuses, "replaced" on a second load, and dump --output
// that never leaves a partial file. Every run happens in namespaces this
// file creates and removes.

import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { CTMIGRATECTL, CTMIGRATED, ctl, ctlOk, dumpJson, JsonFlow, outputLines, prepareTarget, program, tableWithIds } from './cli-runner';
import { insert, listExtended, normalize } from './lab/conntrack-cli';
import { ExecResult, Lab, NetNs } from './lab/netns';

/** Offsets of the binary snapshot format (plugin/snapshot-format.ts). */
const H_VERSION = 8;
const TRAILER_CRC_BYTES = 4;
const MAGIC = Buffer.from([0x89, 0x43, 0x54, 0x4d, 0x53, 0x4e, 0x41, 0x50]);

const T = ['-t', '3600'];
const EST = ['--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED'];

/** What the source namespace holds: a few kinds, IPv4 and IPv6, one overlapping the target's. */
const SOURCE_ENTRIES: ReadonlyArray<readonly string[]> = [
  ['-p', 'tcp', '-s', '192.0.2.50', '-d', '198.51.100.50', '--sport', '42001', '--dport', '443', ...EST, '-m', '7', ...T],
  ['-p', 'udp', '-s', '2001:db8:5::50', '-d', '2001:db8:6::50', '--sport', '42002', '--dport', '53', '-u', 'SEEN_REPLY', ...T],
  ['-p', 'tcp', '-s', '192.0.2.51', '-d', '203.0.113.51', '--sport', '42003', '--dport', '80', ...EST, '--src-nat', '198.51.100.51:6000', ...T],
  ['-p', 'icmp', '-s', '192.0.2.52', '-d', '198.51.100.52', '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '99', ...T],
  // Same tuple as the target's first entry, different mark: a partial load would replace it.
  ['-p', 'tcp', '-s', '192.0.2.60', '-d', '198.51.100.60', '--sport', '42100', '--dport', '22', ...EST, '-m', '1', ...T],
];

/** What the target holds before every bad-input load. */
const TARGET_ENTRIES: ReadonlyArray<readonly string[]> = [
  ['-p', 'tcp', '-s', '192.0.2.60', '-d', '198.51.100.60', '--sport', '42100', '--dport', '22', ...EST, '-m', '2', ...T],
  ['-p', 'udp', '-s', '2001:db8:5::61', '-d', '2001:db8:6::61', '--sport', '42101', '--dport', '123', ...T],
];

/** Exactly one non-empty line on stderr, naming the program. */
function assertOneLine(r: ExecResult, program: string, pattern: RegExp): void {
  const lines = outputLines(r.stderr);
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0] as string, new RegExp(`^${program}: `), `the line names the program: ${lines[0]}`);
  assert.match(lines[0] as string, pattern);
}

/** The binary file with its trailer CRC recomputed (to test one field alone). */
function withCrc(b: Buffer): Buffer {
  const out = Buffer.from(b);
  out.writeUInt32LE(crc32(out.subarray(0, out.length - TRAILER_CRC_BYTES)) >>> 0, out.length - TRAILER_CRC_BYTES);
  return out;
}

/** A JSON line for load, from a dumped entry with the given changes (no kernel-owned fields). */
function jsonLine(template: JsonFlow, change: Record<string, unknown>, sport: number): string {
  const { id: _id, ...rest } = template;
  return JSON.stringify({
    ...rest,
    orig: { ...template.orig, sport },
    reply: { ...template.reply, dport: sport },
    ...change,
  });
}

describe('ctmigratectl and ctmigrated from the command line', function () {
  this.timeout(60_000);
  const lab = new Lab();
  let source: NetNs;
  let dir: string;
  let binary: Buffer;
  let json: string;
  let tcpTemplate: JsonFlow;

  before(async () => {
    source = await lab.netns('cli-src');
    dir = await lab.tempDir('cli');
    for (const args of SOURCE_ENTRIES) await insert(source, args);
    await ctlOk(source, ['dump', '--output', join(dir, 'good.ctm')]);
    binary = await readFile(join(dir, 'good.ctm'));
    json = (await ctlOk(source, ['dump', '--format', 'json'])).stdout;
    const flows = await dumpJson(source);
    const t = flows.find((f) => f.orig.sport === 42001);
    assert.ok(t, 'lab: the TCP entry of the source');
    tcpTemplate = t;
  });

  after(() => lab.cleanup());

  describe('--help and --version', () => {
    let version: string;
    before(async () => {
      const pkg = JSON.parse(await readFile(join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string };
      version = pkg.version;
    });

    for (const [name, path] of [['ctmigratectl', CTMIGRATECTL], ['ctmigrated', CTMIGRATED]] as const) {
      for (const flag of ['--help', '-h']) {
        it(`${name} ${flag} prints usage and exits 0`, async () => {
          const r = await program(path, [flag]);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, new RegExp(`^Usage: ${name} `));
          assert.equal(r.stderr, '');
        });
      }
      for (const flag of ['--version', '-V']) {
        it(`${name} ${flag} prints "${name} VERSION" and exits 0`, async () => {
          const r = await program(path, [flag]);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, `${name} ${version}\n`);
        });
      }
    }

    for (const command of ['dump', 'load']) {
      it(`ctmigratectl ${command} --help prints the command's usage and exits 0`, async () => {
        const r = await program(CTMIGRATECTL, [command, '--help']);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`^Usage: ctmigratectl ${command}`));
      });
    }
  });

  describe('bad arguments: exit 2, one clear line on stderr', () => {
    const cases: ReadonlyArray<{ args: string[]; says: RegExp }> = [
      { args: ['dump', '--bogus'], says: /bogus/ },
      { args: ['dump', '--zone', '70000'], says: /--zone .*0 to 65535.*70000/ },
      { args: ['dump', '--zone', '-1'], says: /zone/ },
      { args: ['dump', '--mark', 'junk'], says: /--mark .*junk/ },
      { args: ['dump', '--mark', '0x100/0x0f'], says: /mask/ },
      { args: ['dump', '--format', 'xml'], says: /--format .*binary or json.*xml/ },
      { args: ['dump', '--address', '192.0.2.300'], says: /--address/ },
      { args: ['dump', 'extra'], says: /extra/ },
      { args: ['load', '--input'], says: /input/ },
      { args: ['load', 'some-file'], says: /some-file/ },
      { args: ['frobnicate'], says: /unknown command "frobnicate"/ },
    ];
    let ns: NetNs;
    before(async () => {
      ns = await lab.netns('cli-args');
      for (const args of TARGET_ENTRIES) await insert(ns, args);
    });

    for (const c of cases) {
      it(`ctmigratectl ${c.args.join(' ')}`, async () => {
        const before = await tableWithIds(ns);
        const r = await ctl(ns, c.args);
        assert.equal(r.code, 2, `exit status; stderr: ${r.stderr}`);
        assertOneLine(r, 'ctmigratectl', c.says);
        assert.equal(r.stdout, '');
        assert.deepEqual(await tableWithIds(ns), before);
      });
    }

    it('ctmigratectl without a command exits 2', async () => {
      const r = await ctl(ns, []);
      assert.equal(r.code, 2);
    });

    it('ctmigrated with an unknown option exits non-zero with one line', async () => {
      const r = await program(CTMIGRATED, ['--bogus']);
      assert.notEqual(r.code, 0);
      assert.equal(outputLines(r.stderr).length, 1, r.stderr);
    });
  });

  describe('bad input: exit 1, one line, the target table exactly as it was', () => {
    let target: NetNs;
    before(async () => {
      target = await lab.netns('cli-bad');
      await prepareTarget(target);
      for (const args of TARGET_ENTRIES) await insert(target, args);
    });

    /** Loads `data` into the pre-populated target through a file; checks the contract. */
    async function refused(name: string, data: Buffer | string, says: RegExp): Promise<void> {
      const file = join(dir, `${name}.in`);
      await writeFile(file, data);
      const before = await tableWithIds(target);
      assert.equal(before.length, TARGET_ENTRIES.length, 'lab: target pre-populated');
      const r = await ctl(target, ['load', '--input', file]);
      assert.equal(r.code, 1, `exit status; stdout: ${r.stdout} stderr: ${r.stderr}`);
      assertOneLine(r, 'ctmigratectl', says);
      assert.equal(r.stdout, '', 'no summary for a refused input');
      assert.deepEqual(await tableWithIds(target), before, 'the table changed');
    }

    it('lab: the untouched file loads (so the cases below fail for their damage alone)', async () => {
      const scratch = await lab.netns('cli-ok');
      const file = join(dir, 'good-copy.ctm');
      await writeFile(file, binary);
      const r = await ctl(scratch, ['load', '--input', file]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `created ${SOURCE_ENTRIES.length}, replaced 0, failed 0\n`);
      await scratch.destroy();
    });

    for (const cut of [1, 8, 12, 31, 32, 60, -9, -5, -1]) {
      it(`refuses a binary snapshot truncated at ${cut < 0 ? `${cut} from the end` : `byte ${cut}`}`, async () => {
        const at = cut < 0 ? binary.length + cut : cut;
        await refused(`cut${at}`, binary.subarray(0, at), /nothing loaded/);
      });
    }

    it('refuses a binary snapshot with one flipped byte inside an entry', async () => {
      const b = Buffer.from(binary);
      b[40] = (b[40] as number) ^ 0x01;
      await refused('flip-entry', b, /nothing loaded/);
    });

    it('refuses a binary snapshot with one flipped byte in its checksum', async () => {
      const b = Buffer.from(binary);
      b[b.length - 2] = (b[b.length - 2] as number) ^ 0x80;
      await refused('flip-crc', b, /nothing loaded/);
    });

    it('refuses an unknown format version, naming it (checksum intact)', async () => {
      const b = Buffer.from(binary);
      b.writeUInt16LE(2, H_VERSION);
      await refused('version2', withCrc(b), /version 2/);
    });

    it('refuses an unknown format version even with the old checksum', async () => {
      const b = Buffer.from(binary);
      b.writeUInt16LE(0x7fff, H_VERSION);
      await refused('version7fff', b, /nothing loaded/);
    });

    it('refuses random bytes behind a valid magic', async () => {
      await refused('magic-random', Buffer.concat([MAGIC, randomBytes(4096)]), /nothing loaded/);
    });

    it('refuses random bytes', async () => {
      const b = randomBytes(4096);
      b[0] = 0x01; // neither the binary magic nor JSON
      await refused('random', b, /nothing loaded/);
    });

    it('refuses an empty JSON object line', async () => {
      await refused('empty-object', '{}\n', /line 1.*nothing loaded/);
    });

    it('refuses a line that is not JSON', async () => {
      await refused('garbage', 'this is not a snapshot\n', /line 1.*nothing loaded/);
    });

    it('refuses a JSON line cut short, after good lines (all or nothing)', async () => {
      const lines = outputLines(json);
      await refused('json-cut', `${lines.join('\n')}\n${(lines[0] as string).slice(0, 40)}\n`, new RegExp(`line ${lines.length + 1}.*nothing loaded`));
    });

    it('refuses a JSON line with a bad IPv4 address, after good lines (all or nothing)', async () => {
      const bad = jsonLine(tcpTemplate, {}, 42999).replace('"192.0.2.50"', '"192.0.2.300"');
      const lines = outputLines(json);
      await refused('json-bad-v4', `${lines.join('\n')}\n${bad}\n`, /192\.0\.2\.300.*nothing loaded/);
    });

    it('refuses a JSON line with a bad IPv6 address', async () => {
      const v6 = outputLines(json).find((l) => l.includes('2001:db8:5::50')) as string;
      await refused('json-bad-v6', `${v6.replace('2001:db8:5::50', '2001:db8:5::g0')}\n`, /2001:db8:5::g0.*nothing loaded/);
    });

    it('refuses a file that does not exist, with one line', async () => {
      const before = await tableWithIds(target);
      const r = await ctl(target, ['load', '--input', join(dir, 'no-such-file')]);
      assert.equal(r.code, 1);
      assertOneLine(r, 'ctmigratectl', /no-such-file/);
      assert.deepEqual(await tableWithIds(target), before);
    });
  });

  describe('entries the kernel refuses', () => {
    it('reports each refused entry on its own line with the reason, creates the others, exits 1', async () => {
      const target = await lab.netns('cli-refuse');
      await prepareTarget(target);
      const input = [
        jsonLine(tcpTemplate, {}, 43001),
        jsonLine(tcpTemplate, { helper: 'nosuchhelper' }, 43002),
        jsonLine(
          tcpTemplate,
          {
            status: ['EXPECTED', 'SEEN_REPLY', 'ASSURED', 'CONFIRMED'],
            master: { family: 'ipv4', proto: 'tcp', protonum: 6, src: '192.0.2.99', dst: '198.51.100.99', sport: 43999, dport: 21 },
          },
          43003,
        ),
        jsonLine(tcpTemplate, { mark: 99 }, 43004),
      ].join('\n');
      const r = await ctl(target, ['load'], { input: `${input}\n` });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, 'created 2, replaced 0, failed 2\n');
      const lines = outputLines(r.stderr);
      assert.equal(lines.length, 2, r.stderr);
      assert.match(lines.find((l) => l.includes(':43002 ')) ?? '', /^failed: .*helper "nosuchhelper"/);
      assert.match(lines.find((l) => l.includes(':43003 ')) ?? '', /^failed: .*master/);
      const listed = normalize(await listExtended(target));
      assert.deepEqual(
        listed.map((l) => /sport=(\d+)/.exec(l)?.[1]),
        ['43001', '43004'],
        `target holds:\n${listed.join('\n')}`,
      );
    });

    it('reports labels the target cannot hold (no ct label rule there), counting each entry once', async () => {
      const target = await lab.netns('cli-nolabel');
      const input = [jsonLine(tcpTemplate, { labels: [3, 64] }, 43011), jsonLine(tcpTemplate, {}, 43012)].join('\n');
      const r = await ctl(target, ['load'], { input: `${input}\n` });
      assert.equal(r.code, 1, r.stderr);
      const lines = outputLines(r.stderr);
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0] as string, /^failed: .*:43011 .*label/);
      // Two entries in the input: each is created, replaced or failed, once.
      assert.equal(r.stdout, 'created 1, replaced 0, failed 1\n');
    });
  });

  describe('loading twice', () => {
    it('reports "replaced" for every entry on the second load and leaves the same table', async () => {
      const target = await lab.netns('cli-twice');
      const file = join(dir, 'twice.ctm');
      await writeFile(file, binary);
      const first = await ctl(target, ['load', '--input', file]);
      assert.equal(first.code, 0, first.stderr);
      assert.equal(first.stdout, `created ${SOURCE_ENTRIES.length}, replaced 0, failed 0\n`);
      const once = normalize(await listExtended(target));
      const second = await ctl(target, ['load', '--input', file]);
      assert.equal(second.code, 0, second.stderr);
      assert.equal(second.stdout, `created 0, replaced ${SOURCE_ENTRIES.length}, failed 0\n`);
      assert.deepEqual(normalize(await listExtended(target)), once);
    });
  });

  describe('dump --output', () => {
    it('writes the snapshot to the file and nothing to stdout', async () => {
      const file = join(dir, 'out.ctm');
      const r = await ctl(source, ['dump', '--output', file]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '');
      const written = await readFile(file);
      assert.deepEqual(written.subarray(0, MAGIC.length), MAGIC);
      assert.match(r.stderr, new RegExp(`dumped ${SOURCE_ENTRIES.length} entries`));
    });

    it('fails with one line and leaves no file when the directory does not exist', async () => {
      const missing = join(dir, 'no-such-dir');
      const r = await ctl(source, ['dump', '--output', join(missing, 'x.ctm')]);
      assert.equal(r.code, 1, r.stderr);
      assertOneLine(r, 'ctmigratectl', /no-such-dir/);
      assert.equal(r.stdout, '');
      assert.ok(!(await readdir(dir)).some((n) => n.startsWith('no-such-dir')));
    });

    it('fails with one line and leaves no partial file when the output cannot replace its target', async () => {
      const sub = join(dir, 'busy');
      await mkdir(sub);
      const occupied = join(sub, 'a-directory');
      await mkdir(occupied);
      const r = await ctl(source, ['dump', '--output', occupied]);
      assert.equal(r.code, 1, r.stderr);
      assertOneLine(r, 'ctmigratectl', /a-directory/);
      assert.deepEqual(await readdir(sub), ['a-directory'], 'a temporary file was left behind');
    });
  });
});
