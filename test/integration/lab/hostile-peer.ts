// Hostile peers of a running ctmigrated, run inside a lab namespace
// (`node hostile-peer.js CMD ...`). Each probe prints one line
// "result {json}" saying what the daemon did to it, then exits.
//
//   no-key HOST PORT                 plain TCP, a Hello frame in clear text
//   wrong-key HOST PORT KEYFILE      TLS with a key that is not the cluster's
//   garbage HOST PORT KEYFILE        the right key, then random bytes
//   oversize HOST PORT KEYFILE       the right key, a valid Hello, then a frame
//                                    header announcing 64 MiB
//   idle HOST PORT N HOLD_MS         N TCP sockets that never speak; prints
//                                    "opened N" at once, the result after HOLD_MS
//   fake-source ADDR PORT KEYFILE FOREIGN...
//       a source that authenticates with the right key and answers a Start
//       with an Offer and a snapshot holding one entry of the VM plus one
//       entry for each FOREIGN address; prints "offered N", then holds the
//       connection until stdin closes.
//   start-flood HOST PORT KEYFILE VM MIB [LOCAL_ADDR]
//       the right key, a Hello and a Start for VM (from LOCAL_ADDR when
//       given), then MIB MiB of WhoHas frames as fast as the socket takes
//       them; the result says whether the daemon answered with an Error
//       (and its text) and how much it took
//   crafted-source ADDR PORT KEYFILE
//       like fake-source, but every entry names the VM's address somewhere:
//       one entry that is the VM's, then each bad shape (the VM only in the
//       reply tuple, zones per direction other than the VM's, a foreign
//       master, an unknown helper), in the snapshot and again as a delta
//       (Changes); prints "offered SNAPSHOT+DELTA".

import { randomBytes } from 'node:crypto';
import { connect as tcpConnect, Socket } from 'node:net';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import { clientTlsOptions, loadCredentials, PeerCredentials } from '../../../adapters/peer/tls-credentials';
import { TlsPeerPort } from '../../../adapters/peer/tls-peer-port';
import { Scan } from '../../../plugin/connection-table';
import { decodeJsonLines } from '../../../plugin/flow-json';
import { DEFAULT_MAX_FRAME_BYTES, encodeFrameBytes, MessageKind, PeerRole, PROTOCOL_VERSION, StartMessage } from '../../../plugin/peer-protocol';
import { PeerConnection } from '../../../plugin/ports/peer-port';
import { encodeTableToBuffer } from '../../../plugin/snapshot-encoder';

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function fail(message: string): never {
  process.stderr.write(`hostile-peer: ${message}\n`);
  process.exit(2);
}

function port(s: string | undefined): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(`bad port "${s}"`);
  return n;
}

/** Resolves when the socket is closed by the other side (or after ms: false). */
function closedWithin(s: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

function hello(): Buffer {
  return encodeFrameBytes({ kind: MessageKind.Hello, protocol: PROTOCOL_VERSION, role: PeerRole.Destination, maxFrameBytes: DEFAULT_MAX_FRAME_BYTES, hostId: 'hostile' });
}

async function noKey(host: string, p: number): Promise<void> {
  const s = tcpConnect(p, host);
  let received = 0;
  s.on('data', (d: Buffer) => (received += d.length));
  s.on('error', () => undefined);
  await new Promise<void>((r) => s.once('connect', () => r()));
  s.write(hello());
  s.write(randomBytes(512));
  const closed = await closedWithin(s, 15_000);
  say(`result ${JSON.stringify({ closed, received })}`);
}

/** A TLS client; resolves with whether the handshake passed and the socket. */
function tlsClient(host: string, p: number, creds: PeerCredentials): Promise<{ ok: boolean; error: string; socket: TLSSocket }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host, port: p, ...clientTlsOptions(creds) });
    socket.once('secureConnect', () => resolve({ ok: true, error: '', socket }));
    socket.once('error', (e) => resolve({ ok: false, error: e.message, socket }));
  });
}

