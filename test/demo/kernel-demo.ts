/**
 * `npm run demo`: the kernel layer end to end in a throw-away lab.
 *
 * Two "hosts" (network namespaces) are built; the source gets conntrack
 * entries of every kind the reference CLI can make; `ctmigratectl dump`
 * writes the VM's entries to a snapshot file and `ctmigratectl load` creates
 * them on the destination. The demo then compares both tables the way an
 * operator would (`conntrack -L -o extended` and `-o save`) and removes
 * everything it built, on every exit path.
 */
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { Lab, NetNs } from '../integration/lab/netns';
import { cliRecipes } from '../integration/lab/entry-kinds';
import { count, diff, insert, snapshot } from '../integration/lab/conntrack-cli';

const CTL = join(__dirname, '..', '..', 'adapters', 'cli', 'ctmigratectl.js');

async function ctl(ns: NetNs, args: string[]): Promise<string> {
  const r = await ns.exec(process.execPath, [CTL, ...args]);
  if (r.code !== 0) throw new Error(`ctmigratectl ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return `${r.stdout}${r.stderr}`.trim();
}

async function main(): Promise<number> {
  if (process.getuid && process.getuid() !== 0) {
    process.stderr.write('demo: needs root (it creates network namespaces)\n');
    return 1;
  }
  const lab = new Lab();
  try {
    const say = (s: string): boolean => process.stdout.write(`${s}\n`);
    say('ctmigrate demo: carry conntrack entries from one host to another\n');
    const source = await lab.netns('source');
    const dest = await lab.netns('dest');
    await source.enableLabels();
    await dest.enableLabels();
    say(`hosts: ${source.name} (source), ${dest.name} (destination)`);

    let made = 0;
    for (const recipe of cliRecipes) {
      for (const args of recipe.inserts) {
        await insert(source, args);
        made++;
      }
    }
    say(`source: ${made} entries made with the conntrack CLI (${cliRecipes.length} kinds: TCP states, UDP, UDP-Lite,`);
    say('        ICMP/ICMPv6, SCTP, GRE, other protocols, IPv6, zones, marks, labels, SNAT/DNAT)');

    const dir = await lab.tempDir('demo');
    const file = join(dir, 'vm.ctm');
    say(`\n$ ctmigratectl dump --output ${file}`);
    say(await ctl(source, ['dump', '--output', file]));
    say(`  (${(await stat(file)).size} bytes)`);
    say(`\n$ ctmigratectl load --input ${file}     # on the destination`);
    say(await ctl(dest, ['load', '--input', file]));

    const a = await snapshot(source);
    const b = await snapshot(dest);
    const ext = diff(a.extended, b.extended);
    const save = diff(a.save, b.save);
    const same = ext.onlyA.length + ext.onlyB.length + save.onlyA.length + save.onlyB.length === 0;
    say(`\nsource has ${await count(source)} entries, destination has ${await count(dest)}`);
    if (same) {
      say('conntrack -L -o extended and -o save match line for line (apart from timeouts and ids)');
      return 0;
    }
    say('the tables differ:');
    for (const l of [...ext.onlyA, ...save.onlyA]) say(`  only on source: ${l}`);
    for (const l of [...ext.onlyB, ...save.onlyB]) say(`  only on destination: ${l}`);
    return 1;
  } finally {
    await lab.cleanup();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`demo: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
