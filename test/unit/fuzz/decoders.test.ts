// Every decoder that reads bytes from outside, fed arbitrary and mutated
// input (fast-check). Each must either return or refuse with its own error
// type: never another exception (a TypeError, a RangeError from a read past
// the end), never a hang (mocha's timeout), and never a partial effect on
// what it would feed.
//
// CI runs FUZZ_RUNS cases per property (default 200); `npm run fuzz` runs
// 20,000 each. Every run has one seed (FUZZ_SEED, else a fresh one) and
// prints it when a property fails, so `FUZZ_SEED=N npm run fuzz` replays it.
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { NetlinkFormatError } from '../../../adapters/conntrack/attributes';
import { FlowDecoder } from '../../../adapters/conntrack/flow-decoder';
import { DomainXmlError, readDomain } from '../../../adapters/libvirt/domain-xml';
import { XmlRefusedError } from '../../../adapters/libvirt/xml-reader';
import { FrameReader } from '../../../adapters/peer/frame-reader';
import { encodeRelayPreamble, RelayPreambleError, RelayPreambleReader } from '../../../adapters/peer/relay-preamble';
import { ManifestError, parseManifest } from '../../../plugin/checkpoint-manifest';
import { CodecError } from '../../../plugin/codec-error';
import { ConnectionTable, Scan } from '../../../plugin/connection-table';
import { applyConfigText, ConfigError, defaultConfig } from '../../../plugin/daemon-config';
import { decodeJsonLines } from '../../../plugin/flow-json';
import { FlowRecord } from '../../../plugin/flow-view';
import { decodePayload, DEFAULT_MAX_FRAME_BYTES, encodeFrameBytes, MessageKind, PeerProtocolError, PeerRole } from '../../../plugin/peer-protocol';
import { applyStaged, decodeSnapshot } from '../../../plugin/snapshot-decoder';
import { encodeTableToBuffer } from '../../../plugin/snapshot-encoder';
import { warmUpTable } from '../../../plugin/warm-up';

const RUNS = Number(process.env.FUZZ_RUNS ?? 200);
const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (process.pid << 16)) | 0;
fc.configureGlobal({ seed: SEED });
const ROOT = join(__dirname, '..', '..', '..', '..');

/** A seed, then a few edits: flip, overwrite, cut, insert, duplicate a span. The shapes real corruption takes. */
function mutated(seeds: readonly Uint8Array[]): fc.Arbitrary<Uint8Array> {
  const edit = fc.oneof(
    fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 16 }) }),
    fc.record({ op: fc.constant('repeat' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }),
  );
  return fc.tuple(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(edit, { minLength: 1, maxLength: 4 })).map(([i, edits]) => {
    let b = Buffer.from(seeds[i]);
    for (const e of edits) {
      const at = b.length === 0 ? 0 : e.at % b.length;
      if (e.op === 'flip' && b.length) b[at] ^= 1 << e.bit;
      else if (e.op === 'set' && b.length) b[at] = e.value;
      else if (e.op === 'cut') b = b.subarray(0, at);
      else if (e.op === 'insert') b = Buffer.concat([b.subarray(0, at), e.bytes, b.subarray(at)]);
      else if (e.op === 'repeat') b = Buffer.concat([b.subarray(0, at + e.len), b.subarray(at)]);
    }
    return new Uint8Array(b);
  });
}

function input(seeds: readonly Uint8Array[]): fc.Arbitrary<Uint8Array> {
  return fc.oneof(mutated(seeds), fc.uint8Array({ maxLength: 512 }));
}

/** Runs f; passes when it returns or throws one of the allowed error types. */
function refusesOnly(f: () => unknown, ...allowed: (abstract new (...a: never[]) => Error)[]): void {
  try {
    f();
  } catch (e) {
    if (allowed.some((t) => e instanceof t)) return;
    throw e;
  }
}

const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