async function wrongKey(host: string, p: number, keyFile: string): Promise<void> {
  const r = await tlsClient(host, p, loadCredentials({ pskFile: keyFile }));
  // TLS 1.3: the client may think the handshake passed before the server's verdict arrives.
  let received = 0;
  r.socket.on('data', (d: Buffer) => (received += d.length));
  r.socket.on('error', () => undefined);
  if (r.ok) r.socket.write(hello());
  const closed = r.ok ? await closedWithin(r.socket, 15_000) : true;
  say(`result ${JSON.stringify({ handshake: r.ok, error: r.error, closed, received })}`);
}

async function rightKeyThen(host: string, p: number, keyFile: string, send: (s: TLSSocket) => void): Promise<void> {
  const r = await tlsClient(host, p, loadCredentials({ pskFile: keyFile }));
  if (!r.ok) fail(`the right key was refused: ${r.error}`);
  r.socket.on('error', () => undefined);
  r.socket.on('data', () => undefined);
  send(r.socket);
  const closed = await closedWithin(r.socket, 15_000);
  say(`result ${JSON.stringify({ handshake: true, closed })}`);
}

async function idle(host: string, p: number, n: number, holdMs: number): Promise<void> {
  const sockets: Socket[] = [];
  let closedByServer = 0;
  for (let i = 0; i < n; i++) {
    const s = tcpConnect(p, host);
    s.on('error', () => undefined);
    s.on('close', () => (closedByServer += 1));
    sockets.push(s);
  }
  await Promise.all(sockets.map((s) => new Promise<void>((r) => (s.connecting ? s.once('connect', () => r()).once('error', () => r()) : r()))));
  say(`opened ${n}`);
  await new Promise((r) => setTimeout(r, holdMs));
  const open = sockets.filter((s) => !s.destroyed).length;
  say(`result ${JSON.stringify({ opened: n, closedByServer, stillOpen: open })}`);
  for (const s of sockets) s.destroy();
}

function entry(src: string, dst: string, sport: number, dport: number): string {
  return JSON.stringify({
    family: 'ipv4',
    proto: 'tcp',
    protonum: 6,
    state: 'ESTABLISHED',
    timeout: 600,
    orig: { src, dst, sport, dport },
    reply: { src: dst, dst: src, sport: dport, dport: sport },
    status: ['SEEN_REPLY', 'ASSURED', 'CONFIRMED'],
    mark: 0,
  });
}

/**
 * A source that authenticates with the right key and answers every Start
 * with `answer`; prints "ready PORT", and holds its connections until stdin
 * closes.
 */
async function serveAsSource(addr: string, p: number, keyFile: string, hostId: string, answer: (conn: PeerConnection, start: StartMessage) => Promise<void>): Promise<void> {
  const peers = new TlsPeerPort({ credentials: loadCredentials({ pskFile: keyFile }), hostId });
  const conns: PeerConnection[] = [];
  await peers.listen({ host: addr, port: p }, (conn) => {
    conns.push(conn);
    void (async () => {
      const start = await conn.receive(10_000);
      if (start.kind !== MessageKind.Start) return conn.destroy();
      await answer(conn, start);
    })().catch((e: Error) => say(`error ${e.message}`));
  });
  say(`ready ${p}`);
  process.stdin.on('end', () => {
    for (const c of conns) c.destroy();
    process.exit(0);
  });
}

function fakeSource(addr: string, p: number, keyFile: string, foreign: string[]): Promise<void> {
  return serveAsSource(addr, p, keyFile, 'fake-source', async (conn, start) => {
    const vmAddr = start.addresses[0] as string;
    // One entry of the VM, then one per foreign address, each a flow the VM never had.
    const lines = [entry('203.0.113.100', vmAddr, 41000, 7000), ...foreign.map((f, i) => entry('203.0.113.100', f, 42000 + i, 22))];
    const { table } = await decodeJsonLines(lines.join('\n'), { maxEntries: 64 });
    const { bytes, summary } = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: table.version });
    await conn.send({ kind: MessageKind.Offer, sessionId: start.sessionId, vm: start.vm, addresses: start.addresses, zone: start.zone, mark: start.mark, snapshotVersion: table.version, announcedEntries: summary.entries, resumeFrom: null });
    await conn.send({ kind: MessageKind.SnapshotChunk, seq: 0, last: true, bytes });
    say(`offered ${summary.entries}`);
  });
}

/** One JSON line of flow-json, as a source daemon's codec would carry it. */
function flowLine(o: Record<string, unknown>): string {
  return JSON.stringify({ family: 'ipv4', mark: 0, ...o });
}

/** The VM's own entry and the bad shapes, with source ports from `base` so a delta's entries are new ones. */
function craftedLines(vmAddr: string, base: number): string[] {
  const tcp = { proto: 'tcp', protonum: 6, state: 'ESTABLISHED', timeout: 600, status: ['SEEN_REPLY', 'ASSURED', 'CONFIRMED'] };
  const mine = (sport: number) => ({ src: vmAddr, dst: '203.0.113.40', sport, dport: 443 });
  const back = (sport: number) => ({ src: '203.0.113.40', dst: vmAddr, sport: 443, dport: sport });
  return [
    // The VM's own: accepted.
    flowLine({ ...tcp, orig: mine(base), reply: back(base) }),
    // The VM only as reply source, no NAT status: a foreign flow.
    flowLine({ proto: 'udp', protonum: 17, timeout: 60, status: ['SEEN_REPLY', 'CONFIRMED'], orig: { src: '198.51.100.66', dst: '203.0.113.5', sport: base + 1, dport: 3306 }, reply: { src: vmAddr, dst: '198.51.100.66', sport: 3306, dport: base + 1 } }),
    // Zone 7 in each direction (no entry zone) for a VM of zone 0.
    flowLine({ ...tcp, orig: { ...mine(base + 2), zone: 7 }, reply: { ...back(base + 2), zone: 7 } }),
    // A related entry of the VM whose master is someone else's flow.
    flowLine({ ...tcp, status: ['SEEN_REPLY', 'ASSURED', 'CONFIRMED', 'EXPECTED'], orig: mine(base + 3), reply: back(base + 3), master: { family: 'ipv4', proto: 'tcp', protonum: 6, src: '198.51.100.90', dst: '203.0.113.91', sport: 40000, dport: 21 } }),
    // A helper the kernel has no such name for.
    flowLine({ ...tcp, orig: mine(base + 4), reply: back(base + 4), helper: 'evil' }),
  ];
}

function craftedSource(addr: string, p: number, keyFile: string): Promise<void> {
  return serveAsSource(addr, p, keyFile, 'crafted-source', async (conn, start) => {
    const vmAddr = start.addresses[0] as string;
    const snapshot = craftedLines(vmAddr, 41000);
    const delta = craftedLines(vmAddr, 42000);
    // One table: the snapshot is versions 1..v0, the delta (v0, v1].
    const { table } = await decodeJsonLines([...snapshot, ...delta].join('\n'), { maxEntries: 64 });
    const v0 = snapshot.length;
    const snap = encodeTableToBuffer(table, { scan: Scan.Snapshot, from: 0, to: v0 });
    await conn.send({ kind: MessageKind.Offer, sessionId: start.sessionId, vm: start.vm, addresses: start.addresses, zone: start.zone, mark: start.mark, snapshotVersion: v0, announcedEntries: snap.summary.entries, resumeFrom: null });
    await conn.send({ kind: MessageKind.SnapshotChunk, seq: 0, last: true, bytes: snap.bytes });
    const changes = encodeTableToBuffer(table, { scan: Scan.Delta, from: v0, to: table.version });
    await conn.send({ kind: MessageKind.Changes, from: v0, to: table.version, bytes: changes.bytes });
    say(`offered ${snap.summary.entries}+${changes.summary.entries}`);
  });
}