describe('fuzz: every decoder refuses bad input with its own error, never anything else', function () {
  afterEach(function () {
    if (this.currentTest?.state === 'failed') process.stderr.write(`      fuzz seed ${SEED}: replay with FUZZ_SEED=${SEED}\n`);
  });

  this.timeout(120_000);

  it('binary snapshots (files, vmstate blobs, frames): decoded or refused, and a refused one changes no table', () => {
    const seeds = [
      encodeTableToBuffer(warmUpTable(20), { scan: Scan.Snapshot, from: 0, to: 1 << 30 }).bytes,
      readFileSync(join(ROOT, 'test', 'fixtures', 'snapshot', 'v1-snapshot.ctsnap')),
      readFileSync(join(ROOT, 'test', 'fixtures', 'snapshot', 'v1-delta.ctsnap')),
    ];
    const target = warmUpTable(5);
    const before = target.version;
    // Mutations with the checksum sealed again, so the body parser sees them and not just the CRC check.
    const resealed = mutated(seeds).map((b) => {
      if (b.length >= 4) Buffer.from(b.buffer, b.byteOffset, b.length).writeUInt32LE(crc32(b.subarray(0, b.length - 4)) >>> 0, b.length - 4);
      return b;
    });
    fc.assert(
      fc.property(fc.oneof(input(seeds), resealed), (bytes) => {
        const staging = ConnectionTable.create({ capacity: 256, extCapacity: 256 });
        let decoded: ReturnType<typeof decodeSnapshot> | null = null;
        refusesOnly(() => (decoded = decodeSnapshot(bytes, { maxEntries: 256, staging })), CodecError);
        if (decoded === null) assert.equal(target.version, before, 'a refused input touched the target');
      }),
      { numRuns: RUNS },
    );
    // One that decodes applies whole.
    const good = decodeSnapshot(seeds[0], { maxEntries: 256 });
    const t = ConnectionTable.create({ capacity: 256, extCapacity: 256 });
    assert.equal(applyStaged(good.table, t).upserted, 20);
  });

  it('JSON lines (ctmigratectl load): decoded or refused with FlowJsonError', async () => {
    const seed = Buffer.from(
      [
        '{"family":"ipv4","proto":"tcp","protonum":6,"state":"ESTABLISHED","timeout":600,"orig":{"src":"192.0.2.10","dst":"203.0.113.1","sport":40000,"dport":443},"reply":{"src":"203.0.113.1","dst":"192.0.2.10","sport":443,"dport":40000},"status":["SEEN_REPLY","ASSURED","CONFIRMED"],"mark":7,"zone":3}',
        '{"family":"ipv6","proto":"udp","protonum":17,"timeout":30,"orig":{"src":"2001:db8::1","dst":"2001:db8::2","sport":53,"dport":5353},"reply":{"src":"2001:db8::2","dst":"2001:db8::1","sport":5353,"dport":53},"status":["CONFIRMED"]}',
      ].join('\n'),
    );
    await fc.assert(
      fc.asyncProperty(input([seed]), async (bytes) => {
        try {
          await decodeJsonLines(bytes, { maxEntries: 64 });
        } catch (e) {
          if (!(e instanceof CodecError)) throw e;
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('peer frames: every frame reads or the stream is refused with PeerProtocolError', () => {
    const vm = '6f1c2a3e-9b4d-4c5e-8f70-112233445566';
    const seeds = [
      encodeFrameBytes({ kind: MessageKind.Hello, protocol: 1, role: PeerRole.Destination, maxFrameBytes: DEFAULT_MAX_FRAME_BYTES, hostId: 'b' }),
      encodeFrameBytes({ kind: MessageKind.Start, sessionId: 's', vm, addresses: ['192.0.2.10', '2001:db8::10'], zone: 3, mark: { value: 1, mask: 0xff } }),
      encodeFrameBytes({ kind: MessageKind.Offer, sessionId: 's', vm, addresses: ['192.0.2.10'], snapshotVersion: 9, announcedEntries: 2, resumeFrom: null }),
      encodeFrameBytes({ kind: MessageKind.SnapshotChunk, seq: 0, last: true, bytes: Buffer.from('entries') }),
      encodeFrameBytes({ kind: MessageKind.Final, from: 1, to: 2, digest: Buffer.alloc(32, 7), bytes: Buffer.from('delta') }),
      encodeFrameBytes({ kind: MessageKind.WhoHas, queryId: 3, vm }),
      encodeFrameBytes({ kind: MessageKind.Ack, bytes: 10, received: 2, committed: 1 }),
    ];
    fc.assert(
      fc.property(input([Buffer.concat(seeds), ...seeds]), fc.integer({ min: 1, max: 64 }), (bytes, split) => {
        const reader = new FrameReader(64 * 1024);
        refusesOnly(() => {
          for (let at = 0; at < bytes.length; at += split) for (const f of reader.push(bytes.subarray(at, at + split))) decodePayload(f.kind, f.payload);
        }, PeerProtocolError);
      }),
      { numRuns: RUNS },
    );
  });

  it('netlink conntrack messages (the kernel recorded on 6.18): decoded or refused with NetlinkFormatError', () => {
    const seeds = readFileSync(join(ROOT, 'test', 'fixtures', 'conntrack', 'dump-6.18.hex'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => Buffer.from(l.trim(), 'hex'));
    const d = new FlowDecoder();
    const rec = new FlowRecord();
    fc.assert(
      fc.property(input(seeds), (bytes) => refusesOnly(() => d.decode(bytes, 0, bytes.length, rec), NetlinkFormatError)),
      { numRuns: RUNS },
    );
  });

  it('domain XML from the hook: read or refused with XmlRefusedError or DomainXmlError', () => {
    const seed = Buffer.from(`<domain type='kvm'><name>web1</name><uuid>6f1c2a3e-9b4d-4c5e-8f70-112233445566</uuid>
<metadata><ctmigrate:vm xmlns:ctmigrate="urn:ctmigrate:vm:1"><ctmigrate:address>192.0.2.10</ctmigrate:address><ctmigrate:zone>3</ctmigrate:zone><ctmigrate:mark>0x10/0xff</ctmigrate:mark><ctmigrate:require/></ctmigrate:vm></metadata>
<devices><interface type='bridge'><ip address='2001:db8::10'/><filterref filter='clean-traffic'><parameter name='IP' value='192.0.2.11'/></filterref></interface></devices>
<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-object'/><qemu:arg value='dbus-vmstate,id=ctmigrate,addr=unix:path=/run/x'/></qemu:commandline></domain>`);
    fc.assert(
      fc.property(input([seed]), (bytes) => refusesOnly(() => readDomain(text(bytes)), XmlRefusedError, DomainXmlError)),
      { numRuns: RUNS },
    );
  });

  it('the config file: applied or refused with ConfigError', () => {
    const seed = Buffer.from('# ctmigrate\nlisten = 198.51.100.1:7471\npeer = 198.51.100.2:7471\npeer = [2001:db8::2]:7471\npsk-file = /etc/ctmigrate/psk\nready-when = fraction:0.9\nblock-timeout = 30\ntable-capacity = 100000\nmetrics = 127.0.0.1:9471\n');
    fc.assert(
      fc.property(input([seed]), (bytes) => refusesOnly(() => applyConfigText(defaultConfig(), text(bytes), 'fuzz.conf'), ConfigError)),
      { numRuns: RUNS },
    );
  });

  it('the relay preamble: a target or RelayPreambleError', () => {
    const seeds = [encodeRelayPreamble({ host: '198.51.100.2', port: 7471 }), encodeRelayPreamble({ host: '2001:db8::2', port: 7471 })];
    fc.assert(
      fc.property(input(seeds), fc.integer({ min: 1, max: 32 }), (bytes, split) => {
        const r = new RelayPreambleReader();
        refusesOnly(() => {
          for (let at = 0; at < bytes.length; at += split) if (r.push(Buffer.from(bytes.subarray(at, at + split))) !== null) break;
        }, RelayPreambleError);
      }),
      { numRuns: RUNS },
    );
  });

  it('a checkpoint\'s ctmigrate.json (criu-action, a peer\'s ContainerState): a manifest or ManifestError', () => {
    const seed = Buffer.from(
      '{"format":"ctmigrate-checkpoint/1","container":"web1","addresses":["192.0.2.10","2001:db8::10"],"entries":80,"bytes":5241,"sha256":"' +
        'ab'.repeat(32) +
        '","host":"host-a","packedAt":"2026-12-04T18:00:00.000Z"}\n',
    );
    fc.assert(
      fc.property(input([seed]), (bytes) => refusesOnly(() => parseManifest(Buffer.from(bytes).toString('utf8')), ManifestError)),
      { numRuns: RUNS },
    );
  });
});