async function startFlood(host: string, p: number, keyFile: string, vm: string, mib: number, localAddress?: string): Promise<void> {
  const creds = loadCredentials({ pskFile: keyFile });
  const raw = tcpConnect({ port: p, host, ...(localAddress ? { localAddress } : {}) });
  raw.on('error', () => undefined);
  const socket = tlsConnect({ socket: raw, host, ...clientTlsOptions(creds) });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()).once('error', () => resolve()));
  let errorText = '';
  let got = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    got = Buffer.concat([got, d]);
    // Frames: u32 length, u8 kind, payload. An Error frame is enough to know the verdict.
    while (got.length >= 5 && got.length >= 5 + got.readUInt32BE(0)) {
      const len = got.readUInt32BE(0);
      if (got[4] === MessageKind.Error) errorText = got.subarray(5, 5 + len).toString('utf8').replace(/[^\x20-\x7e]/g, '');
      got = got.subarray(5 + len);
    }
  });
  let closed = false;
  socket.once('close', () => (closed = true));
  socket.write(hello());
  socket.write(encodeFrameBytes({ kind: MessageKind.Start, sessionId: 'flood', vm, addresses: ['192.0.2.10'] }));
  const frame = encodeFrameBytes({ kind: MessageKind.WhoHas, queryId: 1, vm });
  const batch = Buffer.concat(Array.from({ length: Math.ceil(65536 / frame.length) }, () => frame));
  let written = 0;
  const deadline = Date.now() + 20_000;
  while (written < mib * 1024 * 1024 && !closed && Date.now() < deadline) {
    written += batch.length;
    if (!socket.write(batch)) await new Promise<void>((r) => { const t = setTimeout(r, 250); socket.once('drain', () => { clearTimeout(t); r(); }); });
  }
  await new Promise((r) => setTimeout(r, 500));
  say(`result ${JSON.stringify({ closed, errorText, writtenMiB: Math.round(written / 1048576) })}`);
  socket.destroy();
}

async function main(argv: readonly string[]): Promise<void> {
  const [cmd, a, b, c, d] = argv;
  switch (cmd) {
    case 'no-key':
      return noKey(a ?? fail('HOST'), port(b));
    case 'wrong-key':
      return wrongKey(a ?? fail('HOST'), port(b), c ?? fail('KEYFILE'));
    case 'garbage':
      return rightKeyThen(a ?? fail('HOST'), port(b), c ?? fail('KEYFILE'), (s) => s.write(randomBytes(4096)));
    case 'oversize':
      return rightKeyThen(a ?? fail('HOST'), port(b), c ?? fail('KEYFILE'), (s) => {
        s.write(hello());
        const header = Buffer.alloc(5);
        header.writeUInt32BE(64 << 20, 0);
        header[4] = MessageKind.Start;
        s.write(header);
        s.write(randomBytes(256 * 1024));
      });
    case 'idle':
      return idle(a ?? fail('HOST'), port(b), Number(c ?? fail('N')), Number(d ?? fail('HOLD_MS')));
    case 'fake-source':
      return fakeSource(a ?? fail('ADDR'), port(b), c ?? fail('KEYFILE'), argv.slice(4));
    case 'start-flood':
      return startFlood(a ?? fail('HOST'), port(b), c ?? fail('KEYFILE'), d ?? fail('VM'), Number(argv[5] ?? fail('MIB')), argv[6]);
    case 'crafted-source':
      return craftedSource(a ?? fail('ADDR'), port(b), c ?? fail('KEYFILE'));
    default:
      fail(`unknown command "${cmd ?? ''}"`);
  }
}

process.stdin.resume();
main(process.argv.slice(2)).then(
  () => {
    if (process.argv[2] !== 'fake-source' && process.argv[2] !== 'crafted-source') process.exit(0);
  },
  (e: Error) => fail(e.message),
);
